"""Stores: the embedded default (a folder) and remote/alternative backends, chosen by the db string."""

from __future__ import annotations

import os

from lookalike.store.base import (
    DamagedIndexError,
    IndexWriteError,
    ReadOnlyIndexError,
    RepairReport,
    Store,
    StoreError,
)


def _text(db: str | os.PathLike[str]) -> str:
    text = os.fspath(db)
    if text.startswith("milvus:/") and not text.startswith("milvus://"):
        text = "milvus://" + text[len("milvus:/") :]  # pathlib.Path collapsed the double slash
    return text


def is_milvus_uri(db: str | os.PathLike[str]) -> bool:
    """``milvus://host:port/collection`` or a Milvus Lite ``.db`` file."""
    text = _text(db)
    if text.startswith(("milvus://", "milvus-lite:")) or text.endswith(".milvus.db"):
        return True
    return text.endswith(".db") and os.path.isfile(text)  # embedded indexes are folders, never files


def open_store(
    db: str | os.PathLike[str],
    *,
    index_kind: str | None = None,
    create: bool = True,
    read_only: bool | None = None,
    repair: bool = False,
) -> Store:
    """Open the store a ``--db`` value names: a folder (embedded), ``milvus://...`` or a Milvus Lite ``.db``.

    An existing ``.db`` *file* is Milvus Lite (embedded indexes are folders). To create a new Milvus
    Lite file, name it ``*.milvus.db`` or write ``milvus-lite:PATH``; a new bare ``x.db`` stays an
    embedded folder, as before. ``read_only`` and ``repair`` apply to the embedded store (see
    :class:`~lookalike.store.local.LocalStore`); Milvus manages its own files.
    """
    text = _text(db)
    if is_milvus_uri(text):
        from lookalike.store.milvus import MilvusStore

        if index_kind not in (None, "auto"):
            raise StoreError(
                "an index kind applies to the embedded store only; Milvus builds its own index",
                parameters=("index_kind",),
            )
        return MilvusStore.open(text, create=create)
    from lookalike.store.local import LocalStore

    return LocalStore(text, index_kind=index_kind, create=create, read_only=read_only, repair=repair)


__all__ = [
    "DamagedIndexError",
    "IndexWriteError",
    "ReadOnlyIndexError",
    "RepairReport",
    "Store",
    "StoreError",
    "is_milvus_uri",
    "open_store",
]

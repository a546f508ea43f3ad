"""The Python API: ``Index.open(db)``, ``.add(paths)``, ``.search(image, k)``.

The faces (CLI, HTTP) are thin layers over this class. It ties a :class:`~lookalike.store.base.Store`
to the model recorded in it, and refuses to mix vectors of different models.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, open_rgb
from lookalike.ingest import IngestReport, Progress, ingest
from lookalike.models.base import Embedder
from lookalike.models.registry import DEFAULT_MODEL, create_model
from lookalike.search.matching import FIXED_NO_MATCH_BELOW, fixed_no_match
from lookalike.search.results import Match, QueryResult
from lookalike.store import open_store
from lookalike.store.base import ItemRecord, ModelMismatchError, Store

QueryInput = str | os.PathLike[str] | Image.Image | bytes | int


class Index:
    """A searchable collection of images, stored in a folder (``db``)."""

    def __init__(self, store: Store, model: str | Embedder | None = None) -> None:
        self.store = store
        identity = store.model_identity
        if isinstance(model, Embedder):
            self._model: Embedder | None = model
            self.model_name = model.spec.name
        else:
            self._model = None
            self.model_name = model or (str(identity["name"]) if identity else DEFAULT_MODEL)
        if identity is not None and identity.get("name") != self.model_name:
            raise ModelMismatchError(
                f"this index was built with model {identity.get('name')!r}, not {self.model_name!r}; "
                f"vectors of different models cannot be mixed. Use --model {identity.get('name')} or a new --db."
            )
        if self._model is not None:
            self._check_identity(self._model)
        self._model_lock = threading.Lock()
        self.no_match_below = FIXED_NO_MATCH_BELOW

    @classmethod
    def open(
        cls,
        db: str | os.PathLike[str],
        *,
        model: str | Embedder | None = None,
        create: bool = True,
        index_kind: str | None = None,
    ) -> Index:
        """Open (or create) the index at ``db``. ``model`` defaults to the one that built it.

        ``db`` is a folder (the embedded store), a Milvus Lite ``.db`` file or ``milvus://HOST:PORT/NAME``.
        ``index_kind`` (``auto``, ``flat``, ``hnsw32``, ``ivf4096,sq8`` ...) is remembered by the
        embedded store; None keeps the recorded one.
        """
        return cls(open_store(db, index_kind=index_kind, create=create), model)

    # -- model ------------------------------------------------------------------------------------
    @property
    def model(self) -> Embedder:
        """The embedder, loaded on first use (so `info` and metadata calls stay instant)."""
        with self._model_lock:
            if self._model is None:
                model = create_model(self.model_name)
                self._check_identity(model)
                self._model = model
            return self._model

    def _check_identity(self, model: Embedder) -> None:
        identity = self.store.model_identity
        want = model.spec.identity()
        if identity is None:
            self.store.set_model_identity(want)
        elif identity != want:
            self.store.set_model_identity(want)  # raises ModelMismatchError with the differences

    # -- writing ----------------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        remove_missing: bool = True,
        ray: str | None = None,
    ) -> IngestReport:
        """Index files and folders (recursively), incrementally. Returns what was done and skipped.

        ``ray`` (a Ray address, ``auto`` or ``local``) embeds on a Ray cluster instead of this process;
        ``workers`` is then the number of Ray actors.
        """
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        if ray is not None:
            from lookalike.distributed.ray_ingest import ingest_ray

            return ingest_ray(
                self.store,
                self.model,
                list(paths),
                address=ray,
                workers=workers,
                progress=progress,
                max_pixels=max_pixels,
                remove_missing=remove_missing,
            )
        return ingest(
            self.store,
            self.model,
            list(paths),
            progress=progress,
            workers=workers,
            max_pixels=max_pixels,
            remove_missing=remove_missing,
        )

    def remove(self, ids: Sequence[int]) -> int:
        """Drop items from the index (the files are left alone)."""
        return self.store.remove(ids)

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.store)

    def item(self, item_id: int) -> ItemRecord | None:
        return self.store.get(item_id)

    def embed(self, images: Sequence[QueryInput]) -> np.ndarray:
        """Vectors for query images (paths, bytes or PIL images) with this index's model."""
        model = self.model
        pictures = [open_rgb(im, draft_size=model.spec.input_size) for im in images]  # type: ignore[arg-type]
        return model.embed(pictures)

    def search(self, query: QueryInput, k: int = 4) -> QueryResult:
        """The k most similar indexed images to one query (a path, bytes, a PIL image or an item id)."""
        return self.search_many([query], k)[0]

    def similar(self, item_id: int, k: int = 4) -> QueryResult:
        """ "More like this" for an indexed item: its stored vector, itself excluded."""
        return self.search_many([item_id], k)[0]

    def search_many(self, queries: Sequence[QueryInput], k: int = 4) -> list[QueryResult]:
        """Search several queries with one model load and one batched matrix product.

        An ``int`` is an item id; a path that is indexed and unchanged uses its stored vector (and is
        left out of its own results). A query that cannot be read gets ``error`` set, not an exception.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        labels: list[str] = []
        vectors: list[np.ndarray | None] = [None] * len(queries)
        excludes: list[list[int]] = [[] for _ in queries]
        errors: dict[int, str] = {}
        to_embed: list[tuple[int, QueryInput]] = []
        for i, query in enumerate(queries):
            labels.append(_label(query))
            item = self._indexed_item(query)
            if item is not None:
                vectors[i] = self.store.vectors([item.id])[0]
                excludes[i] = [item.id]
            elif isinstance(query, int):
                errors[i] = f"no item with id {query}"
            else:
                to_embed.append((i, query))
        model = self.model if to_embed else None
        pictures: list[tuple[int, Image.Image]] = []
        for i, query in to_embed:
            try:
                pictures.append((i, open_rgb(query, draft_size=model.spec.input_size)))  # type: ignore[union-attr, arg-type]
            except ImageLoadError as exc:
                errors[i] = str(exc)
        if pictures:
            embedded = model.embed([p for _, p in pictures])  # type: ignore[union-attr]
            for (i, _), vec in zip(pictures, embedded, strict=True):
                vectors[i] = vec
        ready = [i for i, v in enumerate(vectors) if v is not None]
        hits_by_query: dict[int, list] = {}
        if ready:
            # One batched product per distinct exclude set is plenty: excludes are per-query single ids.
            for i, hits in zip(
                ready,
                self._search_vectors(np.stack([vectors[i] for i in ready]), k, [excludes[i] for i in ready]),
                strict=True,
            ):
                hits_by_query[i] = hits
        out = []
        for i in range(len(queries)):
            if i in errors:
                out.append(QueryResult(labels[i], [], True, error=errors[i]))
                continue
            matches = hits_by_query.get(i, [])
            out.append(QueryResult(labels[i], matches, fixed_no_match([m.score for m in matches], self.no_match_below)))
        return out

    def _search_vectors(self, vectors: np.ndarray, k: int, excludes: list[list[int]]) -> list[list[Match]]:
        exclude_all = sorted({i for ex in excludes for i in ex})
        raw = self.store.search(vectors, k + len(exclude_all))
        out = []
        for hits, exclude in zip(raw, excludes, strict=True):
            kept = [h for h in hits if h.id not in exclude][:k]
            matches = []
            for hit in kept:
                rec = self.store.get(hit.id)
                if rec is not None:
                    matches.append(Match(hit.id, rec.path, hit.score, rec.width, rec.height))
            out.append(matches)
        return out

    def _indexed_item(self, query: QueryInput) -> ItemRecord | None:
        if isinstance(query, bool):
            return None
        if isinstance(query, int):
            return self.store.get(query)
        if isinstance(query, str | os.PathLike):
            path = os.path.abspath(os.fspath(query))
            rec = self.store.get_by_path(path)
            if rec is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                if st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns:
                    return rec
        return None

    def info(self) -> dict[str, object]:
        return self.store.info()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label(query: QueryInput) -> str:
    if isinstance(query, int) and not isinstance(query, bool):
        return f"id:{query}"
    if isinstance(query, str | os.PathLike):
        return str(Path(query))
    if isinstance(query, bytes | bytearray):
        return "<bytes>"
    return "<image>"

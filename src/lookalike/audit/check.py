"""New images against a library: which of these files are already there, before they are added.

A file is an **exact** copy when an indexed item has the same bytes (sha256: no decoding), a **near**
copy when an indexed picture passes the same rule ``lookalike dups`` groups by: the model's
near-duplicate threshold *and* the density margin (the pair must stand out from both pictures' crowds
of neighbours by ``margin``; see :mod:`lookalike.dedup.groups`), measured for the new picture against
the library and for the library picture within it. Nothing is written to the index.

:func:`check` embeds files that are not indexed yet; :func:`check_against` asks the same of every item
of another index, from its stored vectors (``lookalike dups --against``), so both answer by one rule.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.dedup.groups import DEFAULT_BYPASS, DEFAULT_K, DEFAULT_SURE, default_margin, default_threshold
from lookalike.dedup.quarantine import containing_root
from lookalike.imaging.discover import Skip, walk_images
from lookalike.imaging.load import ImageLoadError, decode_image, read_bytes
from lookalike.index import Index
from lookalike.store.base import Hit, ItemRecord, ModelMismatchError, Store, StoreError

#: ``in_library``: the file lies in the library itself (indexed there, by this or another name, or inside
#: its indexed folders); only :func:`check_against` reports it, and it is never a copy to act on.
STATUSES = ("exact", "near", "new", "unreadable", "in_library")
_BATCH = 32


@dataclass
class CheckMatch:
    record: ItemRecord
    score: float

    def to_dict(self) -> dict[str, object]:
        return {"id": self.record.id, "path": self.record.path, "score": round(float(self.score), 4)}


@dataclass
class CheckResult:
    path: str
    #: ``exact`` (same bytes indexed), ``near`` (a near copy indexed), ``new`` or ``unreadable``
    status: str
    matches: list[CheckMatch] = field(default_factory=list)
    reason: str = ""
    #: the checked index's own item (:func:`check_against` only): what a quarantine moves
    item: ItemRecord | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "path": self.path,
            "status": self.status,
            "matches": [m.to_dict() for m in self.matches],
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def _crowd(scores: Sequence[float], k: int, sure: float) -> float:
    """The density reference of a picture: its k-th neighbour score after its ``sure`` ones (NaN: too few)."""
    n_sure = min(sum(s >= sure for s in scores), k)
    at = k - 1 + n_sure
    return float(scores[at]) if at < len(scores) else float("nan")


def _library_crowd(store: Store, rec: ItemRecord, k: int, sure: float) -> float:
    """The crowd reference of an indexed picture among the other indexed pictures of different content."""
    hits = store.search(store.vectors([rec.id]), 2 * k + 8)[0]
    others = [h.score for h in hits if h.id != rec.id and _sha(store, h.id) != rec.sha256]
    return _crowd(others, k, sure)


def _sha(store: Store, item_id: int) -> str:
    found = store.get(item_id)
    return found.sha256 if found is not None else ""


def check(
    index: Index,
    paths: Sequence[str | os.PathLike[str]],
    *,
    threshold: float | None = None,
    margin: float | None = None,
    k: int = DEFAULT_K,
    max_matches: int = 5,
) -> list[CheckResult]:
    """One result per image file under ``paths`` (files or folders), in the order found."""
    store = index.store
    model_name = index.model_name
    margin = default_margin(model_name) if margin is None else margin
    threshold = default_threshold(model_name, margin) if threshold is None else threshold
    results: list[CheckResult] = []
    skipped: list[Skip] = []
    to_embed: list[tuple[CheckResult, bytes]] = []
    for found in walk_images(list(paths), skipped.append):
        result = CheckResult(found.path, "new")
        results.append(result)
        try:
            data = read_bytes(found.path)
        except ImageLoadError as exc:
            result.status, result.reason = "unreadable", str(exc)
            continue
        if not _exact_copies(store, result, hashlib.sha256(data).hexdigest(), max_matches) and len(store):
            to_embed.append((result, data))
    results.extend(CheckResult(s.path, "unreadable", reason=f"{s.reason}: {s.detail}") for s in skipped)
    crowds: dict[int, float] = {}
    for start in range(0, len(to_embed), _BATCH):
        batch = to_embed[start : start + _BATCH]
        pictures, ready = [], []
        for result, data in batch:
            try:
                pictures.append(decode_image(data, draft_size=index.model.spec.input_size).image)
                ready.append(result)
            except ImageLoadError as exc:
                result.status, result.reason = "unreadable", str(exc)
        if not pictures:
            continue
        _match_vectors(store, ready, np.asarray(index.model.embed(pictures)), k, threshold, margin, crowds, max_matches)
    return results


def _exact_copies(store: Store, result: CheckResult, sha256: str, max_matches: int) -> bool:
    """Mark ``result`` exact when the library holds these bytes; whether it does."""
    copies = store.find_by_sha256(sha256)
    if copies:
        result.status = "exact"
        result.matches = [CheckMatch(rec, 1.0) for rec in copies[:max_matches]]
    return bool(copies)


def _match_vectors(
    store: Store,
    results: Sequence[CheckResult],
    vectors: np.ndarray,
    k: int,
    threshold: float,
    margin: float,
    crowds: dict[int, float],
    max_matches: int,
) -> None:
    """Mark each result ``near`` whose vector has library pictures passing the near-duplicate rule."""
    for result, hits in zip(results, store.search(vectors, 2 * k + 8), strict=True):
        result.matches = _near_copies(store, hits, k, threshold, margin, crowds)[:max_matches]
        if result.matches:
            result.status = "near"


def same_model(index: Index, library: Index) -> None:
    """Refuse to compare indexes whose vectors come from different models or preprocessing.

    An empty index has no vectors to mismatch; otherwise the recorded identities must be equal.
    """
    have, want = library.store.model_identity, index.store.model_identity
    if have is not None and want is not None and have != want:
        diffs = "; ".join(
            f"{key}: library {have.get(key)!r}, this index {want.get(key)!r}"
            for key in sorted(set(have) | set(want))
            if have.get(key) != want.get(key)
        )
        raise ModelMismatchError(
            f"the two indexes were made by different models or preprocessing ({diffs}), so their vectors "
            f"cannot be compared; index both with the same model (the library uses {have.get('name')!r})",
            parameters=("db",),
        )


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def check_against(
    index: Index,
    library: Index,
    *,
    threshold: float | None = None,
    margin: float | None = None,
    k: int = DEFAULT_K,
    max_matches: int = 5,
    batch: int = 256,
) -> list[CheckResult]:
    """One result per item of ``index``: whether ``library`` already holds it, by :func:`check`'s rule.

    Uses the stored vectors (nothing is decoded or embedded), so both indexes must share one model
    identity (:class:`~lookalike.store.base.ModelMismatchError` otherwise). A file that the library
    indexes itself (same path or same inode) is ``in_library``, never a copy of itself.
    """
    same_model(index, library)
    if _same_folder(index.store, library.store):
        raise StoreError("the two indexes are the same one; compare an index with another index", parameters=("db",))
    store = library.store
    model_name = str((store.model_identity or index.store.model_identity or {}).get("name", "")) or None
    margin = default_margin(model_name) if margin is None else margin
    threshold = default_threshold(model_name, margin) if threshold is None else threshold
    lib_paths = {rec.path for rec in store.items()}
    lib_files = {key for key in map(_file_key, lib_paths) if key is not None}
    lib_roots = [str(r) for r in (store.get_meta("roots") or [])]  # type: ignore[union-attr]
    results: list[CheckResult] = []
    pending: list[tuple[CheckResult, int]] = []
    crowds: dict[int, float] = {}
    for rec in index.store.items():
        result = CheckResult(rec.path, "new", item=rec)
        results.append(result)
        if rec.path in lib_paths or _file_key(rec.path) in lib_files or containing_root(rec.path, lib_roots):
            result.status, result.reason = "in_library", "the library indexes this file or its folder"
            continue
        if not _exact_copies(store, result, rec.sha256, max_matches) and len(store):
            pending.append((result, rec.id))
    for start in range(0, len(pending), batch):
        part = pending[start : start + batch]
        vectors = np.asarray(index.store.vectors([item_id for _, item_id in part]), dtype=np.float32)
        _match_vectors(store, [r for r, _ in part], vectors, k, threshold, margin, crowds, max_matches)
    return results


def _same_folder(a: Store, b: Store) -> bool:
    fa, fb = getattr(a, "folder", None), getattr(b, "folder", None)
    return fa is not None and fb is not None and os.path.realpath(fa) == os.path.realpath(fb)


def _near_copies(
    store: Store, hits: Sequence[Hit], k: int, threshold: float, margin: float, crowds: dict[int, float]
) -> list[CheckMatch]:
    """The indexed pictures that pass the near-duplicate rule with a new picture, best first."""
    scores = [h.score for h in hits]
    mine = _crowd(scores, k, DEFAULT_SURE)
    out = []
    for hit in hits:
        if hit.score < threshold:
            break
        rec = store.get(hit.id)
        if rec is None:
            continue
        if margin > 0 and hit.score < DEFAULT_BYPASS:
            if hit.id not in crowds:
                crowds[hit.id] = _library_crowd(store, rec, k, DEFAULT_SURE)
            refs = [r if np.isfinite(r) else threshold for r in (mine, crowds[hit.id])]
            if hit.score < max(refs) + margin - 1e-6:
                continue
        out.append(CheckMatch(rec, min(1.0, hit.score)))
    return out

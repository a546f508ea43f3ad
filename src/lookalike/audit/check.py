"""New images against a library: which of these files are already there, before they are added.

A file is an **exact** copy when an indexed item has the same bytes (sha256: no decoding), a **near**
copy when an indexed picture passes the same rule ``lookalike dups`` groups by: the model's
near-duplicate threshold *and* the density margin (the pair must stand out from both pictures' crowds
of neighbours by ``margin``; see :mod:`lookalike.dedup.groups`), measured for the new picture against
the library and for the library picture within it. Nothing is written to the index.

Point for point (``verify``, on by default for models whose duplicate rule was measured with it, as
``dups``): a turned, cropped, bordered or screenshotted copy scores under the rule, so each new
picture's :data:`VERIFY_K` nearest library pictures down to
:data:`~lookalike.dedup.groups.VERIFY_FLOOR` are checked with local features
(:class:`lookalike.dedup.verify.GeometricCheck`) and the ones it confirms are near copies too
(``verified``); a match of the rule under :data:`~lookalike.dedup.groups.DENY_BELOW` that the check
*denies* (another photo of the same kind of scene) is dropped.

:func:`check` embeds files that are not indexed yet; :func:`check_against` asks the same of every item
of another index, from its stored vectors (``lookalike dups --against``), so both answer by one rule.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.dedup.groups import (
    DEFAULT_BYPASS,
    DEFAULT_K,
    DEFAULT_SURE,
    DENY_BELOW,
    VERIFY_AUTO_LIMIT,
    VERIFY_FLOOR,
    PairCheck,
    default_margin,
    default_threshold,
    pair_check_for,
)
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
    verified: bool = False  # under the similarity rule, but a copy point for point

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.record.id, "path": self.record.path, "score": round(float(self.score), 4)}
        if self.verified:
            out["verified"] = True
        return out


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


#: ``verify``: each new picture is checked against its this many nearest library pictures (down to
#: :data:`~lookalike.dedup.groups.VERIFY_FLOOR`); the first value of ``dups``' own ``VERIFY_K``, not
#: tuned for ``check`` (bench/bench_check.py measures it).
VERIFY_K = 16
#: ``verify`` None checks point for point up to this many pictures to compare: each costs up to
#: ``1 + VERIFY_K`` image reads, so this is the read budget of ``dups``' own automatic limit
#: (:data:`~lookalike.dedup.groups.VERIFY_AUTO_LIMIT`).
VERIFY_AUTO_PICTURES = VERIFY_AUTO_LIMIT // (1 + VERIFY_K)


def check(
    index: Index,
    paths: Sequence[str | os.PathLike[str]],
    *,
    threshold: float | None = None,
    margin: float | None = None,
    k: int = DEFAULT_K,
    max_matches: int = 5,
    verify: PairCheck | bool | None = None,
) -> list[CheckResult]:
    """One result per image file under ``paths`` (files or folders), in the order found. ``verify``:
    a :class:`lookalike.dedup.verify.GeometricCheck`, True for a default one, False for none, None
    for the model's default (module docstring)."""
    store = index.store
    model_name = index.model_name
    margin = default_margin(model_name) if margin is None else margin
    threshold = default_threshold(model_name, margin) if threshold is None else threshold
    results: list[CheckResult] = []
    skipped: list[Skip] = []
    to_embed: list[tuple[CheckResult, bytes, ItemRecord]] = []
    for found in walk_images(list(paths), skipped.append):
        result = CheckResult(found.path, "new")
        results.append(result)
        try:
            data = read_bytes(found.path)
        except ImageLoadError as exc:
            result.status, result.reason = "unreadable", str(exc)
            continue
        sha = hashlib.sha256(data).hexdigest()
        if not _exact_copies(store, result, sha, max_matches) and len(store):
            to_embed.append((result, data, ItemRecord(found.path, sha, len(data), 0, 0, 0)))
    results.extend(CheckResult(s.path, "unreadable", reason=f"{s.reason}: {s.detail}") for s in skipped)
    pair_check = pair_check_for(model_name, verify, within_limit=len(to_embed) <= VERIFY_AUTO_PICTURES, stores=[store])
    crowds: dict[int, float] = {}
    for start in range(0, len(to_embed), _BATCH):
        batch = to_embed[start : start + _BATCH]
        pictures, ready, records = [], [], []
        for result, data, rec in batch:
            try:
                pictures.append(decode_image(data, draft_size=index.model.spec.input_size).image)
                ready.append(result)
                records.append(rec)
            except ImageLoadError as exc:
                result.status, result.reason = "unreadable", str(exc)
        if not pictures:
            continue
        vectors = np.asarray(index.model.embed(pictures))
        _match_vectors(store, ready, vectors, k, threshold, margin, crowds, max_matches, pair_check, records)
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
    pair_check: PairCheck | None = None,
    records: Sequence[ItemRecord] = (),
) -> None:
    """Mark each result ``near`` whose vector has library pictures passing the near-duplicate rule
    (or, with ``pair_check``, confirmed by it; ``records`` are the results' pictures, for the check)."""
    found = store.search(vectors, max(2 * k + 8, VERIFY_K))
    near = [_near_copies(store, hits, k, threshold, margin, crowds) for hits in found]
    if pair_check is not None:
        near = _verified(store, pair_check, records, found, near)
    for result, matches in zip(results, near, strict=True):
        result.matches = matches[:max_matches]
        if result.matches:
            result.status = "near"


def _verified(
    store: Store,
    pair_check: PairCheck,
    records: Sequence[ItemRecord],
    found: Sequence[Sequence[Hit]],
    near: list[list[CheckMatch]],
) -> list[list[CheckMatch]]:
    """Each picture's matches after the point-for-point check (module docstring): denied ones out,
    confirmed ones from its ``VERIFY_K`` nearest (down to ``VERIFY_FLOOR``) in, best score first."""
    asked: list[list[ItemRecord]] = []
    for hits, matches in zip(found, near, strict=True):
        have = {m.record.id for m in matches}
        close = [h for h in hits[:VERIFY_K] if h.score >= VERIFY_FLOOR and h.id not in have]
        asked.append([rec for h in close if (rec := store.get(h.id)) is not None])
    pair_check.prepare([*records, *(m.record for ms in near for m in ms if m.score < DENY_BELOW)])
    pair_check.prepare([rec for recs in asked for rec in recs])
    # every pair below is asked: check them in parallel first (the answers are cached)
    pair_check.denies_all(
        [(rec, m.record) for rec, matches in zip(records, near, strict=True) for m in matches if m.score < DENY_BELOW]
    )
    pair_check.confirms_all(
        [(rec, o) for rec, recs in zip(records, asked, strict=True) for o in recs if o.sha256 != rec.sha256]
    )
    out = []
    for rec, hits, matches, candidates in zip(records, found, near, asked, strict=True):
        score_of = {h.id: h.score for h in hits}
        kept = [m for m in matches if m.score >= DENY_BELOW or not pair_check.denies(rec, m.record)]
        kept += [
            CheckMatch(other, min(1.0, score_of[other.id]), verified=True)
            for other in candidates
            if other.sha256 != rec.sha256 and pair_check.confirms(rec, other)
        ]
        out.append(sorted(kept, key=lambda m: -m.score))
    return out


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
    verify: PairCheck | bool | None = None,
) -> list[CheckResult]:
    """One result per item of ``index``: whether ``library`` already holds it, by :func:`check`'s rule
    (``verify`` as there).

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
    pending: list[tuple[CheckResult, ItemRecord]] = []
    crowds: dict[int, float] = {}
    for rec in index.store.items():
        result = CheckResult(rec.path, "new", item=rec)
        results.append(result)
        if rec.path in lib_paths or _file_key(rec.path) in lib_files or containing_root(rec.path, lib_roots):
            result.status, result.reason = "in_library", "the library indexes this file or its folder"
            continue
        if not _exact_copies(store, result, rec.sha256, max_matches) and len(store):
            pending.append((result, rec))
    pair_check = pair_check_for(
        model_name, verify, within_limit=len(pending) <= VERIFY_AUTO_PICTURES, stores=[store, index.store]
    )
    for start in range(0, len(pending), batch):
        part = pending[start : start + batch]
        vectors = np.asarray(index.store.vectors([rec.id for _, rec in part]), dtype=np.float32)
        records = [rec for _, rec in part]
        _match_vectors(
            store, [r for r, _ in part], vectors, k, threshold, margin, crowds, max_matches, pair_check, records
        )
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

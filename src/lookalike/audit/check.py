"""New images against a library: which of these files are already there, before they are added.

A file is an **exact** copy when an indexed item has the same bytes (sha256: no decoding), a **near**
copy when an indexed picture passes the same rule ``lookalike dups`` groups by: the model's
near-duplicate threshold *and* the density margin (the pair must stand out from both pictures' crowds
of neighbours by ``margin``; see :mod:`lookalike.dedup.groups`), measured for the new picture against
the library and for the library picture within it. Nothing is written to the index.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.dedup.groups import DEFAULT_BYPASS, DEFAULT_K, DEFAULT_SURE, default_margin, default_threshold
from lookalike.imaging.discover import Skip, walk_images
from lookalike.imaging.load import ImageLoadError, decode_image, read_bytes
from lookalike.index import Index
from lookalike.store.base import Hit, ItemRecord, Store

STATUSES = ("exact", "near", "new", "unreadable")
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
        copies = store.find_by_sha256(hashlib.sha256(data).hexdigest())
        if copies:
            result.status = "exact"
            result.matches = [CheckMatch(rec, 1.0) for rec in copies[:max_matches]]
        elif len(store):
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
        vectors = index.model.embed(pictures)
        for result, hits in zip(ready, store.search(np.asarray(vectors), 2 * k + 8), strict=True):
            result.matches = _near_copies(store, hits, k, threshold, margin, crowds)[:max_matches]
            if result.matches:
                result.status = "near"
    return results


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

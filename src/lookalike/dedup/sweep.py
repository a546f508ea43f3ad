"""Sweep by example: every indexed image like the given examples (and not like the counter-examples).

The original wish: pick one dirty image ("pictures coming soon", an interior shot) and remove all of
its kind at once. An item matches when its best similarity to a ``like`` example reaches the
threshold **and** is higher than its best similarity to any ``unlike`` example, so one counter-example
carves a false-positive family out of the sweep. The scan is blocked over the stored vectors (exact,
O(N·examples)), so it never misses an item the way a top-k search could.

Tiers: without a threshold a sweep takes what this collection's calibration calls **the same
picture**: the lowest score from which its measured copies are told from its nearest non-copies with
precision :data:`SAME_PICTURE_PRECISION` (``dups --precision 0.95`` reads the same threshold, see
:mod:`lookalike.dedup.threshold`). It also says where the **next tier** starts: the band of items
just below, down to the first clear gap in their scores, with the threshold that would add them. A
fixed 0.75 once moved 3 look-alike photos at 0.75-0.77 together with 9 copies at >= 0.92; the tier
line shows such a gap and leaves the looser sweep to the user. An index without a usable calibration
uses the model's plain near-duplicate threshold instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.dedup.groups import default_threshold
from lookalike.dedup.threshold import CalibrationUnavailable, precision_threshold
from lookalike.imaging.load import open_rgb
from lookalike.index import Index, QueryInput
from lookalike.store.base import ItemRecord

#: The precision at which the default sweep's threshold tells copies from non-copies here.
SAME_PICTURE_PRECISION = 0.95
#: A looser sweep for "the same kind of picture" (e.g. ``--threshold 0.75``); the default is the
#: collection's "same picture" cut-off (:func:`same_picture_threshold`).
KIND_SWEEP_THRESHOLD = 0.75
#: The next tier ends at the first gap this wide between consecutive scores...
TIER_GAP = 0.02
#: ... and spans at most this much below its best score.
TIER_BAND = 0.05
#: Scores kept below the threshold to find the next tier in (the highest ones).
_TIER_POOL = 1000
_BLOCK = 65536


@dataclass
class SweepMatch:
    record: ItemRecord
    score: float  # best similarity to a like-example
    unlike_score: float | None  # best similarity to an unlike-example, if any were given

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.record.id, "path": self.record.path, "score": round(self.score, 4)}
        if self.unlike_score is not None:
            out["unlike_score"] = round(self.unlike_score, 4)
        return out


@dataclass
class NextTier:
    """The items just below the threshold, down to the first clear gap: what a looser sweep adds."""

    count: int  # items in the band (a lower bound when ``more`` is set)
    highest: float
    lowest: float
    threshold: float  # the threshold that adds exactly this band
    label: str | None  # the calibration's label of the band's best score, when calibrated
    gap_above: float | None  # from the lowest match down to the band (None without matches)
    more: bool = False  # the band ran past the scores kept to find it

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "count": self.count,
            "highest": round(self.highest, 4),
            "lowest": round(self.lowest, 4),
            "threshold": self.threshold,
            "label": self.label,
            "gap_above": None if self.gap_above is None else round(self.gap_above, 4),
        }
        if self.more:
            out["more"] = True
        return out


@dataclass
class SweepResult:
    threshold: float
    like: list[str]
    unlike: list[str]
    matches: list[SweepMatch] = field(default_factory=list)
    rule: str = "threshold"  # or the default's: "same picture (precision 0.95)", "same picture (uncalibrated)"
    next_tier: NextTier | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "rule": self.rule,
            "like": self.like,
            "unlike": self.unlike,
            "count": len(self.matches),
            "matches": [m.to_dict() for m in self.matches],
            "next_tier": None if self.next_tier is None else self.next_tier.to_dict(),
        }


def same_picture_threshold(index: Index) -> tuple[float, str]:
    """The cut-off from which this collection's calibration calls a score the same picture, and the rule's
    name; without a usable calibration, the model's plain near-duplicate threshold."""
    try:
        threshold = precision_threshold(index.store, SAME_PICTURE_PRECISION)
    except CalibrationUnavailable:
        model = str((index.store.model_identity or {}).get("name", ""))
        return float(default_threshold(model or None, margin=0.0)), "same picture (uncalibrated)"
    return round(threshold, 4), f"same picture (precision {SAME_PICTURE_PRECISION})"


def example_vectors(index: Index, examples: Sequence[QueryInput]) -> np.ndarray:
    """Vectors of examples: stored ones for unchanged indexed files (or item ids), else embedded."""
    out: list[np.ndarray | None] = []
    to_embed: list[tuple[int, QueryInput]] = []
    for i, example in enumerate(examples):
        rec = None
        if isinstance(example, int) and not isinstance(example, bool):
            rec = index.store.get(example)
            if rec is None:
                raise ValueError(f"no indexed item with id {example}")
        elif isinstance(example, str | os.PathLike):
            path = os.path.abspath(os.fspath(example))
            rec = index.store.get_by_path(path)
            if rec is not None:
                st = os.stat(path) if os.path.exists(path) else None
                if st is None or (st.st_size, st.st_mtime_ns) != (rec.size, rec.mtime_ns):
                    rec = None
        if rec is not None:
            out.append(index.store.vectors([rec.id])[0])
        else:
            out.append(None)
            to_embed.append((i, example))
    if to_embed:
        model = index.model
        pictures = [open_rgb(ex, draft_size=model.spec.input_size) for _, ex in to_embed]  # type: ignore[arg-type]
        for (i, _), vec in zip(to_embed, model.embed(pictures), strict=True):
            out[i] = vec
    dim = index.store.dim if hasattr(index.store, "dim") else None
    return np.stack(out) if out else np.zeros((0, dim or 1), dtype=np.float32)  # type: ignore[arg-type]


def sweep(
    index: Index,
    like: Sequence[QueryInput],
    unlike: Sequence[QueryInput] = (),
    threshold: float | None = None,
) -> SweepResult:
    """Every indexed item scoring >= ``threshold`` against a like-example and closer to likes than unlikes.

    ``threshold`` None: the collection's "same picture" cut-off (:func:`same_picture_threshold`).
    The result also names the next tier below the threshold (:class:`NextTier`).
    """
    if not like:
        raise ValueError("give at least one example picture to sweep by")
    rule = "threshold"
    if threshold is None:
        threshold, rule = same_picture_threshold(index)
    pos = example_vectors(index, like)
    neg = example_vectors(index, unlike) if unlike else None
    ids, vectors = index.store.vector_rows()  # read block by block, never all in RAM
    result = SweepResult(threshold, [_label(x) for x in like], [_label(x) for x in unlike], rule=rule)
    found: list[tuple[int, float, float | None]] = []
    below = np.zeros(0, dtype=np.float32)  # the highest scores under the threshold (eligible ones)
    for start in range(0, len(ids), _BLOCK):
        block = vectors[start : start + _BLOCK]
        best = (block @ pos.T).max(axis=1)
        eligible = np.ones(len(best), dtype=bool)
        worst = None
        if neg is not None:
            worst = (block @ neg.T).max(axis=1)
            eligible = best > worst
        keep = eligible & (best >= threshold)
        for row in np.flatnonzero(keep):
            found.append((int(ids[start + row]), float(best[row]), None if worst is None else float(worst[row])))
        below = _highest(np.concatenate([below, best[eligible & (best < threshold)]]), _TIER_POOL)
    for item_id, score, unlike_score in sorted(found, key=lambda f: (-f[1], f[0])):
        rec = index.store.get(item_id)
        if rec is not None:
            result.matches.append(SweepMatch(rec, min(1.0, score), unlike_score))
    lowest_match = min((score for _, score, _ in found), default=None)
    cal = index.calibration
    result.next_tier = next_tier(below, lowest_match, cal.label if cal is not None and cal.ok else None)
    return result


def _highest(scores: np.ndarray, n: int) -> np.ndarray:
    if len(scores) <= n:
        return scores
    return np.partition(scores, len(scores) - n)[len(scores) - n :]


def next_tier(below: np.ndarray, lowest_match: float | None, label: Callable[[float], str] | None) -> NextTier | None:
    """The band of scores just under the threshold: from the highest down to the first gap of
    :data:`TIER_GAP`, at most :data:`TIER_BAND` deep. None when nothing scored under the threshold."""
    if len(below) == 0:
        return None
    ordered = np.sort(below.astype(np.float64))[::-1]
    top = float(ordered[0])
    end = 1
    while end < len(ordered) and ordered[end - 1] - ordered[end] < TIER_GAP and top - ordered[end] <= TIER_BAND:
        end += 1
    lowest = float(ordered[end - 1])
    after = float(ordered[end]) if end < len(ordered) else -np.inf
    # the roundest threshold that takes the band and nothing under it
    threshold = next((t for t in (np.floor(lowest * 10**d) / 10**d for d in (2, 3, 4)) if t > after), lowest)
    return NextTier(
        count=end,
        highest=top,
        lowest=lowest,
        threshold=float(threshold),
        label=label(top) if label is not None else None,
        gap_above=None if lowest_match is None else lowest_match - top,
        more=end == len(ordered) == _TIER_POOL,
    )


def _label(example: QueryInput) -> str:
    if isinstance(example, int) and not isinstance(example, bool):
        return f"id:{example}"
    if isinstance(example, str | os.PathLike):
        return os.fspath(example)
    return "<image>"

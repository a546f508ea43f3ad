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

Point for point (``verify``, on by default for models whose duplicate rule was measured with it,
:mod:`lookalike.dedup.verify`): a copy turned by a quarter, pasted into a screenshot or heavily
filtered scores far under the same-picture cut-off, among look-alikes. So below the threshold each
like-example's :data:`VERIFY_K` best-scoring eligible items (down to :data:`VERIFY_FLOOR`) are
checked against it with local features, and the copies the check confirms join the sweep, marked
``verified``. Under the default rule, a match under :data:`DENY_BELOW` that the check *denies* is
the same picture as none of its examples (a different photo of the same kind of scene) and leaves.
With an explicit ``threshold`` (a sweep for a kind of picture) nothing is denied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from lookalike.dedup.groups import DENY_BELOW, VERIFY_FLOOR, PairCheck, default_threshold, pair_check_for
from lookalike.dedup.threshold import CalibrationUnavailable, precision_threshold
from lookalike.imaging.load import ImageLoadError, open_rgb
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
#: ``verify``: each like-example's this many best-scoring items under the threshold (down to
#: :data:`~lookalike.dedup.groups.VERIFY_FLOOR`) are checked point for point. Chosen on
#: bench_sweep's tuning set (docs/cleaning.md).
VERIFY_K = 128
_BLOCK = 65536


@dataclass
class SweepMatch:
    record: ItemRecord
    score: float  # best similarity to a like-example
    unlike_score: float | None  # best similarity to an unlike-example, if any were given
    verified: bool = False  # under the threshold, but a like-example's copy point for point

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.record.id, "path": self.record.path, "score": round(self.score, 4)}
        if self.unlike_score is not None:
            out["unlike_score"] = round(self.unlike_score, 4)
        if self.verified:
            out["verified"] = True
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
    verify: VerifyCounts | None = None  # None: not checked point for point

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "rule": self.rule,
            "like": self.like,
            "unlike": self.unlike,
            "count": len(self.matches),
            "matches": [m.to_dict() for m in self.matches],
            "next_tier": None if self.next_tier is None else self.next_tier.to_dict(),
            "verify": None if self.verify is None else self.verify.to_dict(),
        }


@dataclass
class VerifyCounts:
    """What the point-for-point check did in a sweep."""

    checked: int = 0  # items under the threshold checked against an example
    confirmed: int = 0  # of those, copies of an example (added, ``verified``)
    denied: int = 0  # matches over the threshold that the check said show another picture (dropped)
    unreadable: int = 0  # files (or examples) the check could not read

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def same_picture_threshold(index: Index) -> tuple[float, str]:
    """The cut-off from which this collection's calibration calls a score the same picture, and the rule's
    name; without a usable calibration, the model's plain near-duplicate threshold."""
    try:
        threshold = precision_threshold(index.store, SAME_PICTURE_PRECISION)
    except CalibrationUnavailable:
        model = str((index.store.model_identity or {}).get("name", ""))
        return float(default_threshold(model or None, margin=0.0)), "same picture (uncalibrated)"
    return round(threshold, 4), f"same picture (precision {SAME_PICTURE_PRECISION})"


def indexed_example(index: Index, example: QueryInput) -> ItemRecord | None:
    """The indexed item an example stands for: an item id, or an indexed file unchanged since it
    was indexed (None: embed the example itself). An unknown item id is an error."""
    if isinstance(example, int) and not isinstance(example, bool):
        rec = index.store.get(example)
        if rec is None:
            raise ValueError(f"no indexed item with id {example}")
        return rec
    if isinstance(example, str | os.PathLike):
        path = os.path.abspath(os.fspath(example))
        rec = index.store.get_by_path(path)
        if rec is not None:
            st = os.stat(path) if os.path.exists(path) else None
            if st is not None and (st.st_size, st.st_mtime_ns) == (rec.size, rec.mtime_ns):
                return rec
    return None


def example_vectors(index: Index, examples: Sequence[QueryInput]) -> np.ndarray:
    """Vectors of examples: stored ones for unchanged indexed files (or item ids), else embedded."""
    out: list[np.ndarray | None] = []
    to_embed: list[tuple[int, QueryInput]] = []
    for i, example in enumerate(examples):
        rec = indexed_example(index, example)
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
    *,
    verify: PairCheck | bool | None = None,
) -> SweepResult:
    """Every indexed item scoring >= ``threshold`` against a like-example and closer to likes than unlikes.

    ``threshold`` None: the collection's "same picture" cut-off (:func:`same_picture_threshold`).
    The result also names the next tier below the threshold (:class:`NextTier`). ``verify`` (a
    :class:`lookalike.dedup.verify.GeometricCheck`, True for a default one, False for none, None for
    the model's default, :func:`~lookalike.dedup.groups.pair_check_for`) adds the copies it confirms
    under the threshold and, under the default rule, drops the matches it denies (module docstring).
    """
    if not like:
        raise ValueError("give at least one example picture to sweep by")
    rule = "threshold"
    by_rule = threshold is None
    if threshold is None:
        threshold, rule = same_picture_threshold(index)
    check = pair_check_for(index.model_name, verify, stores=[index.store])
    pos = example_vectors(index, like)
    neg = example_vectors(index, unlike) if unlike else None
    scan = _scan(index, pos, neg, threshold, VERIFY_K if check is not None else 0)
    result = SweepResult(threshold, [_label(x) for x in like], [_label(x) for x in unlike], rule=rule)
    records = {i: rec for i, _, _ in scan.found if (rec := index.store.get(i)) is not None}
    verified: list[SweepMatch] = []
    if check is not None:
        result.verify = VerifyCounts()
        examples = [example_record(index, check, x) for x in like]
        verified = _confirm(index, check, examples, pos, scan, result.verify)
        if by_rule:  # a sweep for the same picture: a match the check denies is another picture
            for item_id in _denied(check, examples, scan, records):
                del records[item_id]
                result.verify.denied += 1
    for item_id, score, unlike_score in sorted(scan.found, key=lambda f: (-f[1], f[0])):
        if item_id in records:
            result.matches.append(SweepMatch(records[item_id], min(1.0, score), unlike_score))
    result.matches.extend(verified)
    lowest_match = min((score for _, score, _ in scan.found), default=None)
    below = scan.below
    if verified:
        below = below[~np.isin(scan.below_ids, [m.record.id for m in verified])]
    cal = index.calibration
    result.next_tier = next_tier(below, lowest_match, cal.label if cal is not None and cal.ok else None)
    return result


@dataclass
class _Scan:
    """One pass over the stored vectors (:func:`_scan`)."""

    found: list[tuple[int, float, float | None]]  # (id, best like score, best unlike score) at >= threshold
    matched: dict[int, np.ndarray]  # found item id (under DENY_BELOW) -> the like-examples it reached
    below: np.ndarray  # the highest eligible scores under the threshold, for the next tier
    below_ids: np.ndarray
    candidates: list[tuple[np.ndarray, np.ndarray]]  # per like-example: (scores, ids) to check
    unlike_of: dict[int, float]  # candidate id -> its best unlike score


def _scan(index: Index, pos: np.ndarray, neg: np.ndarray | None, threshold: float, pool_k: int) -> _Scan:
    """Block by block over the stored vectors (never all in RAM): the matches, the scores just under
    the threshold, and each like-example's ``pool_k`` best eligible items under it (down to the floor)."""
    ids, vectors = index.store.vector_rows()
    floor = min(VERIFY_FLOOR, threshold)
    scan = _Scan([], {}, np.zeros(0, np.float32), np.zeros(0, np.int64), [], {})
    scan.candidates = [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(len(pos) if pool_k else 0)]
    for start in range(0, len(ids), _BLOCK):
        block = vectors[start : start + _BLOCK]
        block_ids = np.asarray(ids[start : start + len(block)], dtype=np.int64)
        per_like = block @ pos.T
        best = per_like.max(axis=1)
        eligible = np.ones(len(best), dtype=bool)
        worst = None
        if neg is not None:
            worst = (block @ neg.T).max(axis=1)
            eligible = best > worst
        for row in np.flatnonzero(eligible & (best >= threshold)):
            item_id = int(block_ids[row])
            scan.found.append((item_id, float(best[row]), None if worst is None else float(worst[row])))
            if best[row] < DENY_BELOW:
                scan.matched[item_id] = np.flatnonzero(per_like[row] >= threshold)
        under = eligible & (best < threshold)
        scan.below, scan.below_ids = _highest(
            np.concatenate([scan.below, best[under]]), _TIER_POOL, np.concatenate([scan.below_ids, block_ids[under]])
        )
        for e, (scores, cand) in enumerate(scan.candidates):
            take = under & (per_like[:, e] >= floor)
            scan.candidates[e] = _highest(
                np.concatenate([scores, per_like[take, e]]), pool_k, np.concatenate([cand, block_ids[take]])
            )
        if worst is not None and pool_k:
            scan.unlike_of.update(zip(block_ids[under].tolist(), worst[under].tolist(), strict=True))
    return scan


def _confirm(
    index: Index,
    check: PairCheck,
    examples: list[ItemRecord | None],
    pos: np.ndarray,
    scan: _Scan,
    counts: VerifyCounts,
) -> list[SweepMatch]:
    """The candidates under the threshold that the check confirms as a copy of a like-example, best first."""
    wanted: dict[int, list[int]] = {}  # candidate id -> the examples to check it against
    for e, (scores, cand) in enumerate(scan.candidates):
        if examples[e] is not None:
            for item_id in cand[np.argsort(-scores, kind="stable")].tolist():
                wanted.setdefault(item_id, []).append(e)
    records = {i: rec for i in wanted if (rec := index.store.get(i)) is not None}
    check.prepare([x for x in examples if x is not None and x.id >= 0])
    check.prepare(list(records.values()))
    # every pair below is asked: check them in parallel first (the answers are cached)
    check.confirms_all([(examples[e], rec) for i, rec in records.items() for e in wanted[i]])  # type: ignore[misc]
    out: list[SweepMatch] = []
    for item_id, rec in records.items():
        counts.checked += 1
        hits = [e for e in wanted[item_id] if check.confirms(examples[e], rec)]  # type: ignore[arg-type]
        if hits:
            score = float(np.max(pos[hits] @ index.store.vectors([item_id])[0]))
            out.append(SweepMatch(rec, min(1.0, score), scan.unlike_of.get(item_id), verified=True))
    counts.confirmed = len(out)
    counts.unreadable = sum(x is None for x in examples) + int(getattr(check, "unreadable", 0))
    return sorted(out, key=lambda m: (-m.score, m.record.id))


def _denied(
    check: PairCheck, examples: list[ItemRecord | None], scan: _Scan, records: dict[int, ItemRecord]
) -> list[int]:
    """Matches under DENY_BELOW that the check denies against every like-example they reached."""
    asked = {i: records[i] for i in scan.matched if i in records}
    check.prepare(list(asked.values()))
    out = []
    for item_id, rec in asked.items():
        known = [examples[e] for e in scan.matched[item_id].tolist() if examples[e] is not None]
        if known and all(check.denies(x, rec) for x in known):  # type: ignore[arg-type]
            out.append(item_id)
    return out


def example_record(index: Index, check: PairCheck, example: QueryInput) -> ItemRecord | None:
    """The record the check reads a like-example by: the indexed item, else the picture itself."""
    rec = indexed_example(index, example)
    if rec is not None:
        return rec
    picture = getattr(check, "picture", None)
    if picture is None:
        return None
    try:
        return picture(open_rgb(example), _label(example))  # type: ignore[arg-type]
    except ImageLoadError:
        return None


def _highest(scores: np.ndarray, n: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` highest scores and their ids."""
    if len(scores) <= n:
        return scores, ids
    top = np.argpartition(scores, len(scores) - n)[len(scores) - n :]
    return scores[top], ids[top]


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

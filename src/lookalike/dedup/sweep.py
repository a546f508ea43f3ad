"""Sweep by example: every indexed image like the given examples (and not like the counter-examples).

The original wish: pick one dirty image ("pictures coming soon", an interior shot) and remove all of
its kind at once. An item matches when its best similarity to a ``like`` example reaches the
threshold **and** is higher than its best similarity to any ``unlike`` example, so one counter-example
carves a false-positive family out of the sweep. The scan is blocked over the stored vectors (exact,
O(N·examples)), so it never misses an item the way a top-k search could.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.imaging.load import open_rgb
from lookalike.index import Index, QueryInput
from lookalike.store.base import ItemRecord

#: Sweeps look for "the same kind of picture", looser than near-duplicates; tune with a dry run.
DEFAULT_SWEEP_THRESHOLD = 0.75
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
class SweepResult:
    threshold: float
    like: list[str]
    unlike: list[str]
    matches: list[SweepMatch] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "like": self.like,
            "unlike": self.unlike,
            "count": len(self.matches),
            "matches": [m.to_dict() for m in self.matches],
        }


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
    threshold: float = DEFAULT_SWEEP_THRESHOLD,
) -> SweepResult:
    """Every indexed item scoring >= ``threshold`` against a like-example and closer to likes than unlikes."""
    if not like:
        raise ValueError("give at least one example picture to sweep by")
    pos = example_vectors(index, like)
    neg = example_vectors(index, unlike) if unlike else None
    ids, vectors = index.store.vector_rows()  # read block by block, never all in RAM
    result = SweepResult(threshold, [_label(x) for x in like], [_label(x) for x in unlike])
    found: list[tuple[int, float, float | None]] = []
    for start in range(0, len(ids), _BLOCK):
        block = vectors[start : start + _BLOCK]
        best = (block @ pos.T).max(axis=1)
        keep = best >= threshold
        worst = None
        if neg is not None:
            worst = (block @ neg.T).max(axis=1)
            keep &= best > worst
        for row in np.flatnonzero(keep):
            found.append((int(ids[start + row]), float(best[row]), None if worst is None else float(worst[row])))
    for item_id, score, unlike_score in sorted(found, key=lambda f: (-f[1], f[0])):
        rec = index.store.get(item_id)
        if rec is not None:
            result.matches.append(SweepMatch(rec, min(1.0, score), unlike_score))
    return result


def _label(example: QueryInput) -> str:
    if isinstance(example, int) and not isinstance(example, bool):
        return f"id:{example}"
    if isinstance(example, str | os.PathLike):
        return os.fspath(example)
    return "<image>"

"""A 2-D map of the collection: each distinct picture a point, near pictures near each other.

PCA (the two leading directions of the centred vectors, fitted on at most :data:`FIT_SAMPLE` of
them) rather than UMAP: it needs nothing beyond numpy, takes well under a second at 100k items and
is deterministic; UMAP would separate clusters better (left for later, see docs/audit.md). At most
``max_points`` points are returned (a seeded sample, flagged items first), so a browser draws the
map of a 100k collection as fast as one of 1,000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.audit.core import AuditReport
from lookalike.store.base import Store

FIT_SAMPLE = 20_000
MAX_POINTS = 3000


@dataclass(frozen=True)
class MapPoint:
    id: int
    x: float  # 0..1
    y: float  # 0..1
    cluster: int
    flagged: bool


def collection_map(store: Store, report: AuditReport, *, max_points: int = MAX_POINTS, seed: int = 0) -> list[MapPoint]:
    """Points of one file per distinct picture (flagged ones first when there are too many)."""
    by_sha = {}
    for item in report.items:
        if item.record.sha256 not in by_sha or item.flagged:
            by_sha[item.record.sha256] = item
    chosen = sorted(by_sha.values(), key=lambda a: (not a.flagged, a.record.id))
    rng = np.random.default_rng(seed)
    if len(chosen) > max_points:
        flagged = [a for a in chosen if a.flagged][:max_points]
        rest = [a for a in chosen if not a.flagged]
        keep = rng.permutation(len(rest))[: max_points - len(flagged)]
        chosen = flagged + [rest[i] for i in sorted(keep)]
    if not chosen:
        return []
    vectors = store.vectors([a.record.id for a in chosen]).astype(np.float64)
    fit = vectors if len(vectors) <= FIT_SAMPLE else vectors[rng.permutation(len(vectors))[:FIT_SAMPLE]]
    mean = fit.mean(axis=0)
    if len(fit) >= 3:
        _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
        coords = (vectors - mean) @ vt[:2].T
    else:
        coords = np.zeros((len(vectors), 2))
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    coords = (coords - lo) / np.where(hi > lo, hi - lo, 1.0)
    return [
        MapPoint(a.record.id, round(float(x), 4), round(float(y), 4), a.cluster, a.flagged)
        for a, (x, y) in zip(chosen, coords.tolist(), strict=True)
    ]

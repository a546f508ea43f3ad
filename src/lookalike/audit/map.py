"""A 2-D map of the collection: each distinct picture a point, near pictures near each other.

UMAP (umap-learn, the optional ``audit`` extra) when it is installed: the vectors are reduced to
:data:`PCA_DIMS` by PCA, UMAP is fitted on at most :data:`UMAP_FIT_SAMPLE` of the points and the
others are placed with ``transform`` (seeded: the same map on every load). Without umap-learn, or with
too few points for a neighbour graph, PCA (the two leading directions of the centred vectors, fitted
on at most :data:`FIT_SAMPLE`): numpy only, well under a second. :attr:`CollectionMap.method` says
which. At most ``max_points`` points are returned (a seeded sample, flagged items first), so a
browser draws the map of a 100k collection as fast as one of 1,000, and UMAP's cost does not grow
with the collection (docs/audit.md has the timings).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from lookalike.audit.core import AuditReport
from lookalike.store.base import Store

FIT_SAMPLE = 20_000
MAX_POINTS = 3000
#: UMAP is fitted on this many points at most; the rest are placed by ``transform``.
UMAP_FIT_SAMPLE = 2000
#: Dimensions kept by PCA before UMAP (its neighbour search is faster there, and the map the same).
PCA_DIMS = 50
#: UMAP's neighbourhood size; below this many points + 2 the map falls back to PCA.
UMAP_NEIGHBOURS = 15
METHODS = ("umap", "pca")


@dataclass(frozen=True)
class MapPoint:
    id: int
    x: float  # 0..1
    y: float  # 0..1
    cluster: int
    flagged: bool


@dataclass
class CollectionMap:
    """The points and how they were placed (``umap`` or ``pca``), so a page can say so."""

    points: list[MapPoint] = field(default_factory=list)
    method: str = "pca"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "seconds": round(self.seconds, 3), "points": [p.__dict__ for p in self.points]}


def umap_available() -> bool:
    """Whether umap-learn can be imported (the ``audit`` extra)."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def layout(vectors: np.ndarray, *, method: str | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates in 0..1 for these vectors, and the method used (UMAP when installed, else PCA)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if method not in (None, *METHODS):
        raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    want_umap = method != "pca" and len(vectors) >= UMAP_NEIGHBOURS + 2
    coords, used = None, "pca"
    if want_umap:
        try:
            coords = _umap(vectors, seed)
            used = "umap"
        except ImportError:
            if method == "umap":
                raise
    if coords is None:
        coords = _pca(vectors, 2, seed)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    return (coords - lo) / np.where(hi > lo, hi - lo, 1.0), used


def _pca(vectors: np.ndarray, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fit = vectors if len(vectors) <= FIT_SAMPLE else vectors[rng.permutation(len(vectors))[:FIT_SAMPLE]]
    mean = fit.mean(axis=0)
    if len(fit) < 3:
        return np.zeros((len(vectors), dims))
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    out = (vectors - mean) @ vt[:dims].T
    return out if out.shape[1] == dims else np.pad(out, ((0, 0), (0, dims - out.shape[1])))


def _umap(vectors: np.ndarray, seed: int) -> np.ndarray:
    import umap  # optional: the ``audit`` extra; ImportError falls back to PCA

    reduced = _pca(vectors, min(PCA_DIMS, vectors.shape[1]), seed).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reduced))
    fit_rows, rest_rows = order[:UMAP_FIT_SAMPLE], order[UMAP_FIT_SAMPLE:]
    model = umap.UMAP(n_neighbors=UMAP_NEIGHBOURS, min_dist=0.1, random_state=seed, n_jobs=1)
    coords = np.zeros((len(reduced), 2), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs with random_state, spectral init notes: not the user's business
        coords[fit_rows] = model.fit_transform(reduced[fit_rows])
        if len(rest_rows):
            coords[rest_rows] = model.transform(reduced[rest_rows])
    return coords


def collection_map(
    store: Store, report: AuditReport, *, max_points: int = MAX_POINTS, seed: int = 0, method: str | None = None
) -> CollectionMap:
    """Points of one file per distinct picture (flagged ones first when there are too many)."""
    started = time.perf_counter()
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
        return CollectionMap([], "pca", time.perf_counter() - started)
    coords, used = layout(store.vectors([a.record.id for a in chosen]), method=method, seed=seed)
    points = [
        MapPoint(a.record.id, round(float(x), 4), round(float(y), 4), a.cluster, a.flagged)
        for a, (x, y) in zip(chosen, coords.tolist(), strict=True)
    ]
    return CollectionMap(points, used, time.perf_counter() - started)

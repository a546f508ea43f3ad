"""Visual clusters: spherical k-means (faiss) over one vector per distinct picture.

k-means rather than HDBSCAN: faiss is already a dependency, it runs in seconds on 100k vectors, and
every picture gets a cluster (the odd ones are reported separately). The number of clusters defaults
to ``sqrt(n / 2)`` (a common rule of thumb), between 2 and :data:`MAX_CLUSTERS`. Training uses at
most 256 pictures per cluster (faiss' own sampling); assignment runs in blocks, so memory stays
bounded for any collection size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.store.base import VectorRows

MAX_CLUSTERS = 64
_BLOCK = 8192


def default_clusters(n_pictures: int) -> int:
    """How many clusters a collection of this many distinct pictures is split into by default."""
    if n_pictures < 4:
        return 1
    return int(min(MAX_CLUSTERS, max(2, round(np.sqrt(n_pictures / 2)))))


@dataclass
class Assignment:
    """Each row's cluster and its similarity to the cluster's centre; clusters numbered largest first."""

    labels: np.ndarray
    similarity: np.ndarray
    n_clusters: int


def cluster(vectors: np.ndarray | VectorRows, n_clusters: int, *, seed: int = 0, niter: int = 20) -> Assignment:
    """Spherical k-means of the rows (unit vectors, cosine similarity)."""
    import faiss

    n = len(vectors)
    n_clusters = max(1, min(n_clusters, n))
    if n_clusters == 1 or n < 2:
        return Assignment(np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.float32), 1 if n else 0)
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.permutation(n)[: min(n, 256 * n_clusters)])
    sample = np.ascontiguousarray(vectors[sample_rows], dtype=np.float32)
    dim = sample.shape[1]
    kmeans = faiss.Kmeans(
        dim, n_clusters, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    kmeans.train(sample)
    centres = faiss.IndexFlatIP(dim)
    centres.add(kmeans.centroids)
    labels = np.empty(n, dtype=np.int64)
    similarity = np.empty(n, dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = np.ascontiguousarray(vectors[start : start + _BLOCK], dtype=np.float32)
        sims, found = centres.search(block, 1)
        labels[start : start + len(block)] = found[:, 0]
        similarity[start : start + len(block)] = sims[:, 0]
    # renumber: 0 is the largest cluster; empty clusters disappear
    sizes = np.bincount(labels, minlength=n_clusters)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    renumber = np.full(n_clusters, -1, dtype=np.int64)
    renumber[order] = np.arange(len(order))
    return Assignment(renumber[labels], similarity, len(order))

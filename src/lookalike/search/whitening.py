"""Collection-adaptive descriptor processing: centering and PCA whitening learned on the collection.

The copy-detection literature (e.g. the DISC 2021 baselines, Jégou & Chum 2012) subtracts the
collection mean and whitens descriptors so that directions every picture shares stop dominating the
cosine. This module learns such a transform from stored (raw) vectors; it never rewrites the store,
so it can be re-learned at any time as the collection grows.

Measured in bench/bench_calibration.py (``--whitening``) on retrieval of edited copies, copy-vs-
distractor separation and OOD separation; see docs/calibration.md for the numbers and why it is
*not* on by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.models.base import l2_normalize


@dataclass
class Whitening:
    """``x -> normalize(P (x - mean))``; ``P`` is the identity for plain centering."""

    mean: np.ndarray
    projection: np.ndarray | None = None

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        centered = np.asarray(vectors, dtype=np.float32) - self.mean
        if self.projection is not None:
            centered = centered @ self.projection
        return l2_normalize(centered)


def fit_whitening(vectors: np.ndarray, mode: str = "center", dim: int | None = None, shrink: float = 0.5) -> Whitening:
    """Learn a transform from the collection's vectors.

    ``mode``: ``center`` (subtract the mean) or ``pca`` (center, rotate to principal axes, keep
    ``dim`` of them and divide each by ``eigenvalue ** shrink``; shrink=0.5 is full whitening, smaller
    values damp the noise amplification of small eigenvalues, which matters with few items).
    """
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    if mode == "center":
        return Whitening(mean.astype(np.float32))
    if mode != "pca":
        raise ValueError("mode must be 'center' or 'pca'")
    centered = x - mean
    # Eigen-decomposition of the covariance via SVD; the rank is at most n - 1.
    _, sing, vt = np.linalg.svd(centered, full_matrices=False)
    eig = sing**2 / max(1, len(x) - 1)
    keep = min(dim or len(eig), len(eig), max(1, len(x) - 1))
    eig, vt = eig[:keep], vt[:keep]
    scale = 1.0 / np.power(eig + 1e-6 * eig[0], shrink)
    projection = (vt.T * scale).astype(np.float32)
    return Whitening(mean.astype(np.float32), projection)

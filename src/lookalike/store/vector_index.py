"""In-memory search structures over the store's vector file, addressed by slot number.

``flat`` is exact (one matrix product over the memory-mapped vectors); ``hnsw`` is faiss' graph
index, used when the collection is too large for an exact scan to meet the latency target. Both
return slots; the store maps slots to item ids and drops slots that no longer hold a live item.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

#: Above this many items `auto` switches from exact search to HNSW (measured: exact search over
#: 100k x 1280-d float32 takes ~18 ms on 2 cores, 20k about 4 ms).
AUTO_EXACT_LIMIT = 20_000


class VectorIndex(ABC):
    kind: str

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots), each (n_queries, k'), best first; slot -1 marks an empty place."""


class FlatIndex(VectorIndex):
    """Exact inner-product search over a (memory-mapped) matrix, masking dead slots."""

    kind = "flat"

    def __init__(self, matrix: np.ndarray, live: np.ndarray) -> None:
        self.matrix = matrix
        self.live = live

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.matrix.shape[0]
        if n == 0 or k <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        scores = queries @ self.matrix.T  # (q, n): one BLAS call for every query at once
        scores[:, ~self.live[:n]] = -np.inf
        k = min(k, n)
        if k < n:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n), (len(queries), n)).copy()
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        slots = np.take_along_axis(part, order, axis=1).astype(np.int64)
        top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
        slots[~np.isfinite(top)] = -1
        return top, slots


class HNSWIndex(VectorIndex):
    """faiss HNSW graph over live slots; saved beside the vectors and extended on open."""

    kind = "hnsw"

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80) -> None:
        import faiss

        self._faiss = faiss
        base = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = ef_construction
        self.index = faiss.IndexIDMap2(base)
        self.covered_slots = 0  # every slot below this has been offered to the graph

    @classmethod
    def load(cls, path: Path) -> HNSWIndex:
        import faiss

        self = cls.__new__(cls)
        self._faiss = faiss
        self.index = faiss.read_index(str(path))
        self.covered_slots = int(path.stem.rsplit("-", 1)[1])
        return self

    def add(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        if len(slots):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), slots.astype(np.int64))

    def save(self, folder: Path) -> Path:
        """Write atomically: a temp file, fsync, rename; then drop older graph files."""
        target = folder / f"hnsw-{self.covered_slots}.faiss"
        tmp = folder / f".{target.name}.tmp"
        self._faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        for old in folder.glob("hnsw-*.faiss"):
            if old != target:
                old.unlink(missing_ok=True)
        return target

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        base = self._faiss.downcast_index(self.index.index)
        base.hnsw.efSearch = max(64, 2 * k)
        scores, slots = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores.astype(np.float32), slots.astype(np.int64)

"""Search structures over the store's vector file, addressed by slot number.

The source of truth is the store (SQLite + the append-only vector file); everything here is a
derived cache that can be thrown away and rebuilt. ``flat`` is exact (one matrix product over the
memory-mapped vectors). Approximate indexes are faiss indexes described by a small factory string:

=====================  ==========================================================================
``flat``               exact scan of the raw float32 vectors (memory-mapped, nothing in RAM)
``hnsw32``             HNSW graph over raw vectors (fast, but RAM ~ raw vectors + graph)
``ivf4096,sq8``        inverted lists of 8-bit scalar-quantised codes (1 byte per dimension)
``ivf16384,pq64``      inverted lists of product-quantised codes (64 bytes per vector)
``pca256,ivf1024,sq8`` the same after a PCA to 256 dimensions learned on the collection
``auto``               ``flat`` while an exact scan meets the latency target, then IVF (see below)
=====================  ==========================================================================

Extra tokens: ``nprobe32`` (lists visited), ``ef128`` (HNSW search breadth), ``rerank200``
(candidates re-scored exactly), ``norerank``. Without ``nprobeN`` an IVF index measures how many
lists to visit when it is built, against exact search with the collection's own vectors as queries,
as a query-adaptive rule (:class:`ProbePolicy`, saved beside the index file) that reaches recall@10
>= :data:`TARGET_RECALL` and lets queries unlike the collection visit more lists.
Lossy codes (PCA, SQ, PQ) are re-ranked by default: the index proposes candidates and their exact
scores are computed from the memory-mapped raw vectors, so recall stays high while RAM holds only
codes.

An ANN file covers slots ``[0, covered)``; slots appended since (the *tail*) are scanned exactly
and merged, so adds are searchable at once. The file is only ever replaced whole (temp file, fsync,
rename), never modified in place: faiss' in-place writes did not survive ``kill -9`` in our trials.
Dead slots (removed or replaced items) stay in the file and are filtered by the store.
"""

from __future__ import annotations

import json
import math
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.durable import fsync_dir
from lookalike.errors import LookalikeError

#: Latency target for the exact scan: ``auto`` stays exact while n x dim is at most this many
#: floats (measured: 20k x 1280-d float32 takes ~4 ms on 2 cores; 100k x 1280 ~18 ms).
AUTO_EXACT_FLOATS = 20_000 * 1280
#: Kept for callers of the old constant (items of 1280-d vectors).
AUTO_EXACT_LIMIT = 20_000
_CHUNK = 32_768  # rows per add/transform step, so building never copies the whole vector file
#: Recall@10 (after re-ranking) an IVF index is tuned to when its spec names no ``nprobe``. Above
#: the 0.95 we promise, because the sample the probes are tuned on is small (256 queries).
TARGET_RECALL = 0.97
TUNE_QUERIES = 256


class IndexSpecError(LookalikeError, ValueError):
    """A factory string that does not describe an index we can build."""


@dataclass(frozen=True)
class IndexSpec:
    """A parsed factory string. ``kind`` is flat, hnsw, ivf, codes (exhaustive PQ/SQ) or pca-flat."""

    text: str
    kind: str
    pca: int = 0
    nlist: int = 0
    hnsw_m: int = 0
    encoding: str = "flat"  # flat | sq8 | sq6 | sq4 | fp16 | pq<M>
    nprobe: int = 0
    ef: int = 0
    rerank: int = 0  # 0: no exact re-ranking

    @property
    def lossy(self) -> bool:
        return bool(self.pca) or self.encoding != "flat"

    def faiss_factory(self) -> str:
        parts = [f"PCA{self.pca}"] if self.pca else []
        enc = {"flat": "Flat", "fp16": "SQfp16"}.get(self.encoding, self.encoding.upper())
        if self.kind == "hnsw":
            parts.append(f"HNSW{self.hnsw_m}")
        elif self.kind == "ivf":
            parts += [f"IVF{self.nlist}", enc]
        else:  # codes / pca-flat: exhaustive scan of compact codes
            parts.append(enc)
        return ",".join(parts)

    def min_train(self) -> int:
        """Fewest live vectors this index can be trained on (below that, search stays exact)."""
        need = 1
        if self.kind == "ivf":
            need = max(need, 4 * self.nlist)
        if self.encoding.startswith("pq"):
            need = max(need, 10_000)  # 256 centroids per sub-quantiser want ~39 x 256 points
        if self.pca:
            need = max(need, 2 * self.pca)
        return need

    def train_size(self) -> int:
        """Vectors sampled for training: enough for k-means/PQ, capped to keep builds short."""
        want = max(50_000, 40 * self.nlist) if self.kind == "ivf" else 50_000
        return min(want, 200_000)


@dataclass(frozen=True)
class ProbePolicy:
    """Query-adaptive IVF probing, measured at build time (:meth:`AnnIndex.tune_nprobe`).

    A query visits at least ``low`` and at most ``high`` lists: every list whose centroid scores
    within ``delta`` of its best centroid. ``recall`` and ``mean_probes`` are what the tuning sample
    got; they are saved beside the index file.
    """

    low: int
    high: int
    delta: float
    recall: float
    mean_probes: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"version": 1, **self.__dict__})

    @classmethod
    def from_json(cls, text: str) -> ProbePolicy:
        data = json.loads(text)
        data.pop("version", None)
        return cls(**data)


_TOKEN = re.compile(r"([a-z]+)(\d*)$")


def parse_spec(text: str, dim: int | None = None) -> IndexSpec:
    """Parse ``auto``, ``flat``, ``hnsw32``, ``ivf4096,sq8``, ``pca256,ivf1024,pq32,rerank200`` ...

    Raises :class:`IndexSpecError` with the reason for anything else.
    """
    clean = text.strip().lower().replace(" ", "")
    if clean in ("auto", "flat"):
        return IndexSpec(clean, clean)
    if clean == "hnsw":
        clean = "hnsw32"
    fields: dict[str, object] = {}
    rerank: int | None = None
    kind = ""
    for token in clean.split(","):
        m = _TOKEN.match(token)
        if not m:
            raise IndexSpecError(f"cannot parse {token!r} in index spec {text!r}")
        word, num = m.group(1), int(m.group(2)) if m.group(2) else 0
        if word == "pca" and not kind and num:
            fields["pca"] = num
        elif word == "ivf" and not kind and num:
            kind, fields["nlist"] = "ivf", num
        elif word == "hnsw" and not kind:
            kind, fields["hnsw_m"] = "hnsw", num or 32
        elif word in ("sq", "pq", "fp", "flat") and kind != "hnsw" and "encoding" not in fields:
            if word == "sq" and num not in (4, 6, 8):
                raise IndexSpecError(f"scalar quantiser must be sq4, sq6 or sq8, not {token!r}")
            if word == "pq" and not num:
                raise IndexSpecError("pq needs a number of sub-quantisers, e.g. pq64")
            if word == "fp" and num != 16:
                raise IndexSpecError(f"unknown encoding {token!r} (fp16?)")
            fields["encoding"] = "flat" if word == "flat" else f"{word}{num}"
            kind = kind or "codes"
        elif word == "nprobe" and num:
            fields["nprobe"] = num
        elif word == "ef" and num:
            fields["ef"] = num
        elif word == "rerank" and num:
            rerank = num
        elif word == "norerank" and not num:
            rerank = 0
        else:
            raise IndexSpecError(
                f"unexpected {token!r} in index spec {text!r}; examples: flat, hnsw32, ivf4096,sq8, "
                "ivf16384,pq64, pca256,ivf1024,sq8, with optional nprobe32 / ef128 / rerank200 / norerank"
            )
    if not kind:
        if "pca" in fields:
            kind, fields["encoding"] = "codes", "flat"  # PCA alone: exhaustive scan of reduced vectors
        else:
            raise IndexSpecError(f"index spec {text!r} names no index (flat, hnswM, ivfN or an encoding)")
    if kind == "codes" and fields.get("encoding", "flat") == "flat" and "pca" not in fields:
        return IndexSpec(clean, "flat")
    spec = IndexSpec(clean, kind, **fields)  # type: ignore[arg-type]
    if dim is not None:
        _check_dims(spec, dim)
    if rerank is None:
        rerank = (256 if spec.encoding.startswith("pq") else 128 if spec.pca else 64) if spec.lossy else 0
    return IndexSpec(**{**spec.__dict__, "rerank": rerank})


def _check_dims(spec: IndexSpec, dim: int) -> None:
    work_dim = spec.pca or dim
    if spec.pca and spec.pca >= dim:
        raise IndexSpecError(f"pca{spec.pca} does not reduce {dim}-d vectors")
    if spec.encoding.startswith("pq"):
        m = int(spec.encoding[2:])
        if work_dim % m:
            raise IndexSpecError(f"pq{m} needs the dimension ({work_dim}) to be a multiple of {m}")


def auto_spec(n_live: int, dim: int) -> IndexSpec:
    """The ``auto`` policy: exact while the scan meets the latency target, else IVF + SQ8 + re-rank.

    nlist ~ 4 sqrt(n) (a power of two): real collections are clustered, so k-means lists are very
    uneven, and with sqrt(n) lists at 1M vectors the few probed lists held 14% of the collection
    (33 ms a query); 4096 lists took it to ~3 ms (bench/bench_ann.py). How many lists a query visits
    is then measured at build time, per query (:meth:`AnnIndex.tune_nprobe`), not guessed. Full width, no PCA:
    at 1M vectors ``pca256,ivf1024,sq8`` lost recall (0.86-0.93); SQ8 codes take 1 byte per
    dimension (1M x 1280-d: 1.2 GB, memory-mapped).
    """
    if n_live * dim <= AUTO_EXACT_FLOATS:
        return IndexSpec("flat", "flat")
    nlist = int(min(65536, max(64, 2 ** round(math.log2(4 * math.sqrt(n_live))))))
    return parse_spec(f"ivf{nlist},sq8", dim)


class VectorIndex(ABC):
    kind: str

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots), each (n_queries, k'), best first; slot -1 marks an empty place."""


def _top_k(scores: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of (scores, slots) candidate matrices; -inf scores become slot -1."""
    n = scores.shape[1]
    if n == 0 or k <= 0:
        return np.zeros((len(scores), 0), np.float32), np.zeros((len(scores), 0), np.int64)
    k = min(k, n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(scores), 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    top_idx = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    out_slots = np.take_along_axis(slots, top_idx, axis=1).astype(np.int64)
    out_slots[~np.isfinite(top)] = -1
    return top, out_slots


class FlatIndex(VectorIndex):
    """Exact inner-product search over a (memory-mapped) matrix, masking dead slots."""

    kind = "flat"

    def __init__(self, matrix: np.ndarray, live: np.ndarray, start: int = 0) -> None:
        self.matrix = matrix
        self.live = live
        self.start = start  # scan slots [start, n): the tail of an ANN index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.matrix.shape[0]
        if n <= self.start or k <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        scores = queries @ self.matrix[self.start :].T  # (q, n): one BLAS call for every query at once
        scores[:, ~self.live[self.start : n]] = -np.inf
        slots = np.broadcast_to(np.arange(self.start, n, dtype=np.int64), scores.shape)
        return _top_k(scores, slots, k)


class AnnIndex(VectorIndex):
    """A faiss index over slots [0, covered), the exact tail after it, and exact re-ranking.

    ``trained`` is how many live vectors the coarse structure was trained on; the store retrains
    when the collection has grown far past it.
    """

    def __init__(self, spec: IndexSpec, index: object, covered: int, trained: int, path: Path | None = None) -> None:
        import faiss

        self._faiss = faiss
        self.spec = spec
        self.index = index
        self.covered = covered
        self.trained = trained
        self.path = path
        self.kind = spec.text
        self.matrix: np.ndarray = np.zeros((0, 1), np.float32)
        self.live: np.ndarray = np.zeros(0, bool)
        self.tuned: tuple[int, float] | None = None  # (probes, recall) when this process tuned it
        self.probes: ProbePolicy | None = None  # query-adaptive probing (IVF, measured at build)
        self._set_params()

    # -- build / persist ----------------------------------------------------------------------
    @classmethod
    def build(cls, spec: IndexSpec, matrix: np.ndarray, live: np.ndarray, n_slots: int, seed: int = 0) -> AnnIndex:
        """Train on a sample of live vectors, then add every slot below ``n_slots`` in chunks."""
        import faiss

        dim = matrix.shape[1]
        live_slots = np.flatnonzero(live[:n_slots])
        index = faiss.index_factory(dim, spec.faiss_factory(), faiss.METRIC_INNER_PRODUCT)
        if spec.kind == "hnsw":
            faiss.downcast_index(_inner(index)).hnsw.efConstruction = 80
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            size = min(len(live_slots), spec.train_size())
            sample = np.sort(rng.choice(live_slots, size=size, replace=False))
            index.train(np.ascontiguousarray(matrix[sample], dtype=np.float32))
        self = cls(spec, index, 0, len(live_slots))
        self.extend(matrix, n_slots)
        if spec.kind == "ivf" and not spec.nprobe:
            self.tune_nprobe(matrix, live, seed=seed)
        return self

    def tune_nprobe(
        self, matrix: np.ndarray, live: np.ndarray, target: float = TARGET_RECALL, seed: int = 0, k: int = 10
    ) -> tuple[int, float]:
        """Choose how many lists a query visits, by measurement; returns (typical probes, recall).

        Queries are live vectors of the collection itself (their own slot excluded), the truth is an
        exact scan. First the fewest fixed probes p (steps of ~sqrt 2) reaching ``target``; then a
        query-adaptive rule (:class:`ProbePolicy`): visit at least p/2 lists, plus every list whose
        centroid scores within ``delta`` of the query's best one, at most max(64, 8p) lists, with
        the smallest ``delta`` that reaches ``target`` again. A query from inside the collection has
        one clearly closest centroid and stops early; a query unlike the collection (an upload of
        something new) sees many near-equal centroids and visits more lists. Measured at 100k
        real-photo mixtures: held-out photos needed 32 fixed probes for recall 0.95 where the
        collection's own vectors needed 8 (docs/scale.md).
        """
        inner = self._faiss.downcast_index(_inner(self.index))
        live_slots = np.flatnonzero(live[: self.covered])
        rng = np.random.default_rng(seed + 1)
        picked = np.sort(rng.choice(live_slots, size=min(TUNE_QUERIES, len(live_slots)), replace=False))
        queries = np.ascontiguousarray(matrix[picked], dtype=np.float32)
        truth = _without(picked, exact_search(matrix[: self.covered], live[: self.covered], queries, k + 1)[1], k)
        self.attach(matrix[: self.covered], live[: self.covered])

        def recall() -> float:
            found = _without(picked, self.search(queries, k + 1)[1], k)
            return float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]))

        nlist = int(inner.nlist)
        ladder = sorted({round(2 ** (i / 2)) for i in range(2, 34)})  # 2, 3, 4, 6, 8, 11, 16, 23 ...
        self.probes = None
        fixed, got = nlist, 0.0
        for nprobe in [p for p in ladder if p < nlist] + [nlist]:
            inner.nprobe = nprobe
            got = recall()
            if got >= target:
                fixed = nprobe
                break
        self.tuned = (fixed, got)
        if self.spec.pca or fixed >= nlist:
            return self.tuned  # adaptive probing needs the raw query (no PCA) and spare lists
        low, high = max(1, fixed // 2), min(nlist, max(64, 8 * fixed))
        for delta in (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.14, 0.2, 0.3, 0.5, 1.0, 2.0):
            self.probes = ProbePolicy(low, high, delta, 0.0)
            self._set_params()
            got = recall()
            if got >= target:
                break
        mean_probes = self._probe_counts(queries).mean()
        self.probes = ProbePolicy(low, high, delta, got, float(mean_probes))
        self.tuned = (round(mean_probes), got)
        return self.tuned

    def extend(self, matrix: np.ndarray, n_slots: int) -> None:
        """Add slots [covered, n_slots) (dead ones too: positions must equal slot numbers)."""
        for start in range(self.covered, n_slots, _CHUNK):
            stop = min(n_slots, start + _CHUNK)
            self.index.add(np.ascontiguousarray(matrix[start:stop], dtype=np.float32))
        self.covered = n_slots

    def save(self, folder: Path, slug: str, vector_stem: str) -> Path:
        """Write atomically (temp file, fsync, rename, fsync folder); return the file."""
        target = folder / cache_name(slug, vector_stem, self.trained, self.covered)
        if self.probes is not None:  # beside the index, written first: the index file commits both
            _write_atomically(probe_file(target), self.probes.to_json().encode())
        else:
            probe_file(target).unlink(missing_ok=True)  # never let an older policy describe this file
        tmp = folder / f".{target.name}.tmp"
        self._faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(folder)
        self.path = target
        return target

    @classmethod
    def load(cls, spec: IndexSpec, path: Path, *, mmap: bool = True) -> AnnIndex:
        """Open a cache file; inverted lists are memory-mapped (read-only) where faiss supports it."""
        import faiss

        _, _, trained, covered = parse_cache_name(path.name)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and spec.kind == "ivf" else 0
        index = faiss.read_index(str(path), flags)
        if flags:
            _prefetch(path)
        if int(index.ntotal) != covered:
            raise ValueError(f"{path.name}: holds {index.ntotal} vectors, name says {covered}")
        loaded = cls(spec, index, covered, trained, path)
        sidecar = probe_file(path)
        if spec.kind == "ivf" and sidecar.exists():
            loaded.probes = ProbePolicy.from_json(sidecar.read_text())
            loaded._set_params()
        return loaded

    # -- search ---------------------------------------------------------------------------------
    def attach(self, matrix: np.ndarray, live: np.ndarray) -> AnnIndex:
        """Point at the store's current vectors and live mask (for the tail and re-ranking)."""
        self.matrix = matrix
        self.live = live
        return self

    @property
    def nprobe(self) -> int | None:
        """Lists an IVF query visits (None for other kinds)."""
        if self.spec.kind != "ivf":
            return None
        if self.adaptive:
            return round(self.probes.mean_probes)  # type: ignore[union-attr]
        return int(self._faiss.downcast_index(_inner(self.index)).nprobe)

    @property
    def adaptive(self) -> bool:
        return self.probes is not None and not self.spec.nprobe and not self.spec.pca

    def _probe_lists(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid scores, list numbers) per query under the adaptive rule; -1 = not visited."""
        policy = self.probes
        assert policy is not None
        inner = self._faiss.downcast_index(_inner(self.index))
        scores, lists = inner.quantizer.search(queries, min(int(inner.nlist), policy.high))
        far = scores < scores[:, :1] - policy.delta
        far[:, : policy.low] = False
        lists[far] = -1
        return scores, lists

    def _probe_counts(self, queries: np.ndarray) -> np.ndarray:
        return (self._probe_lists(queries)[1] >= 0).sum(axis=1)

    @property
    def tail(self) -> int:
        return max(0, self.matrix.shape[0] - self.covered)

    def _set_params(self) -> None:
        inner = self._faiss.downcast_index(_inner(self.index))
        if self.spec.kind == "ivf":
            nlist = int(inner.nlist)
            if self.spec.nprobe:
                inner.nprobe = min(nlist, self.spec.nprobe)
            elif self.probes is not None:
                inner.nprobe = min(nlist, self.probes.high)  # search_preassigned wants the widest
            elif int(inner.nprobe) <= 1:  # a file from before tuning (faiss' default is 1)
                inner.nprobe = min(nlist, max(16, nlist // 32))
        elif self.spec.kind == "hnsw":
            inner.hnsw.efSearch = self.spec.ef or 64

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        fetch = max(k, self.spec.rerank)
        if self.spec.kind == "hnsw":
            inner = self._faiss.downcast_index(_inner(self.index))
            inner.hnsw.efSearch = max(self.spec.ef or 64, fetch)
        if self.covered:
            if self.adaptive:
                centroid_scores, lists = self._probe_lists(queries)
                inner = self._faiss.downcast_index(_inner(self.index))
                scores, slots = inner.search_preassigned(queries, min(fetch, self.covered), lists, centroid_scores)
            else:
                scores, slots = self.index.search(queries, min(fetch, self.covered))
            slots = slots.astype(np.int64)
            if self.spec.rerank:
                scores = self._exact_scores(queries, slots)
            else:
                scores = np.where(slots >= 0, scores, -np.inf).astype(np.float32)
            dead = slots >= 0
            dead[dead] = ~self.live[slots[dead]]
            scores[dead] = -np.inf
        else:
            scores = np.zeros((len(queries), 0), np.float32)
            slots = np.zeros((len(queries), 0), np.int64)
        if self.tail:
            t_scores, t_slots = FlatIndex(self.matrix, self.live, start=self.covered).search(queries, fetch)
            scores = np.hstack([scores, np.where(t_slots >= 0, t_scores, -np.inf)])
            slots = np.hstack([slots, t_slots])
        return _top_k(scores, slots, fetch)

    def _exact_scores(self, queries: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Exact inner products of each query with its candidates, read from the memory map."""
        out = np.full(slots.shape, -np.inf, dtype=np.float32)
        for row, (query, cand) in enumerate(zip(queries, slots, strict=True)):
            ok = cand >= 0
            if ok.any():
                picked = cand[ok]
                order = np.argsort(picked)  # sorted reads are kinder to the page cache
                rows = np.empty((len(picked), self.matrix.shape[1]), dtype=np.float32)
                rows[order] = self.matrix[picked[order]]
                out[row, ok] = rows @ query
        return out

    def memory_bytes(self) -> int:
        """Approximate bytes of codes this index keeps (in RAM or in its memory-mapped file)."""
        return int(self.path.stat().st_size) if self.path and self.path.exists() else 0


def exact_search(
    matrix: np.ndarray, live: np.ndarray, queries: np.ndarray, k: int, block_rows: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over live rows, in blocks (never a queries x n score matrix)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, matrix.shape[0], block_rows):
        stop = min(matrix.shape[0], start + block_rows)
        scores, slots = FlatIndex(matrix[:stop], live[:stop], start=start).search(queries, k)
        best_s, best_i = _top_k(np.hstack([best_s, scores]), np.hstack([best_i, slots]), k)
    return best_s, best_i


def _without(own: np.ndarray, slots: np.ndarray, k: int) -> list[list[int]]:
    """Each row's first k slots other than the query's own slot (and empty places)."""
    return [[int(s) for s in row if s >= 0 and s != me][:k] for me, row in zip(own, slots, strict=True)]


def probe_file(index_file: Path) -> Path:
    """Where an index file's measured probe policy is kept."""
    return index_file.with_suffix(".probes.json")


def remove_cache(index_file: Path) -> None:
    """Delete an index cache file and what belongs to it."""
    index_file.unlink(missing_ok=True)
    probe_file(index_file).unlink(missing_ok=True)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _prefetch(path: Path) -> None:
    """Ask the kernel to read a memory-mapped file ahead in the background (opening stays fast)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
    except OSError:
        pass  # only a hint


def _inner(index: object) -> object:
    """The index under a PCA pre-transform (or the index itself)."""
    import faiss

    down = faiss.downcast_index(index)
    return down.index if isinstance(down, faiss.IndexPreTransform) else down


def slug_of(spec_text: str) -> str:
    """Cache-file key of a spec: search-time knobs (nprobe, ef, rerank) do not change the file."""
    keep = [t for t in spec_text.split(",") if not t.startswith(("nprobe", "ef", "rerank", "norerank"))]
    return "_".join(keep)


def cache_name(slug: str, vector_stem: str, trained: int, covered: int) -> str:
    return f"ann-{slug}-{vector_stem.replace('-', '')}-{trained}-{covered}.faiss"


def parse_cache_name(name: str) -> tuple[str, str, int, int]:
    """(slug, vector file stem, trained, covered) from an ``ann-...faiss`` name."""
    stem = name[len("ann-") : -len(".faiss")]
    slug, vector_stem, trained, covered = stem.rsplit("-", 3)
    return slug, vector_stem, int(trained), int(covered)

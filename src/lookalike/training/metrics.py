"""Retrieval metrics for training and benchmarks: Recall@k and mAP@R (Musgrave et al., 2020).

Kept here because ``lookalike.evaluation.metrics`` did not exist when training was written; both
functions use exact cosine similarity on L2-normalised rows, in query chunks so that a 10k x 60k
similarity matrix never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ranked(
    queries: np.ndarray,
    gallery: np.ndarray,
    depth: int,
    self_offset: int | None,
    chunk: int = 1024,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, top-depth gallery indices)`` per query chunk, best first.

    ``self_offset``: query ``i`` is gallery row ``self_offset + i`` and is excluded (leave-one-out).
    """
    depth = min(depth, gallery.shape[0] - (1 if self_offset is not None else 0))
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start : start + chunk] @ gallery.T
        if self_offset is not None:
            rows = np.arange(sims.shape[0])
            sims[rows, self_offset + start + rows] = -np.inf
        if depth == 1:
            yield start, np.argmax(sims, axis=1)[:, None]
        elif depth < sims.shape[1]:
            part = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
            yield start, np.take_along_axis(part, order, axis=1)
        else:
            yield start, np.argsort(-sims, axis=1, kind="stable")[:, :depth]


def retrieval_metrics(
    queries: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery: np.ndarray | None = None,
    gallery_labels: Sequence[int] | np.ndarray | None = None,
    *,
    ks: Sequence[int] = (1,),
    map_at_r: bool = True,
    self_offset: int | None = None,
) -> dict[str, float]:
    """Recall@k (a same-label item among the top k) and mAP@R over the queries.

    Without ``gallery`` the queries search each other leave-one-out. With a gallery, pass
    ``self_offset`` when the queries are rows ``self_offset..`` of it, so that each query does not
    find itself. mAP@R: for a query with R relevant gallery items, the mean over ranks i <= R of
    precision@i counted at the relevant ranks only, divided by R; it rewards putting *all* same-label
    items first, not just one.
    """
    q = _normalize(queries)
    ql = np.asarray(query_labels)
    if gallery is None:
        g, gl, self_offset = q, ql, 0
    else:
        g, gl = _normalize(gallery), np.asarray(gallery_labels if gallery_labels is not None else [])
    if g.shape[0] != gl.shape[0] or q.shape[0] != ql.shape[0]:
        raise ValueError("embeddings and labels differ in length")
    classes, counts = np.unique(gl, return_counts=True)
    relevant = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    r_per_query = np.array([relevant.get(label, 0) for label in ql.tolist()], dtype=np.int64)
    if self_offset is not None:
        r_per_query -= 1
    valid = r_per_query > 0  # queries with no same-label item in the gallery are not scorable
    if not valid.any():
        raise ValueError("no query has a same-label item in the gallery")
    depth = max(max(ks), int(r_per_query.max()) if map_at_r else 1)
    hits_at = {k: 0 for k in ks}
    ap_sum = 0.0
    for start, top in _ranked(q, g, depth, self_offset):
        same = gl[top] == ql[start : start + top.shape[0], None]
        for k in ks:
            hits_at[k] += int(same[:, :k].any(axis=1)[valid[start : start + top.shape[0]]].sum())
        if map_at_r:
            for row, r in zip(same, r_per_query[start : start + top.shape[0]], strict=True):
                if r <= 0:
                    continue
                rel = row[:r]
                precision = np.cumsum(rel) / np.arange(1, r + 1)
                ap_sum += float((precision * rel).sum() / r)
    n = int(valid.sum())
    out = {f"recall@{k}": hits_at[k] / n for k in ks}
    if map_at_r:
        out["map@r"] = ap_sum / n
    out["queries"] = float(n)
    return out


def recall_at_k(queries: np.ndarray, labels: Sequence[int] | np.ndarray, k: int = 1) -> float:
    """Leave-one-out Recall@k of ``queries`` against each other."""
    return retrieval_metrics(queries, labels, ks=(k,), map_at_r=False)[f"recall@{k}"]

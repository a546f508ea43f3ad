"""Retrieval metrics: Recall@K, mAP@R, per-class tables, pair precision/recall/F1 and AUROC.

Definitions follow Musgrave, Belongie and Lim, "A Metric Learning Reality Check" (ECCV 2020), so the
numbers are comparable with published metric-learning results:

* **Recall@K** (a.k.a. Precision@1 for K=1 in that paper): the fraction of queries whose K nearest
  neighbours (the query itself excluded) contain at least one item of the query's class.
* **mAP@R**: for a query whose class has R *other* items, look at its R nearest neighbours and take
  ``AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i)`` where ``P(i)`` is the precision of the top i and
  ``rel(i)`` is 1 when the i-th neighbour has the query's class. Unlike plain mAP it does not
  reward a ranking that puts the class's members at positions far beyond R; unlike R-precision it
  rewards putting them first. Queries whose class has no other item (R = 0) cannot be scored and are
  left out of every metric (and counted in ``skipped``).

Everything works from ``neighbor_labels``: a ``(n_queries, depth)`` array with the labels of each
query's neighbours, best first. :func:`knn` builds it from vectors by exact inner product.

**Ties** are broken by item order: among neighbours with exactly the same score the lower index
ranks first, so the same vectors in the same order always give the same numbers, whatever else is
computed alongside. (``argpartition`` alone leaves tied items in an arbitrary order; hash models'
scores take only 65 values, so their ties are common: phash on 2,000 Fashion-MNIST images scored
Recall@1 0.6645 that way against 0.6675.) The order is the caller's: ``lookalike eval`` sorts by
class folder, then path. Rows are compared by cosine (:func:`unit_rows`).

This is the only implementation: ``lookalike eval``, the validation Recall@1 that ``lookalike train``
reports each epoch and the benchmarks all call :func:`leave_one_out`, so they agree on the same
vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.models.base import l2_normalize

DEFAULT_KS = (1, 5, 10)
#: Rows whose norm is this close to 1 count as unit rows and are scored as they are (see ``unit_rows``).
_UNIT_TOLERANCE = 1e-6


@dataclass
class RetrievalScores:
    """Scores of one leave-one-out run. ``recall`` maps K to Recall@K; ``per_class`` maps a class
    name to ``{"n", "recall@1", "recall@K"..., "map@r"}`` over that class's queries."""

    recall: dict[int, float]
    map_at_r: float
    n_queries: int
    skipped: int = 0
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f"recall@{k}": round(v, 6) for k, v in sorted(self.recall.items())}
        out["map@r"] = round(self.map_at_r, 6)
        out["n_queries"] = self.n_queries
        out["skipped"] = self.skipped
        out["per_class"] = {
            name: {key: (round(val, 6) if isinstance(val, float) else val) for key, val in row.items()}
            for name, row in self.per_class.items()
        }
        return out


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so that inner product is cosine; float32.

    Rows that are unit already (every ``Embedder``'s output) are returned as they are: dividing by a
    norm of 1 +- 1e-7 would only move scores by float rounding and reorder near-ties. Others (float16
    cached features, raw network activations) are normalised.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if len(v) and np.abs(np.linalg.norm(v, axis=1) - 1.0).max() > _UNIT_TOLERANCE:
        return l2_normalize(v)
    return v


def knn(
    vectors: np.ndarray,
    k: int,
    *,
    queries: np.ndarray | None = None,
    query_rows: np.ndarray | None = None,
    exclude_self: bool = True,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` neighbours by inner product: ``(indices, scores)``, each ``(n_queries, k)``.

    With ``queries=None`` every row of ``vectors`` is a query, or only the rows ``query_rows`` (the
    validation images of a gallery that also holds the training images); a row is (``exclude_self``)
    never its own neighbour. Ties are broken by the lower index, so the result does not depend on BLAS
    order noise only when scores tie exactly. ``k`` is clipped to the number of available neighbours.
    """
    base = np.ascontiguousarray(vectors, dtype=np.float32)
    self_query = queries is None
    if queries is not None and query_rows is not None:
        raise ValueError("give queries (outside vectors) or query_rows (rows of vectors), not both")
    rows_of = np.arange(len(base)) if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    if queries is not None:
        qs = np.ascontiguousarray(queries, dtype=np.float32)
    else:
        qs = base if query_rows is None else base[rows_of]
    available = len(base) - (1 if self_query and exclude_self else 0)
    k = max(0, min(k, available))
    n = len(qs)
    indices = np.zeros((n, k), dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    if k == 0:
        return indices, scores
    for start in range(0, n, chunk):
        # A copy of the block: ``base @ base.T`` on one buffer takes BLAS's symmetric product (syrk),
        # which rounds differently from the general one, so a query's scores (and which near-ties
        # become exact ties) would depend on whether the other rows query too.
        sims = np.array(qs[start : start + chunk]) @ base.T
        if self_query and exclude_self:
            sims[np.arange(len(sims)), rows_of[start : start + chunk]] = -np.inf
        if k < sims.shape[1]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
        part_scores = np.take_along_axis(sims, part, axis=1)
        # sort by (-score, index): lexsort's last key is the primary one
        order = np.lexsort((part, -part_scores), axis=1)
        top_idx = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(part_scores, order, axis=1)
        # argpartition picks an arbitrary subset among items tied with the k-th score; make it the
        # lowest indices so ties are deterministic (rare with float embeddings, common with hashes).
        kth = top_scores[:, -1:]
        uneven = np.nonzero((sims == kth).sum(axis=1) != (top_scores == kth).sum(axis=1))[0]
        for row in uneven:
            full = np.lexsort((np.arange(sims.shape[1]), -sims[row]))[:k]
            top_idx[row], top_scores[row] = full, sims[row, full]
        indices[start : start + chunk] = top_idx
        scores[start : start + chunk] = top_scores
    return indices, scores


def recall_at_k(neighbor_labels: np.ndarray, query_labels: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 when any of the first ``k`` neighbours shares the query's label, else 0.0."""
    if k < 1:
        raise ValueError("k must be at least 1")
    top = np.asarray(neighbor_labels)[:, :k]
    return (top == np.asarray(query_labels)[:, None]).any(axis=1).astype(np.float64)


def average_precision_at_r(neighbor_labels: Sequence[object] | np.ndarray, label: object, r: int) -> float:
    """AP@R of one query: ``(1/R) * sum_{i<=R} precision@i * rel(i)`` over its first R neighbours."""
    if r < 1:
        raise ValueError("R must be at least 1 (a class with no other member cannot be scored)")
    top = np.asarray(neighbor_labels)[:r]
    if len(top) < r:
        raise ValueError(f"need at least R={r} neighbours, got {len(top)}")
    rel = (top == label).astype(np.float64)
    precision_at_i = np.cumsum(rel) / np.arange(1, r + 1)
    return float((precision_at_i * rel).sum() / r)


def map_at_r(neighbor_labels: np.ndarray, query_labels: np.ndarray, r_per_query: np.ndarray) -> np.ndarray:
    """Per query AP@R (vectorised); ``r_per_query[i]`` is how many *other* items share i's label.

    Queries with R = 0 get NaN (callers leave them out)."""
    neighbor_labels = np.asarray(neighbor_labels)
    query_labels = np.asarray(query_labels)
    r = np.asarray(r_per_query, dtype=np.int64)
    depth = neighbor_labels.shape[1]
    if len(r) and r.max(initial=0) > depth:
        raise ValueError(f"need {r.max()} neighbours per query for mAP@R, got {depth}")
    rel = (neighbor_labels == query_labels[:, None]).astype(np.float64)
    positions = np.arange(1, depth + 1)
    rel[positions[None, :] > r[:, None]] = 0.0  # only the first R neighbours count
    precision_at_i = np.cumsum(rel, axis=1) / positions[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (precision_at_i * rel).sum(axis=1) / r
    out[r == 0] = np.nan
    return out


def retrieval_scores(
    neighbor_labels: np.ndarray,
    query_labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    class_sizes: np.ndarray | None = None,
    with_map_at_r: bool = True,
) -> RetrievalScores:
    """Recall@K for every K, mAP@R and a per-class table from leave-one-out neighbour labels.

    ``query_labels`` are integer labels (``0..C-1``) of the queries. ``class_sizes[c]`` is how many
    items of class c the queries searched (themselves included); by default the queries are the whole
    collection, so it is counted from ``query_labels``. R is class size - 1. ``neighbor_labels`` must
    hold at least ``max(max(ks), largest R)`` columns (fewer only when the collection is smaller than
    that; ``max(ks)`` without mAP@R, whose value is then NaN).
    """
    query_labels = np.asarray(query_labels, dtype=np.int64)
    neighbor_labels = np.asarray(neighbor_labels, dtype=np.int64)
    n = len(query_labels)
    per_query_class = np.bincount(query_labels) if n else np.zeros(0, dtype=np.int64)
    counts = per_query_class if class_sizes is None else np.asarray(class_sizes, dtype=np.int64)
    r = counts[query_labels] - 1 if n else np.zeros(0, dtype=np.int64)
    valid = r > 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(counts))]
    recall_rows = {k: recall_at_k(neighbor_labels, query_labels, min(k, max(1, neighbor_labels.shape[1]))) for k in ks}
    ap = map_at_r(neighbor_labels, query_labels, np.where(valid, r, 0)) if with_map_at_r else np.full(n, np.nan)

    def summarise(mask: np.ndarray) -> tuple[dict[int, float], float]:
        if not mask.any():
            return {k: float("nan") for k in ks}, float("nan")
        return {k: float(v[mask].mean()) for k, v in recall_rows.items()}, float(ap[mask].mean())

    recall, mean_ap = summarise(valid)
    per_class: dict[str, dict[str, float]] = {}
    for label in range(len(per_query_class)):
        mask = valid & (query_labels == label)
        if per_query_class[label] == 0:
            continue
        rec, cls_ap = summarise(mask)
        row: dict[str, float] = {"n": int(per_query_class[label])}  # type: ignore[dict-item]
        row.update({f"recall@{k}": v for k, v in rec.items()})
        row["map@r"] = cls_ap
        per_class[names[label]] = row
    return RetrievalScores(recall, mean_ap, int(valid.sum()), int((~valid).sum()), per_class)


def leave_one_out(
    vectors: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    query_rows: np.ndarray | None = None,
    with_map_at_r: bool = True,
) -> RetrievalScores:
    """Every item queries all the others: Recall@K, mAP@R and per-class scores by exact cosine.

    ``query_rows``: only these rows query (still searching all the others), e.g. the validation
    images of a training run in a gallery of validation + training images; per-class ``n`` then
    counts queries. ``with_map_at_r=False`` skips mAP@R (NaN), which needs as many neighbours as the
    largest class: a per-epoch Recall@1 needs one. Ties: see the module docstring.
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels) if len(labels) else np.zeros(1, dtype=np.int64)
    depth = max(max(ks), int(counts.max()) - 1 if with_map_at_r else 0)
    indices, _ = knn(unit_rows(vectors), depth, query_rows=query_rows)
    query_labels = labels if query_rows is None else labels[np.asarray(query_rows, dtype=np.int64)]
    return retrieval_scores(
        labels[indices],
        query_labels,
        class_names=class_names,
        ks=ks,
        class_sizes=None if query_rows is None else counts,
        with_map_at_r=with_map_at_r,
    )


# -- duplicate detection and no-match -----------------------------------------------------------------
@dataclass(frozen=True)
class PairScores:
    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "tp": self.true_positives,
            "fp": self.false_positives,
            "fn": self.false_negatives,
        }


def pair_scores(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> PairScores:
    """Precision/recall/F1 of predicted duplicate pairs against the true ones (pairs are unordered:
    ``(a, b)`` and ``(b, a)`` are the same pair). Empty predictions have precision 1 by convention
    (nothing claimed, nothing wrong); an empty truth has recall 1."""
    norm_pred = {(min(a, b), max(a, b)) for a, b in predicted if a != b}
    norm_true = {(min(a, b), max(a, b)) for a, b in truth if a != b}
    tp = len(norm_pred & norm_true)
    fp = len(norm_pred - norm_true)
    fn = len(norm_true - norm_pred)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(precision, recall, f1, tp, fp, fn)


def pairs_above(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    """All unordered pairs ``(i, j), i < j`` whose inner product is ``>= threshold``."""
    v = np.asarray(vectors, dtype=np.float32)
    sims = v @ v.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def best_f1_threshold(vectors: np.ndarray, truth: set[tuple[int, int]]) -> tuple[float, PairScores]:
    """The threshold (one of the observed pair scores) that maximises pair F1, and its scores.

    This is an *oracle* choice (it looks at the labels): report it as the best reachable F1, next to
    the F1 at a threshold fixed in advance."""
    v = np.asarray(vectors, dtype=np.float32)
    sims = v @ v.T
    iu, ju = np.triu_indices(len(v), k=1)
    scores = sims[iu, ju]
    norm_true = {(min(a, b), max(a, b)) for a, b in truth}
    is_true = np.fromiter(
        ((a, b) in norm_true for a, b in zip(iu.tolist(), ju.tolist(), strict=True)), dtype=bool, count=len(iu)
    )
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], is_true[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    # only cut after the last of a run of equal scores (a threshold keeps all ties)
    last = np.r_[s[1:] != s[:-1], True]
    total_true = len(norm_true)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(total_true, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    f1 = np.where(last, f1, -1.0)
    if len(f1) == 0:
        return 1.0, pair_scores(set(), truth)
    best = int(np.argmax(f1))
    threshold = float(s[best])
    return threshold, pair_scores(pairs_above(v, threshold), truth)


def auroc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: P(a random positive scores higher than a random negative), ties
    counting one half (the Mann-Whitney U statistic divided by n_pos * n_neg)."""
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv), dtype=np.float64)
    sorted_v = allv[order]
    # average ranks over ties (1-based)
    starts = np.r_[0, np.nonzero(sorted_v[1:] != sorted_v[:-1])[0] + 1]
    ends = np.r_[starts[1:], len(allv)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))

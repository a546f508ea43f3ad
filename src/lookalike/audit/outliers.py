"""Odd ones out: pictures unlike every *other* picture of the collection.

The statistic is the one "no similar images" thresholds (:mod:`lookalike.search.no_match`): an item's
k-th nearest similarity, read in the model's no-match view, with ``k = auto_k(n)``. Two differences
make it an audit of the collection rather than a test of a query:

* **Copies do not vouch for each other.** A scraped folder holds the same "pictures coming soon"
  placeholder many times; counting its copies as neighbours would make it look typical. Neighbours of
  the same content (sha256) or of the same near-duplicate group are skipped, so a family of copies is
  judged by its nearest *different* picture.
* **A robust fence instead of a quantile.** The query rule accepts 95% of the collection's own items,
  i.e. it would flag 5% of any collection, odd or not. The audit flags an item when its statistic lies
  far below the collection's typical one: ``score = (median - statistic) / (1.4826 * MAD)``, a robust
  z-score, flagged at or above :data:`DEFAULT_OUTLIER_CUTOFF` (chosen on the tuning part of
  ``bench/bench_audit.py``). Outliers do not move the median or the MAD, so the rule finds 1 or 100
  odd ones alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lookalike.models.base import NoMatchView
from lookalike.search.no_match import NoMatchRule, auto_k
from lookalike.store.base import Store, VectorRows

#: Robust z-score from which an item is flagged as an odd one out.
DEFAULT_OUTLIER_CUTOFF = 3.5
#: Below this many distinct pictures nothing is flagged: there is no "rest of the collection".
MIN_PICTURES = 10
#: At most this many neighbours are fetched per item (copies of it skipped, then k and the view's pool).
MAX_WIDTH = 256
_BLOCK = 512


def neighbour_statistic(
    store: Store,
    rows: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    family_of: Mapping[int, int],
    family_size: Mapping[int, int],
    k: int,
    view: NoMatchView | None,
) -> np.ndarray:
    """For each of ``rows``: the k-th similarity to items of *other* families, as the no-match rule
    reads it (``-inf`` when no other family was found)."""
    rule = NoMatchRule("knn", 0.0, k, view)  # used to read, not to decide
    out = np.full(len(rows), -np.inf, dtype=np.float64)
    for start in range(0, len(rows), _BLOCK):
        block = rows[start : start + _BLOCK]
        own = [family_of[int(ids[r])] for r in block]
        skip = max(family_size[f] for f in own)
        width = min(MAX_WIDTH, rule.neighbours + skip, len(ids))
        queries = vectors[block]
        for j, hits in enumerate(store.search(queries, width)):
            kept = [h for h in hits if family_of.get(h.id, -1) != own[j]][: rule.neighbours]
            if kept:
                out[start + j] = rule.statistic(rule.read(store, queries[j], kept))
    return out


def robust_scores(statistic: np.ndarray) -> np.ndarray:
    """``(median - s) / (1.4826 * MAD)`` of each value: how far below the typical item it lies."""
    finite = statistic[np.isfinite(statistic)]
    if len(finite) == 0:
        return np.zeros_like(statistic)
    median = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - median)))
    spread = max(mad, 1e-3)  # identical neighbours everywhere: avoid dividing by ~0
    lowest = float(finite.min()) if len(finite) else 0.0
    filled = np.where(np.isfinite(statistic), statistic, lowest)
    return (median - filled) / spread


def default_k(n_pictures: int) -> int:
    """The k of the no-match rule for a collection of this many distinct pictures."""
    return max(1, min(auto_k(n_pictures), n_pictures - 1))

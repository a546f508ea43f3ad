"""Odd ones out: pictures unlike every *other* picture of the collection.

The statistic is the one "no similar images" thresholds (:mod:`lookalike.search.no_match`): an item's
k-th nearest similarity, read in the model's no-match view, with ``k = auto_k(n)``. Two differences
make it an audit of the collection rather than a test of a query:

* **Copies do not vouch for each other.** A scraped folder holds the same "pictures coming soon"
  placeholder many times; counting its copies as neighbours would make it look typical. Neighbours of
  the same content (sha256) or of the same near-duplicate group are skipped, so a family of copies is
  judged by its nearest *different* picture.
* **A robust fence instead of a quantile.** The query rule accepts 95% of the collection's own items,
  i.e. it would flag 5% of any collection, odd or not. The audit scores how far an item's statistic
  lies below the collection's typical one, ``(median - statistic) / (1.4826 * MAD)`` (a robust
  z-score: the odd ones do not move the median or the MAD, so 1 or 100 of them are found alike).
* **k of at least** :data:`MIN_K`: odd pictures of one kind (three different placeholders) are close
  to each other; with k = 1 each would vouch for the next. The k-th neighbour is a real photo again.
* **The kind of picture counts too.** An ImageNet network maps drawings (cards, diagrams,
  screenshots) near photographs (similarity ~0.55 where photos of one kind reach ~0.6-0.7), so
  the embedding alone does not tell them apart. Their pixels do: a drawing has a few flat tones where
  a photo has a rich histogram. The second part of the score is the robust z-score of the item's grey
  entropy *below* the collection's (0 when richer), weighted by :data:`TONE_WEIGHT`; relative to the
  collection, so in a collection of drawings a drawing is typical.

``score = knn_z + TONE_WEIGHT * max(0, tone_z)``, flagged at or above :data:`DEFAULT_OUTLIER_CUTOFF`.
k, the weight and the cut-off were chosen on the tuning part of ``bench/bench_audit.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lookalike.models.base import NoMatchView
from lookalike.search.no_match import NoMatchRule, auto_k
from lookalike.store.base import Store, VectorRows

#: Score from which an item is flagged as an odd one out.
DEFAULT_OUTLIER_CUTOFF = 3.5
#: The smallest k of the k-NN statistic (the no-match rule's auto_k grows from 1 with the collection).
MIN_K = 3
#: Weight of the tonal part of the score (see the module docstring).
TONE_WEIGHT = 0.2
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
    return neighbour_statistics(store, rows, ids, vectors, family_of, family_size, [k], view)[k]


def neighbour_statistics(
    store: Store,
    rows: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    family_of: Mapping[int, int],
    family_size: Mapping[int, int],
    ks: Sequence[int],
    view: NoMatchView | None,
) -> dict[int, np.ndarray]:
    """:func:`neighbour_statistic` for several k from one search (k -> one value per row)."""
    rule = NoMatchRule("knn", 0.0, max(ks), view)  # used to read, not to decide
    out = {k: np.full(len(rows), -np.inf, dtype=np.float64) for k in ks}
    for start in range(0, len(rows), _BLOCK):
        block = rows[start : start + _BLOCK]
        own = [family_of[int(ids[r])] for r in block]
        skip = max(family_size[f] for f in own)
        width = min(MAX_WIDTH, rule.neighbours + skip, len(ids))
        queries = vectors[block]
        for j, hits in enumerate(store.search(queries, width)):
            kept = [h for h in hits if family_of.get(h.id, -1) != own[j]][: rule.neighbours]
            if kept:
                read = rule.read(store, queries[j], kept)
                for k in ks:
                    out[k][start + j] = float(read[min(k, len(read)) - 1])
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


def tone_scores(entropy: np.ndarray) -> np.ndarray:
    """How far each item's grey entropy lies *below* the collection's typical one (robust z, >= 0);
    NaN (not measured) counts as typical."""
    finite = entropy[np.isfinite(entropy)]
    if len(finite) == 0:
        return np.zeros_like(entropy)
    median = float(np.median(finite))
    spread = max(1.4826 * float(np.median(np.abs(finite - median))), 0.05)
    return np.where(np.isfinite(entropy), np.maximum(0.0, (median - entropy) / spread), 0.0)


def default_k(n_pictures: int) -> int:
    """k for a collection of this many distinct pictures: the no-match rule's, at least :data:`MIN_K`."""
    return max(1, min(max(MIN_K, auto_k(n_pictures)), n_pictures - 1))

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
* **Odd ones do not vouch for each other.** Odd pictures of one kind (three different placeholders)
  are close to each other; with k = 1 each would vouch for the next. So k is at least :data:`MIN_K`
  (of 3-10 odd pictures of a kind, the k-th neighbour is a real photo again), and a second pass
  reads the statistic again without the first pass's suspects as neighbours
  (:func:`odd_one_scores`).
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

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from lookalike.models.base import NoMatchView
from lookalike.search.no_match import NoMatchRule, auto_k
from lookalike.store.base import Store, VectorRows

#: Score from which an item is flagged as an odd one out (chosen on the tuning part of bench_audit.py).
DEFAULT_OUTLIER_CUTOFF = 2.5
#: The smallest k of the k-NN statistic (the no-match rule's auto_k grows from 1 with the collection).
MIN_K = 8
#: Weight of the tonal part of the score (see the module docstring).
TONE_WEIGHT = 0.3
#: Pass 1 takes pictures scoring at least this for suspects (see :func:`odd_one_scores`). Fixed, not
#: tied to the cut-off, so that changing the cut-off only moves the line, not the scores.
SUSPECT_AT = 1.75
#: Below this many distinct pictures nothing is flagged: there is no "rest of the collection".
MIN_PICTURES = 10
#: At most this many neighbours are fetched per item (copies of it skipped, then k and the view's pool).
MAX_WIDTH = 256
_BLOCK = 512


@dataclass(frozen=True)
class Neighbourhood:
    """Where an item's neighbours are read: the store and its vectors, which items are one picture
    (``family_of``: item id -> family, copies share one), k, and the no-match view."""

    store: Store
    ids: np.ndarray
    vectors: np.ndarray | VectorRows
    family_of: Mapping[int, int]
    family_size: Mapping[int, int]
    k: int
    view: NoMatchView | None

    def statistic(
        self, rows: np.ndarray, exclude: Collection[int] = (), neighbours_out: list[list[int]] | None = None
    ) -> np.ndarray:
        """For each of ``rows``: the k-th similarity to items of *other* families (and not in
        ``exclude``), as the no-match rule reads it; ``-inf`` when there is none. ``neighbours_out``
        receives the ids each row's statistic was read from."""
        rule = NoMatchRule("knn", 0.0, self.k, self.view)  # used to read, not to decide
        family_of, ids = self.family_of, self.ids
        out = np.full(len(rows), -np.inf, dtype=np.float64)
        for start in range(0, len(rows), _BLOCK):
            block = rows[start : start + _BLOCK]
            own = [family_of[int(ids[r])] for r in block]
            skip = max(self.family_size[f] for f in own) + len(exclude)
            width = min(MAX_WIDTH, rule.neighbours + skip, len(ids))
            queries = self.vectors[block]
            for j, hits in enumerate(self.store.search(queries, width)):
                kept = [h for h in hits if family_of.get(h.id, -1) != own[j] and h.id not in exclude]
                kept = kept[: rule.neighbours]
                if neighbours_out is not None:
                    neighbours_out.append([h.id for h in kept])
                if kept:
                    out[start + j] = rule.statistic(rule.read(self.store, queries[j], kept))
        return out


def odd_one_scores(
    hood: Neighbourhood,
    rows: np.ndarray,
    entropy: np.ndarray,
    tone_weight: float = TONE_WEIGHT,
    suspect_at: float = SUSPECT_AT,
) -> tuple[np.ndarray, np.ndarray]:
    """``(knn_z, tone_z)`` of each of ``rows`` (one row per distinct picture), in two passes.

    Pass 1 scores everyone. Odd pictures of one kind are near each other, so each vouches for the
    others; pass 2 therefore reads again, without the *suspects* of pass 1 (score at or above
    ``suspect_at``) as neighbours, the rows that had a suspect among their neighbours (the suspects
    first of all). Photos rarely do, so the typical statistic, and the fence, barely move.
    """
    tone_z = tone_scores(entropy)
    read_from: list[list[int]] = []
    stat = hood.statistic(rows, (), read_from)
    first = robust_scores(stat) + tone_weight * tone_z
    ids, family_of = hood.ids, hood.family_of
    suspects = {int(ids[row]) for row, score in zip(rows.tolist(), first.tolist(), strict=True) if score >= suspect_at}
    suspect_families = {family_of[i] for i in suspects}
    suspect_items = {item for item, family in family_of.items() if family in suspect_families}
    again = [j for j, near in enumerate(read_from) if set(near) & suspect_items]
    if again:
        stat[again] = hood.statistic(rows[np.asarray(again, dtype=np.int64)], suspect_items)
    return robust_scores(stat), tone_z


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

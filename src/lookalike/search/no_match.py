"""Deciding that nothing in the collection is alike ("no similar images"): one rule, one ``decide``.

Two kinds of rule, both built by :meth:`NoMatchRule.for_collection` from what the index stores:

* ``fixed``: the original app's rule, the best similarity below a fixed cut-off
  (:data:`FIXED_NO_MATCH_BELOW`). Used when the collection is not calibrated.
* ``knn``: k-NN out-of-distribution detection (Sun et al., ICML 2022): the query's k-th nearest
  similarity below the collection's own k-th-NN similarities at an acceptance rate (default: 95%
  of the collection's own items would be accepted).

A model may name a :class:`~lookalike.models.base.NoMatchView` (the part of its vector the rule
reads); then the rule re-scores a query's ``k + NO_MATCH_POOL`` nearest items in that view
(:meth:`NoMatchRule.read`) and decides on those scores. Search, calibration and ``lookalike eval``
all use this module, so the rule that ships is the rule that is measured and tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lookalike.models.base import NoMatchView
from lookalike.store.base import Hit, Store

if TYPE_CHECKING:
    from lookalike.search.calibration import Calibration

#: The original app's cut-off on the best cosine similarity.
FIXED_NO_MATCH_BELOW = 0.5
NO_MATCH_RULES = ("auto", "knn", "fixed")
#: Fraction of the collection's own items the k-NN rule accepts as "in distribution".
DEFAULT_ACCEPT = 0.95
#: k of the k-NN rule when not chosen from the collection size (see :func:`auto_k`).
DEFAULT_KNN_K = 1
#: With a no-match view: how many nearest items beyond k are re-scored in the view.
NO_MATCH_POOL = 8


def auto_k(n_items: int) -> int:
    """k for the k-NN rule: 1 for small collections, growing with size (Sun et al. scale k with n).

    A k-th neighbour far down a small collection is noise: bench/bench_ood.py measured k=1 best on a
    few hundred photos, so k grows only by one per 200 items, capped at 10.
    """
    return max(1, min(10, n_items // 200))


def knn_threshold(own_kth_scores: Sequence[float] | np.ndarray, accept: float = DEFAULT_ACCEPT) -> float:
    """The k-th-NN similarity below which a query is out of distribution: the collection's own
    k-th-NN scores' ``1 - accept`` quantile (so ``accept`` of its own items pass)."""
    if not 0.0 < accept <= 1.0:
        raise ValueError("the acceptance rate must be in (0, 1]")
    return float(np.quantile(np.asarray(own_kth_scores, dtype=np.float64), 1.0 - accept, method="lower"))


@dataclass(frozen=True)
class NoMatchDecision:
    no_match: bool
    #: what the rule compared with its threshold (the best score, or the k-th)
    score: float
    #: for results: which rule decided, and its reading
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class NoMatchRule:
    """``kind`` ``fixed`` (best score < threshold) or ``knn`` (k-th score < threshold)."""

    kind: str
    threshold: float
    k: int = 1
    view: NoMatchView | None = None
    #: why a requested k-NN rule fell back to the fixed one
    note: str | None = None

    @classmethod
    def fixed(cls, threshold: float = FIXED_NO_MATCH_BELOW, view: NoMatchView | None = None) -> NoMatchRule:
        return cls("fixed", threshold, 1, view)

    @classmethod
    def knn(
        cls,
        k: int,
        own_kth_scores: Sequence[float] | np.ndarray,
        accept: float = DEFAULT_ACCEPT,
        view: NoMatchView | None = None,
    ) -> NoMatchRule:
        """The k-NN rule for a collection whose own k-th-NN scores are ``own_kth_scores``."""
        return cls("knn", knn_threshold(own_kth_scores, accept), k, view)

    @classmethod
    def for_collection(
        cls,
        calibration: Calibration | None,
        rule: str = "auto",
        accept: float = DEFAULT_ACCEPT,
        fixed_below: float = FIXED_NO_MATCH_BELOW,
    ) -> NoMatchRule:
        """The rule a search applies: ``auto`` is k-NN when the collection is calibrated, else fixed."""
        if rule not in NO_MATCH_RULES:
            raise ValueError(f"unknown no-match rule {rule!r}; choose one of {', '.join(NO_MATCH_RULES)}")
        view = calibration.view if calibration is not None else None
        if rule != "fixed" and calibration is not None and calibration.ok and calibration.knn_scores:
            return cls.knn(calibration.knn_k, calibration.knn_scores, accept, view)
        note = None
        if rule == "knn":
            note = calibration.reason if calibration is not None else "this index has no calibration yet"
        return cls("fixed", fixed_below, 1, view, note)

    @property
    def neighbours(self) -> int:
        """How many nearest items a query must bring for the rule to read."""
        return self.k + (NO_MATCH_POOL if self.view is not None else 0)

    def read(self, store: Store, query: np.ndarray, hits: Sequence[Hit]) -> np.ndarray:
        """The scores the rule reads for one query's ``hits`` (its nearest few), best first.

        Without a view these are the hits' own scores. With one, the hits' stored vectors and the
        query are read in the view and re-scored.
        """
        if self.view is None or not hits:
            return np.array([h.score for h in hits], dtype=np.float64)
        neighbours = self.view.apply(store.vectors([h.id for h in hits]))
        return np.sort(neighbours @ self.view.apply(query))[::-1].astype(np.float64)

    def statistic(self, scores: Sequence[float] | np.ndarray) -> float:
        """The number the rule thresholds, from scores sorted best first: the best, or the k-th
        (the last one when there are fewer than k); minus infinity when there are none."""
        if len(scores) == 0:
            return float("-inf")
        return float(scores[0] if self.kind == "fixed" else scores[min(self.k, len(scores)) - 1])

    def decide(self, scores: Sequence[float] | np.ndarray) -> NoMatchDecision:
        """No match when the statistic of ``scores`` (best first) is below the threshold."""
        stat = self.statistic(scores)
        detail: dict[str, object] = {"no_match_rule": self.kind}
        if self.kind == "knn":
            detail.update({"knn_score": round(stat, 6), "knn_threshold": round(self.threshold, 6)})
        elif self.note:
            detail["no_match_note"] = self.note
        return NoMatchDecision(bool(stat < self.threshold), stat, detail)

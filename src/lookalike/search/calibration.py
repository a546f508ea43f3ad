"""Per-collection calibration: what a score means *in this collection*, and when nothing is alike.

A raw cosine similarity of 0.7 is a near-certain copy in one collection and an unrelated neighbour in
another (a shop's product shots all look alike). So lookalike measures two distributions on the
collection itself (:mod:`lookalike.search.measure`: edited copies of its own images against their
originals, and its items' nearest and k-th nearest *different* items) and keeps them, with what is
fitted to them, in one JSON-able :class:`Calibration` record in the store's metadata (key
``calibration``), recomputed when the collection has grown or shrunk by more than
:data:`STALE_FRACTION`. Read from the record:

* ``probability(score)``: P(copy | score), a 1-D logistic fit (:mod:`lookalike.search.fitting`) of
  copies vs nearest neighbours with equal class weights, i.e. the posterior at even prior odds. Why
  logistic and not isotonic: it is monotone by construction, has two parameters (stable with a few
  hundred samples) and measured well-calibrated in ``bench/bench_calibration.py``.
* labels: ``duplicate`` (P(copy) >= 0.9), ``very similar`` (closer than 90% of the collection's
  nearest-neighbour pairs), ``similar`` (closer than the median pair), ``weak`` (the rest).
* the k-NN "no similar images" rule's threshold (:mod:`lookalike.search.no_match` builds and applies
  the rule; the k-th scores are measured in the model's no-match view when it has one).
* :func:`threshold_for_precision`: the score cut-off at which copy detection reaches a precision
  (with a fitted tail for the non-copy scores, whose sample is too thin for a 0.99 target).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from lookalike.models.base import NoMatchView
from lookalike.search.fitting import fit_isotonic, fit_logistic, tail_model
from lookalike.search.no_match import DEFAULT_ACCEPT, DEFAULT_KNN_K, FIXED_NO_MATCH_BELOW, knn_threshold
from lookalike.store.base import Store

META_KEY = "calibration"
VERSION = 2  # 2: copies drawn from the full standard edit family
#: Below this many items the distributions are too thin to trust; the fixed rule is used instead.
MIN_ITEMS = 20
#: Recompute when the item count changed by more than this fraction since the last calibration.
STALE_FRACTION = 0.2
#: Probability from which a match is labelled ``duplicate``.
DUPLICATE_PROBABILITY = 0.9
LABELS = ("duplicate", "very similar", "similar", "weak")


@dataclass
class Calibration:
    """Everything needed to read scores of one collection; stored as JSON in the index."""

    status: str  # "ok", or "fallback" (too few items / copies: the fixed rule applies)
    reason: str = ""
    n_items: int = 0
    computed_at: float = 0.0
    seconds: float = 0.0
    model: str = ""
    version: int = VERSION
    knn_k: int = DEFAULT_KNN_K
    #: sorted samples (rounded) of the collection's own scores
    copy_scores: list[float] = field(default_factory=list)
    nn_scores: list[float] = field(default_factory=list)
    knn_scores: list[float] = field(default_factory=list)
    #: nearest-neighbour pairs left out of the non-copy sample because they look like copies
    probable_duplicates: int = 0
    method: str = "logistic"
    logistic: tuple[float, float] = (0.0, 0.0)
    isotonic: tuple[list[float], list[float]] = ((), ())  # type: ignore[assignment]
    cutoffs: dict[str, float] = field(default_factory=dict)
    #: the model's no-match view when calibrated (JSON form of NoMatchView); None: whole vectors
    no_match_view: dict[str, float] | None = None

    @property
    def view(self) -> NoMatchView | None:
        """The no-match view the k-NN scores were measured in (and queries must be read in)."""
        return NoMatchView.from_json(self.no_match_view)

    # -- validity -------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def is_stale(self, n_items: int) -> bool:
        """True when the collection's size moved by more than STALE_FRACTION since calibrating."""
        if self.version != VERSION:
            return True
        if self.status != "ok":
            return n_items != self.n_items and n_items >= MIN_ITEMS
        return abs(n_items - self.n_items) > STALE_FRACTION * max(1, self.n_items)

    # -- readings -------------------------------------------------------------------------------
    def probability(self, scores: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Estimated P(copy of the same picture | score), at even prior odds. Monotone in score."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.ok:
            raise ValueError(f"no calibration for this collection: {self.reason}")
        if self.method == "isotonic":
            xs, ps = self.isotonic
            return np.interp(s, xs, ps)
        a, b = self.logistic
        return 1.0 / (1.0 + np.exp(-np.clip(a * s + b, -60, 60)))

    def label(self, score: float) -> str:
        """``duplicate``, ``very similar``, ``similar`` or ``weak``, by this collection's cut-offs."""
        for name in LABELS[:-1]:
            if score >= self.cutoffs[name]:
                return name
        return LABELS[-1]

    def knn_threshold(self, accept: float = DEFAULT_ACCEPT) -> float:
        """The k-th-NN similarity below which a query is out of distribution, at this acceptance rate."""
        if not self.ok or not self.knn_scores:
            knn_threshold(self.knn_scores or [0.0], accept)  # the same check of ``accept``
            return FIXED_NO_MATCH_BELOW
        return knn_threshold(self.knn_scores, accept)

    def threshold_for_precision(self, precision: float, prior: float = 0.5) -> float:
        """See :func:`threshold_for_precision`."""
        return threshold_for_precision(self, precision, prior=prior)

    # -- storage --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["logistic"] = list(self.logistic)
        out["isotonic"] = [list(self.isotonic[0]), list(self.isotonic[1])]
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Calibration:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        cal = cls(**known)  # type: ignore[arg-type]
        cal.logistic = tuple(cal.logistic)  # type: ignore[assignment]
        iso = cal.isotonic or ([], [])
        cal.isotonic = (list(iso[0]), list(iso[1]))  # type: ignore[assignment]
        return cal

    def _view_text(self) -> str:
        view = self.view
        if view is None:
            return "the scores as shown"
        power = f" ** {view.power:.4g}" if view.power != 1.0 else ""
        return f"the model's no-match view: the leading {view.dims} values{power}, re-normalised"

    def summary(self) -> dict[str, object]:
        """The short, human-facing view (``lookalike calibrate`` / ``info``)."""
        out: dict[str, object] = {"status": self.status, "items": self.n_items}
        if self.reason:
            out["reason"] = self.reason
        if not self.ok:
            out["no_match_rule"] = f"fixed (best score < {FIXED_NO_MATCH_BELOW})"
            out["no_match_reads"] = self._view_text()
            return out
        q = np.quantile
        out.update(
            {
                "copies_measured": len(self.copy_scores),
                "neighbours_measured": len(self.nn_scores),
                "copy_score_median": round(float(q(self.copy_scores, 0.5)), 4),
                "copy_score_p05": round(float(q(self.copy_scores, 0.05)), 4),
                "nearest_neighbour_median": round(float(q(self.nn_scores, 0.5)), 4),
                "nearest_neighbour_p95": round(float(q(self.nn_scores, 0.95)), 4),
                "probable_duplicates": self.probable_duplicates,
                "labels": {k: round(v, 4) for k, v in self.cutoffs.items()},
                "no_match_rule": f"knn (k={self.knn_k}): k-th similarity < {self.knn_threshold():.4f} "
                f"(accepts {DEFAULT_ACCEPT:.0%} of the collection)",
                "precision_0.99_threshold": round(self.threshold_for_precision(0.99), 4),
                "no_match_reads": self._view_text(),
                "seconds": round(self.seconds, 2),
            }
        )
        return out


def fallback(reason: str, n_items: int, model: str = "", view: NoMatchView | None = None) -> Calibration:
    """A calibration that says why there is none; searches use the fixed rule (read in ``view``)."""
    return Calibration(
        status="fallback",
        reason=reason,
        n_items=n_items,
        computed_at=time.time(),
        model=model,
        no_match_view=view.to_json() if view else None,
    )


def threshold_for_precision(calibration: Calibration, precision: float, prior: float = 0.5) -> float:
    """The lowest score at which pairs scoring at least that much are copies with this precision.

    precision(t) = prior*TPR(t) / (prior*TPR(t) + (1-prior)*FPR(t)), with TPR from the measured copy
    scores and FPR from the nearest-neighbour (non-copy) scores. ``prior`` is the fraction of copies
    among the candidate pairs (0.5: as many copies as non-copies); a smaller prior gives a stricter
    threshold. Without a calibration the answer is a fixed 0.95.

    The non-copy sample is small (one per item, ~200 in a small collection), so its empirical FPR
    says nothing below ~1/n, which is exactly where a 0.99 threshold lives: measured on held-out
    pairs, "just above the highest non-copy seen" reached only 0.973. Beyond the body, the FPR is
    therefore the larger of the empirical one and an exponential tail fitted to the top
    :data:`TAIL_FRACTION` of the non-copy scores (peaks over threshold, shape 0). Similarities are
    bounded, so their true tail is lighter than exponential and the estimate errs on the strict side,
    as a threshold used to delete or quarantine files must.
    """
    if not 0.0 < precision < 1.0:
        raise ValueError("precision must be between 0 and 1 (exclusive)")
    if not 0.0 < prior < 1.0:
        raise ValueError("prior must be between 0 and 1 (exclusive)")
    if not calibration.ok:
        return 0.95
    pos = np.sort(np.asarray(calibration.copy_scores, dtype=np.float64))
    neg = np.sort(np.asarray(calibration.nn_scores, dtype=np.float64))
    tail_fpr = tail_model(neg)
    grid = np.linspace(min(float(neg[0]), float(pos[0])), float(pos[-1]), 4001)
    candidates = np.unique(np.concatenate([pos, neg, grid, [neg[-1] + 1e-4]]))
    # A threshold that finds under 5% of the copies is of no use, and there the TPR rests on a
    # handful of copies: the precision is required to hold only up to that point.
    candidates = candidates[candidates <= np.quantile(pos, 0.95)]
    tpr = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    false_pos = len(neg) - np.searchsorted(neg, candidates, side="left")
    fpr = np.maximum(false_pos / len(neg), tail_fpr(candidates))
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = prior * tpr / (prior * tpr + (1 - prior) * fpr)
    # The lowest threshold from which precision stays >= the target up to where it peaks (above the
    # peak it falls again as the last, mildest copies are passed over: a coarser threshold, not a
    # safer one).
    peak = int(np.nanargmax(np.where(tpr > 0, prec, -1.0)))
    bad_idx = np.flatnonzero(prec[: peak + 1] < precision)
    start = bad_idx[-1] + 1 if len(bad_idx) else 0
    if start > peak:  # not reachable: the most precise threshold, and above every non-copy seen
        return float(min(1.0, max(neg[-1] + 1e-4, candidates[peak])))
    return float(candidates[start])


def build_calibration(
    copy_scores: np.ndarray,
    nn_scores: np.ndarray,
    knn_scores: np.ndarray,
    *,
    k: int = DEFAULT_KNN_K,
    method: str = "logistic",
) -> Calibration:
    """Fit the calibration from measured score samples (split out so it can be tested and benchmarked)."""
    if method not in ("logistic", "isotonic"):
        raise ValueError("method must be 'logistic' or 'isotonic'")
    pos = np.sort(np.asarray(copy_scores, dtype=np.float64))
    nn_all = np.sort(np.asarray(nn_scores, dtype=np.float64))
    # A nearest neighbour scoring like a typical copy is most likely a duplicate already in the
    # collection; counting it as a non-copy would drag P(copy) down for real copies.
    dup_cut = float(np.median(pos))
    neg = nn_all[nn_all < dup_cut]
    if len(neg) < 5:
        neg = nn_all
    a, b = fit_logistic(pos, neg)
    iso = fit_isotonic(pos, neg)
    cal = Calibration(
        status="ok",
        computed_at=time.time(),
        knn_k=k,
        copy_scores=_rounded(pos),
        nn_scores=_rounded(neg),
        knn_scores=_rounded(np.sort(np.asarray(knn_scores, dtype=np.float64))),
        probable_duplicates=int(len(nn_all) - len(neg)),
        method=method,
        logistic=(a, b),
        isotonic=iso,  # type: ignore[arg-type]
    )
    grid = np.linspace(-1.0, 1.0, 20001)
    probs = cal.probability(grid)
    reach = np.flatnonzero(probs >= DUPLICATE_PROBABILITY)
    duplicate = float(grid[reach[0]]) if len(reach) else 1.0
    very = min(float(np.quantile(nn_all, 0.9)), duplicate)
    similar = min(float(np.quantile(nn_all, 0.5)), very)
    cal.cutoffs = {"duplicate": duplicate, "very similar": very, "similar": similar}
    return cal


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def load_calibration(store: Store) -> Calibration | None:
    """The stored calibration, or None if there is none (or it is of an older format)."""
    return parse_calibration(store.get_meta(META_KEY))


def parse_calibration(data: object) -> Calibration | None:
    """A stored calibration record, or None when it is absent, of an older format or malformed
    (a damaged record must cost the calibrated readings, never every search)."""
    if not isinstance(data, dict):
        return None
    try:
        cal = Calibration.from_json(data)
        cal.view  # noqa: B018 - parses the stored view too
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return cal if cal.version == VERSION else None


def save_calibration(store: Store, calibration: Calibration) -> None:
    store.set_meta(META_KEY, calibration.to_json())

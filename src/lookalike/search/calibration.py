"""Per-collection calibration: what a score means *in this collection*, and when nothing is alike.

A raw cosine similarity of 0.7 is a near-certain copy in one collection and an unrelated neighbour in
another (a shop's product shots all look alike). So lookalike measures two distributions on the
collection itself and reads every score against them:

* **copy scores**: a sample of the collection's own images (up to 200, one edit each) is edited the way copies are
  edited in the wild (a random composite from the standard copy-detection edits: crop, rotation,
  mirror, colour jitter, greyscale, blur, text overlay, border, downscale, JPEG), embedded, and
  scored against the stored vector of its original. This is the score a true copy gets.
* **neighbour scores**: for a sample of items (up to 2,000), the similarity of their nearest and k-th
  nearest *different* items in the collection. This is the score the best match of an in-domain
  picture that is *not* a copy gets.

From them:

* ``probability(score)``: P(copy | score), a 1-D logistic fit of copies vs nearest neighbours with
  equal class weights, i.e. the posterior at even prior odds. Why logistic and not isotonic: it is
  monotone by construction, has two parameters (stable with a few hundred samples) and measured
  well-calibrated in ``bench/bench_calibration.py``; isotonic regression is available for comparison.
* labels: ``duplicate`` (P(copy) >= 0.9), ``very similar`` (closer than 90% of the collection's
  nearest-neighbour pairs), ``similar`` (closer than the median pair), ``weak`` (the rest).
* ``no_match``: k-NN out-of-distribution detection (Sun et al., ICML 2022, "Out-of-distribution
  detection with deep nearest neighbors"): a query whose k-th nearest-neighbour similarity is lower
  than the collection's own k-th-NN similarities at the chosen acceptance rate (default: 95% of the
  collection's items would be accepted) is flagged as having no similar images. A model may name a
  :class:`~lookalike.models.base.NoMatchView` (the semantic part of its vector); then the k-th score
  is read in that view, over the ``k + NO_MATCH_POOL`` nearest items by the whole vector, both here
  and at query time, and the fixed rule reads the best score in it too.
* :func:`threshold_for_precision`: the score cut-off at which copy detection reaches a precision
  (with a fitted tail for the non-copy scores, whose sample is too thin for a 0.99 target).

The result is a JSON-able :class:`Calibration` kept in the store's metadata (key ``calibration``) and
recomputed when the collection has grown or shrunk by more than :data:`STALE_FRACTION`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from lookalike.imaging.discover import Skip
from lookalike.imaging.load import open_rgb
from lookalike.models.base import Embedder, NoMatchView
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.search.matching import FIXED_NO_MATCH_BELOW
from lookalike.store.base import Hit, Store, VectorRows

META_KEY = "calibration"
VERSION = 2  # 2: copies drawn from the full standard edit family
#: Below this many items the distributions are too thin to trust; the fixed rule is used instead.
MIN_ITEMS = 20
#: Copy-score sample: images edited per calibration, edits per image.
COPY_SAMPLE = 200
EDITS_PER_IMAGE = 1  # 2 measured no better calibrated (bench_calibration) and doubles the cost
MIN_COPIES = 10
#: Items whose neighbours are measured.
NEIGHBOUR_SAMPLE = 2000
#: k of the k-NN no-match rule when not chosen from the collection size (see :func:`auto_k`).
DEFAULT_KNN_K = 1
#: with a no-match view: how many nearest items beyond k are re-scored in the view
NO_MATCH_POOL = 8
#: Fraction of the collection's own items the no-match rule accepts as "in distribution".
DEFAULT_ACCEPT = 0.95
#: Recompute when the item count changed by more than this fraction since the last calibration.
STALE_FRACTION = 0.2
#: Probability from which a match is labelled ``duplicate``.
DUPLICATE_PROBABILITY = 0.9
NO_MATCH_RULES = ("auto", "knn", "fixed")
LABELS = ("duplicate", "very similar", "similar", "weak")

CalibrationProgress = Callable[[str, int, int], None]


# -- copy edits -------------------------------------------------------------------------------------
#: The standard copy-detection edits (Copydays, DISC 2021, bench/bench_neardup.py), drawn as the main
#: edit of each calibration copy; weights favour the kinds copies most often go through.
EDIT_KINDS: dict[str, float] = {  # in the order a composite applies them (text is never mirrored)
    "crop": 2.0,
    "rotate": 1.0,
    "flip": 1.0,
    "jitter": 1.0,
    "grayscale": 0.6,
    "blur": 0.6,
    "text": 1.0,
    "border": 1.0,
    "downscale": 1.0,
    "jpeg": 1.0,
}
#: Chance of a second, different standard edit on the same copy (a composite, as shared copies are).
SECOND_EDIT = 0.2
_CAPTIONS = ("© SAMPLE 2024", "shared via lookalike", "www.example.com", "DO NOT COPY", "#photo of the day")


def _apply_edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One standard edit with a realistic parameter range (the benchmark's ranges, a little wider)."""
    w, h = img.size
    if kind == "downscale":  # the final resize below is mild; this one is strong
        f = float(rng.uniform(0.2, 0.6))
        return img.resize((max(16, int(w * f)), max(16, int(h * f))), Image.Resampling.BILINEAR)
    if kind == "jpeg":  # strong compression: re-encoded once here, once more at the end
        return _jpeg(img, int(rng.integers(20, 51)))
    if kind == "crop":  # keeps 50-95% of each side (25-90% of the area), anywhere in the picture
        keep = float(rng.uniform(0.5, 0.95))
        cw, ch = max(8, int(w * keep)), max(8, int(h * keep * rng.uniform(0.9, 1.1)))
        ch = min(ch, h)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if kind == "rotate":
        angle = float(rng.choice([-1, 1]) * rng.uniform(3, 15))
        fill = (0, 0, 0) if rng.random() < 0.6 else (255, 255, 255)
        expand = bool(rng.random() < 0.7)
        return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=expand, fillcolor=fill)
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "jitter":
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.65, 1.35)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.65, 1.35)))
        return ImageEnhance.Color(img).enhance(float(rng.uniform(0.4, 1.6)))
    if kind == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if kind == "text":
        return _caption(img, rng)
    if kind == "border":
        pad = max(1, int(max(w, h) * rng.uniform(0.04, 0.15)))
        palette = [(0, 0, 0), (255, 255, 255), (128, 128, 128), tuple(int(c) for c in rng.integers(0, 256, 3))]
        return ImageOps.expand(img, border=pad, fill=palette[int(rng.integers(0, len(palette)))])
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.5))))
    raise ValueError(f"unknown edit {kind!r}")


def _caption(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Overlaid text: a stroked caption across the picture, or a caption band at the top or bottom."""
    out = img.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(10, int(h * rng.uniform(0.06, 0.14)))
    font = ImageFont.load_default(size=size)
    text = _CAPTIONS[int(rng.integers(0, len(_CAPTIONS)))]
    if rng.random() < 0.5:
        x, y = int(w * rng.uniform(0.02, 0.3)), int(h * rng.uniform(0.1, 0.8))
        draw.text((x, y), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    else:
        band = int(size * 1.5)
        top = 0 if rng.random() < 0.3 else h - band
        shade = (20, 20, 20) if rng.random() < 0.5 else (245, 245, 245)
        draw.rectangle([0, top, w, top + band], fill=shade)
        ink = (255, 255, 255) if shade[0] < 128 else (0, 0, 0)
        draw.text((max(2, w // 20), top + band // 6), text, fill=ink, font=font)
    return out


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def copy_edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random "copy" of ``image``: a standard copy-detection edit (sometimes two), then resave.

    The main edit is drawn from :data:`EDIT_KINDS` (downscale, strong JPEG, crop, rotation, mirror,
    colour jitter, greyscale, text overlay, border, blur), so the copy-score sample covers every kind
    of copy the probability is asked about; with chance :data:`SECOND_EDIT` a second, different one
    is composed with it. Every copy is then re-saved as JPEG (quality 70-95), half of them resized
    (60-100%) first, as a shared copy is. One composite edit per image keeps the cost at one embedding per sample.
    """
    img = image.convert("RGB")
    kinds = list(EDIT_KINDS)
    weights = np.array([EDIT_KINDS[k] for k in kinds])
    n_edits = 2 if rng.random() < SECOND_EDIT else 1
    chosen = rng.choice(len(kinds), size=n_edits, replace=False, p=weights / weights.sum())
    for i in sorted(chosen):
        img = _apply_edit(img, kinds[int(i)], rng)
    if rng.random() < 0.5:
        scale = float(rng.uniform(0.6, 1.0))
        size = (max(16, int(img.width * scale)), max(16, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return _jpeg(img, int(rng.integers(70, 96)))


# -- fitting ----------------------------------------------------------------------------------------
def fit_logistic(pos: np.ndarray, neg: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """P(copy|s) = sigmoid(a*s + b) by damped Newton, positives and negatives weighted equally.

    A tiny ridge on ``a`` keeps separable data (a clean collection) from diverging to a step; it is
    kept tiny because a stronger one (1e-4, the first version) flattened the curve measurably
    (bench_calibration: ECE 0.056 -> 0.040 on the benchmark edits). Steps are halved until the loss
    drops (plain Newton can diverge when the copy scores are bimodal, as with a hash that a mirrored
    copy defeats), and ``a`` is kept positive: P(copy) rises with the score.
    """
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    ridge = 1e-6
    min_a = 1e-3

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) + 0.5 * ridge * a * a)

    a, b = 10.0, -10.0 * float(np.mean(x))
    current = loss(a, b)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        r = w * (p - y)
        g = np.array([np.sum(r * x) + ridge * a, np.sum(r)])
        s = w * p * (1 - p)
        hess = np.array([[np.sum(s * x * x) + ridge, np.sum(s * x)], [np.sum(s * x), np.sum(s) + 1e-12]])
        try:
            step = np.linalg.solve(hess, g)
        except np.linalg.LinAlgError:
            step = g
        t = 1.0
        while t > 1e-6:
            na, nb = max(min_a, a - t * step[0]), b - t * step[1]
            trial = loss(na, nb)
            if trial <= current:
                break
            t /= 2
        else:
            break
        moved = max(abs(na - a), abs(nb - b))
        a, b, current = na, nb, trial
        if moved < 1e-9:
            break
    return float(a), float(b)


def fit_isotonic(pos: np.ndarray, neg: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators on scores (classes weighted equally): a monotone step curve (x, p)."""
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    blocks: list[list[float]] = []  # [sum_wy, sum_w, x_min, x_max]
    for xi, yi, wi in zip(x, y, w, strict=True):
        blocks.append([wi * yi, wi, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            top = blocks.pop()
            blocks[-1][0] += top[0]
            blocks[-1][1] += top[1]
            blocks[-1][3] = top[3]
    xs, ps = [], []
    for swy, sw, lo, hi in blocks:
        xs.append((lo + hi) / 2)
        ps.append(swy / sw)
    return xs, ps


# -- the calibration ------------------------------------------------------------------------------
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
        if not 0.0 < accept <= 1.0:
            raise ValueError("the acceptance rate must be in (0, 1]")
        if not self.ok or not self.knn_scores:
            return FIXED_NO_MATCH_BELOW
        return float(np.quantile(np.asarray(self.knn_scores), 1.0 - accept, method="lower"))

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


def auto_k(n_items: int) -> int:
    """k for the k-NN rule: 1 for small collections, growing with size (Sun et al. scale k with n).

    A k-th neighbour far down a small collection is noise: bench/bench_ood.py measured k=1 best on a
    few hundred photos, so k grows only by one per 200 items, capped at 10.
    """
    return max(1, min(10, n_items // 200))


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
    tail_fpr = _tail_model(neg)
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


#: Share of the non-copy sample (its highest scores) that the tail model of the FPR is fitted to.
TAIL_FRACTION = 0.2


def _tail_model(neg: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """P(non-copy score >= t) for t above the tail's start: q * exp(-(t - u) / mean excess)."""
    k = max(5, int(np.ceil(TAIL_FRACTION * len(neg))))
    if len(neg) <= k:
        return lambda t: np.zeros_like(t)
    u = float(neg[-k - 1])
    beta = max(float(np.mean(neg[-k:] - u)), 1e-4)
    q = k / len(neg)

    def tail(t: np.ndarray) -> np.ndarray:
        return np.where(t > u, q * np.exp(-(t - u) / beta), 0.0)

    return tail


# -- computing ----------------------------------------------------------------------------------
def compute_calibration(
    store: Store,
    model: Embedder,
    *,
    copies: int = COPY_SAMPLE,
    edits_per_image: int = EDITS_PER_IMAGE,
    neighbours: int = NEIGHBOUR_SAMPLE,
    knn_k: int | None = None,
    method: str = "logistic",
    seed: int = 0,
    progress: CalibrationProgress | None = None,
) -> Calibration:
    """Measure the collection (see the module docstring). Reads sampled files again to edit them."""
    started = time.perf_counter()
    ids, vectors = store.vector_rows()  # rows read on demand: only samples are needed
    n = len(ids)
    if n < MIN_ITEMS:
        return fallback(
            f"only {n} images indexed; at least {MIN_ITEMS} are needed to learn what scores mean here, "
            f"so the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
        )
    view = model.spec.no_match_view
    rng = np.random.default_rng(seed)
    k = max(1, min(knn_k or auto_k(n), n - 1))
    sample = rng.permutation(n)[: min(n, neighbours)]
    nn, knn = _neighbour_scores(store, ids, vectors, sample, k, progress, view)
    copy_scores = _copy_scores(store, model, ids, vectors, rng, copies, edits_per_image, progress)
    if len(copy_scores) < MIN_COPIES or len(nn) < MIN_ITEMS // 2:
        return fallback(
            f"only {len(copy_scores)} copies could be made from the indexed files (are they still on disk?); "
            f"the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
            view,
        )
    cal = build_calibration(copy_scores, nn, knn, k=k, method=method)
    cal.n_items = n
    cal.model = model.spec.name
    cal.no_match_view = view.to_json() if view else None
    cal.seconds = time.perf_counter() - started
    return cal


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


def _neighbour_scores(
    store: Store,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    sample: np.ndarray,
    k: int,
    progress: CalibrationProgress | None,
    view: NoMatchView | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and k-th nearest similarity of sampled items among *other* items of different content.

    The nearest is by the whole vector (copy probabilities read those scores); the k-th is read in
    ``view`` when there is one, exactly as :func:`no_match_scores` reads a query's.
    """
    sha = {}
    nn, knn = [], []
    # room for the item itself and exact copies (same file content) of it, and the view's pool
    extra = 8 + (NO_MATCH_POOL if view else 0)
    batch = 256
    for start in range(0, len(sample), batch):
        rows = sample[start : start + batch]
        hits = store.search(vectors[rows], k + extra)
        for row, row_hits in zip(rows, hits, strict=True):
            me = int(ids[row])
            if me not in sha:
                sha[me] = _sha(store, me)
            kept = []
            for hit in row_hits:
                if hit.id == me:
                    continue
                if hit.id not in sha:
                    sha[hit.id] = _sha(store, hit.id)
                if sha[hit.id] == sha[me]:
                    continue
                kept.append(hit)
            if kept:
                nn.append(kept[0].score)
                if view is None:
                    knn.append(kept[min(k, len(kept)) - 1].score)
                else:
                    pool = kept[: k + NO_MATCH_POOL]
                    scores = no_match_scores(store, vectors[row], pool, view)
                    knn.append(float(scores[min(k, len(scores)) - 1]))
        if progress:
            progress("neighbours", min(start + batch, len(sample)), len(sample))
    return np.asarray(nn), np.asarray(knn)


def _sha(store: Store, item_id: int) -> str:
    rec = store.get(item_id)
    return rec.sha256 if rec is not None else f"missing:{item_id}"


def _copy_scores(
    store: Store,
    model: Embedder,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    rng: np.random.Generator,
    copies: int,
    edits_per_image: int,
    progress: CalibrationProgress | None,
) -> np.ndarray:
    """Scores of edited copies of sampled items against their stored vectors.

    Runs on the shared pipeline: worker threads decode and edit (each sampled row with its own
    random stream, drawn from ``rng``, so the sample is the same whatever the thread timing), the
    model embeds full batches. A file that is gone or unreadable is replaced by the next sampled row.
    """
    order = [int(row) for row in rng.permutation(len(ids))]
    wanted = min(copies, len(ids))
    base_seed = int(rng.integers(0, 2**32))
    scores: dict[int, list[float]] = {}
    next_row = iter(order[wanted:])
    # Decode at a moderate size: edits then act on real detail, and huge photos stay cheap.
    draft = max(512, 2 * model.spec.input_size)

    def prepare(row: int) -> Work[int] | Skip:
        rec = store.get(int(ids[row]))
        if rec is None:
            return Skip(str(row), "missing", "no longer in the index")
        image = open_rgb(rec.path, draft_size=draft)  # ImageLoadError: the pipeline skips this row
        image.thumbnail((640, 640))  # the model sees 224 px; bigger only slows decoding and editing
        row_rng = np.random.default_rng((base_seed, row))
        return Work(row, [model.preprocess(copy_edit(image, row_rng)) for _ in range(edits_per_image)])

    class Collect:
        def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
            for work, embedded in done:
                scores[work.item] = [float(np.dot(vectors[work.item], vec)) for vec in embedded]
            if progress:
                progress("copies", len(scores), wanted)

        def skipped(self, item: int, skip: Skip) -> None:
            replacement = next(next_row, None)  # moved or deleted since indexing: sample another one
            if replacement is not None:
                pipeline.submit(replacement)

    pipeline = Pipeline(prepare, Collect(), model)
    pipeline.run(order[:wanted])
    return np.asarray([score for row in order if row in scores for score in scores[row]])


def load_calibration(store: Store) -> Calibration | None:
    """The stored calibration, or None if there is none (or it is of an older format)."""
    data = store.get_meta(META_KEY)
    if not isinstance(data, dict):
        return None
    try:
        cal = Calibration.from_json(data)
    except (TypeError, ValueError):
        return None
    return cal if cal.version == VERSION else None


def save_calibration(store: Store, calibration: Calibration) -> None:
    store.set_meta(META_KEY, calibration.to_json())


def no_match_scores(store: Store, query: np.ndarray, hits: Sequence[Hit], view: NoMatchView | None) -> np.ndarray:
    """The scores the no-match rule reads for one query's ``hits``, best first.

    Without a view these are the hits' own scores. With one, the hits' stored vectors and the query
    are read in the view and re-scored (a handful of rows: the hits are the nearest few).
    """
    if view is None or not hits:
        return np.array([h.score for h in hits], dtype=np.float64)
    neighbours = view.apply(store.vectors([h.id for h in hits]))
    return np.sort(neighbours @ view.apply(query))[::-1].astype(np.float64)


def knn_no_match(scores: Sequence[float], calibration: Calibration, accept: float = DEFAULT_ACCEPT) -> bool:
    """k-NN OOD rule: the k-th best score (or the last one, if fewer) below the collection's threshold."""
    if not scores:
        return True
    kth = sorted(scores, reverse=True)[min(calibration.knn_k, len(scores)) - 1]
    return kth < calibration.knn_threshold(accept)

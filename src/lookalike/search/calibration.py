"""Per-collection calibration: what a score means *in this collection*, and when nothing is alike.

A raw cosine similarity of 0.7 is a near-certain copy in one collection and an unrelated neighbour in
another (a shop's product shots all look alike). So lookalike measures two distributions on the
collection itself and reads every score against them:

* **copy scores**: a sample of the collection's own images (up to 200, one edit each) is edited the way copies are
  edited in the wild (downscale, JPEG, crop, colour shift), embedded, and scored against the stored
  vector of its original. This is the score a true copy gets.
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
  collection's items would be accepted) is flagged as having no similar images.
* :func:`threshold_for_precision`: the score cut-off at which copy detection reaches a precision.

The result is a JSON-able :class:`Calibration` kept in the store's metadata (key ``calibration``) and
recomputed when the collection has grown or shrunk by more than :data:`STALE_FRACTION`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from lookalike.imaging.load import ImageLoadError, open_rgb
from lookalike.models.base import Embedder
from lookalike.search.matching import FIXED_NO_MATCH_BELOW
from lookalike.store.base import Store

META_KEY = "calibration"
VERSION = 1
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
def copy_edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random "copy" of ``image``: optional crop and colour change, then downscale and JPEG.

    These are the edits copies of a picture go through when they are shared, saved for the web or
    touched up; each is drawn independently so the sample covers mild and strong combinations.
    """
    img = image.convert("RGB")
    w, h = img.size
    if rng.random() < 0.6:  # crop keeping 65-95% of the area
        keep = float(np.sqrt(rng.uniform(0.65, 0.95)))
        cw, ch = max(8, int(w * keep)), max(8, int(h * keep))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.6:
        img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.75, 1.25)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.75, 1.25)))
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.6, 1.4)))
    if rng.random() < 0.08:
        img = ImageOps.grayscale(img).convert("RGB")
    scale = float(rng.uniform(0.3, 0.9))
    nw, nh = max(16, int(img.width * scale)), max(16, int(img.height * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(30, 86)))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


# -- fitting ----------------------------------------------------------------------------------------
def fit_logistic(pos: np.ndarray, neg: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """P(copy|s) = sigmoid(a*s + b) by Newton's method, positives and negatives weighted equally.

    A tiny ridge on ``a`` keeps separable data (a clean collection) from diverging to a step.
    """
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    a, b = 10.0, -10.0 * float(np.mean(x))
    ridge = 1e-4
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        r = w * (p - y)
        g = np.array([np.sum(r * x) + ridge * a, np.sum(r)])
        s = w * p * (1 - p)
        hess = np.array([[np.sum(s * x * x) + ridge, np.sum(s * x)], [np.sum(s * x), np.sum(s) + 1e-12]])
        step = np.linalg.solve(hess, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
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

    def summary(self) -> dict[str, object]:
        """The short, human-facing view (``lookalike calibrate`` / ``info``)."""
        out: dict[str, object] = {"status": self.status, "items": self.n_items}
        if self.reason:
            out["reason"] = self.reason
        if not self.ok:
            out["no_match_rule"] = f"fixed (best score < {FIXED_NO_MATCH_BELOW})"
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


def fallback(reason: str, n_items: int, model: str = "") -> Calibration:
    """A calibration that says why there is none; searches use the fixed rule."""
    return Calibration(status="fallback", reason=reason, n_items=n_items, computed_at=time.time(), model=model)


def threshold_for_precision(calibration: Calibration, precision: float, prior: float = 0.5) -> float:
    """The lowest score at which pairs scoring at least that much are copies with this precision.

    precision(t) = prior*TPR(t) / (prior*TPR(t) + (1-prior)*FPR(t)), with TPR from the measured copy
    scores and FPR from the nearest-neighbour (non-copy) scores. ``prior`` is the fraction of copies
    among the candidate pairs (0.5: as many copies as non-copies); a smaller prior gives a stricter
    threshold. The FPR is estimated pessimistically as (false positives + 1) / (negatives + 1), since
    the non-copy sample is small (one per item) and a threshold used to delete or quarantine files
    must err on the strict side; when the asked precision cannot be resolved, the threshold is placed
    just above the highest non-copy score seen. Without a calibration the answer is a fixed 0.95.
    """
    if not 0.0 < precision < 1.0:
        raise ValueError("precision must be between 0 and 1 (exclusive)")
    if not 0.0 < prior < 1.0:
        raise ValueError("prior must be between 0 and 1 (exclusive)")
    if not calibration.ok:
        return 0.95
    pos = np.sort(np.asarray(calibration.copy_scores, dtype=np.float64))
    neg = np.sort(np.asarray(calibration.nn_scores, dtype=np.float64))
    candidates = np.unique(np.concatenate([pos, neg, [neg[-1] + 1e-4]]))
    tpr = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    false_pos = len(neg) - np.searchsorted(neg, candidates, side="left")
    fpr = (false_pos + 1) / (len(neg) + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = prior * tpr / (prior * tpr + (1 - prior) * fpr)
    good = ((prec >= precision) | (false_pos == 0)) & (tpr > 0)
    # the lowest threshold from which precision stays >= the target for every higher threshold
    bad_idx = np.flatnonzero(~good)
    start = bad_idx[-1] + 1 if len(bad_idx) else 0
    if start >= len(candidates):
        return float(min(1.0, neg[-1] + 1e-4))
    return float(candidates[start])


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
    ids, vectors = store.all_vectors()
    n = len(ids)
    if n < MIN_ITEMS:
        return fallback(
            f"only {n} images indexed; at least {MIN_ITEMS} are needed to learn what scores mean here, "
            f"so the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
        )
    rng = np.random.default_rng(seed)
    k = max(1, min(knn_k or auto_k(n), n - 1))
    nn, knn = _neighbour_scores(store, ids, vectors, rng.permutation(n)[: min(n, neighbours)], k, progress)
    copy_scores = _copy_scores(store, model, ids, vectors, rng, copies, edits_per_image, progress)
    if len(copy_scores) < MIN_COPIES or len(nn) < MIN_ITEMS // 2:
        return fallback(
            f"only {len(copy_scores)} copies could be made from the indexed files (are they still on disk?); "
            f"the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
        )
    cal = build_calibration(copy_scores, nn, knn, k=k, method=method)
    cal.n_items = n
    cal.model = model.spec.name
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
    vectors: np.ndarray,
    sample: np.ndarray,
    k: int,
    progress: CalibrationProgress | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and k-th nearest similarity of sampled items among *other* items of different content."""
    sha = {}
    nn, knn = [], []
    extra = 8  # room for the item itself and exact copies (same file content) of it
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
                kept.append(hit.score)
            if kept:
                nn.append(kept[0])
                knn.append(kept[min(k, len(kept)) - 1])
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
    vectors: np.ndarray,
    rng: np.random.Generator,
    copies: int,
    edits_per_image: int,
    progress: CalibrationProgress | None,
) -> np.ndarray:
    """Scores of edited copies of sampled items against their stored vectors."""
    order = rng.permutation(len(ids))
    wanted = min(copies, len(ids))
    scores: list[float] = []
    pending: list[tuple[int, Image.Image]] = []
    done = 0

    def flush() -> None:
        if not pending:
            return
        embedded = model.embed([im for _, im in pending])
        for (row, _), vec in zip(pending, embedded, strict=True):
            scores.append(float(np.dot(vectors[row], vec)))
        pending.clear()

    # Decode at a moderate size: edits then act on real detail, and huge photos stay cheap.
    draft = max(512, 2 * model.spec.input_size)
    for row in order:
        if done >= wanted:
            break
        rec = store.get(int(ids[row]))
        if rec is None:
            continue
        try:
            image = open_rgb(rec.path, draft_size=draft)
        except (ImageLoadError, OSError):
            continue  # moved or deleted since indexing: sample another one
        image.thumbnail((640, 640))  # the model sees 224 px; bigger only slows decoding and editing
        for _ in range(edits_per_image):
            pending.append((int(row), copy_edit(image, rng)))
        done += 1
        if len(pending) >= model.batch_size:
            flush()
        if progress:
            progress("copies", done, wanted)
    flush()
    return np.asarray(scores)


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


def knn_no_match(scores: Sequence[float], calibration: Calibration, accept: float = DEFAULT_ACCEPT) -> bool:
    """k-NN OOD rule: the k-th best score (or the last one, if fewer) below the collection's threshold."""
    if not scores:
        return True
    kth = sorted(scores, reverse=True)[min(calibration.knn_k, len(scores)) - 1]
    return kth < calibration.knn_threshold(accept)

"""How well does a model retrieve *your* images? Leave-one-out retrieval over a labelled folder.

A labelled folder has one sub-folder per class (``sedans/ coupes/ suvs/ trucks/``); images deeper
down count for their top-level sub-folder. Every image queries all the others, and a neighbour is
correct when it has the query's class (see :mod:`lookalike.evaluation.metrics` for the metrics).

Two further tests reuse the folder:

* **near-duplicate** (``neardup``): a copy-detection test built from the folder's own images with
  standard edits (JPEG, downscale, crop, flip, small rotation, brightness, greyscale, blur, text
  overlay). An image and its edited copies are duplicates of one another; everything else, including
  other images of the same class, is not. Reported: precision/recall/F1 of "score >= threshold" at the
  model's default duplicate threshold, and the best F1 over all thresholds (an oracle, labelled so).
* **out-of-distribution** (``ood``): can the no-match rule tell a query that has no similar image in
  the collection (from ``ood_dir``) from one that does (each collection image against the others)?
  Reported: AUROC of the score each rule thresholds (the best match's similarity for the fixed rule,
  the k-th neighbour's for the calibrated k-NN rule), and each rule's error rates at its threshold.

Nothing here touches an index on disk: images are embedded in memory, so evaluating never changes a
user's collection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.imaging.discover import Skip, walk_images
from lookalike.imaging.edits import NEARDUP_EDITS
from lookalike.imaging.load import ImageLoadError, load_image, to_rgb
from lookalike.models.base import Embedder, NoMatchView, l2_normalize
from lookalike.models.registry import create_model, model_settings
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.search.no_match import DEFAULT_ACCEPT, FIXED_NO_MATCH_BELOW, NoMatchRule, auto_k

from .metrics import (
    DEFAULT_KS,
    RetrievalScores,
    auroc,
    best_f1_threshold,
    knn,
    leave_one_out,
    pair_scores,
    pairs_above,
)

ADAPTATIONS = ("none", "center", "whiten")
#: PCA whitening keeps this many principal directions: whitening all of them amplifies noise
#: (measured on Fashion-MNIST with 1,000 images: full-rank whitening halved Recall@1).
WHITEN_DIM = 256


class EvaluationError(LookalikeError, ValueError):
    """The folder cannot be evaluated as asked (no classes, too few images...)."""


@dataclass
class LabelledSet:
    """Images of a labelled folder: ``labels[i]`` indexes ``class_names``."""

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    skipped: list[Skip] = field(default_factory=list)


def labelled_folder(root: str | os.PathLike[str]) -> LabelledSet:
    """Collect ``root/<class>/**/<image>``; images directly in ``root`` have no class and are skipped."""
    root_path = Path(root).resolve()
    if not root_path.is_dir():
        raise EvaluationError(f"{root} is not a folder")
    skipped: list[Skip] = []
    by_class: dict[str, list[str]] = {}
    for found in walk_images([root_path], skipped.append):
        rel = Path(found.path).relative_to(root_path) if found.path.startswith(str(root_path)) else None
        if rel is None or len(rel.parts) < 2:
            skipped.append(Skip(found.path, "no class", "images must be inside a sub-folder named after their class"))
            continue
        by_class.setdefault(rel.parts[0], []).append(found.path)
    if not by_class:
        raise EvaluationError(
            f"no labelled images under {root}: put each class's images in its own sub-folder "
            "(e.g. photos/sedans/*.jpg, photos/trucks/*.jpg)"
        )
    names = sorted(by_class)
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        files = sorted(by_class[name])
        paths += files
        labels += [label] * len(files)
    return LabelledSet(paths, np.asarray(labels, dtype=np.int64), names, skipped)


# -- embedding ------------------------------------------------------------------------------------
ImageSource = str | os.PathLike[str] | Image.Image


@dataclass
class Embedded:
    vectors: np.ndarray  # (n_ok, dim)
    ok: np.ndarray  # indices of the inputs that were embedded
    failures: list[tuple[int, str]]  # (input index, reason)
    seconds: float  # decode + preprocess + model, wall clock

    @property
    def images_per_second(self) -> float:
        return len(self.ok) / self.seconds if self.seconds > 0 else float("nan")


def embed_images(
    model: Embedder,
    sources: Sequence[ImageSource],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Embedded:
    """Embed files or PIL images with decode + preprocess in threads, the model in this thread.

    Mirrors the indexing pipeline (JPEG draft decoding at the model's input size), so images/s is
    what indexing would reach. Unreadable files are reported in ``failures``, not raised.
    """
    started = time.perf_counter()
    vectors: list[np.ndarray] = []
    ok: list[int] = []
    failures: list[tuple[int, str]] = []

    def prepare(i: int) -> Work[int] | Skip:
        src = sources[i]
        try:
            image = src if isinstance(src, Image.Image) else load_image(src, draft_size=model.spec.input_size).image
        except ImageLoadError as exc:
            return Skip(str(src), exc.reason, exc.detail)
        return Work(i, [model.preprocess(to_rgb(image))])

    class Collect:
        def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
            ok.extend(work.item for work, _ in done)
            vectors.extend(vecs[0] for _, vecs in done)

        def skipped(self, item: int, skip: Skip) -> None:
            failures.append((item, f"{skip.reason}: {skip.detail}"))

    Pipeline(prepare, Collect(), model, workers=workers, progress=progress).run(range(len(sources)))
    matrix = np.stack(vectors) if vectors else np.zeros((0, model.spec.dim), dtype=np.float32)
    return Embedded(matrix, np.asarray(ok, dtype=np.int64), failures, time.perf_counter() - started)


# -- collection-adaptive post-processing ----------------------------------------------------------
def adapt(vectors: np.ndarray, mode: str = "none") -> np.ndarray:
    """Centre (``center``) or PCA-whiten (``whiten``) vectors with statistics of this collection.

    Unsupervised (no labels), learned on the very vectors being searched, as an index would do at
    search time. Uses :mod:`lookalike.search.whitening` when present so the evaluation measures the
    transform the index applies; the fallback is the same arithmetic."""
    if mode == "none":
        return vectors
    if mode not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation {mode!r}; use one of {', '.join(ADAPTATIONS)}")
    try:
        from lookalike.search.whitening import fit_whitening  # type: ignore[import-not-found]

        if mode == "center":
            return fit_whitening(vectors, "center").apply(vectors)
        return fit_whitening(vectors, "pca", dim=WHITEN_DIM).apply(vectors)
    except ImportError:
        pass
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    centered = x - mean
    if mode == "center":
        return l2_normalize(centered)
    _, sing, vt = np.linalg.svd(centered, full_matrices=False)
    eig = sing**2 / max(1, len(x) - 1)
    keep = min(WHITEN_DIM, len(eig), max(1, len(x) - 1))
    scale = 1.0 / np.sqrt(eig[:keep] + 1e-6 * eig[0])
    return l2_normalize(centered @ (vt[:keep].T * scale))


# -- near-duplicate test --------------------------------------------------------------------------
@dataclass
class NearDupSet:
    images: list[Image.Image]
    group: np.ndarray  # which original each image comes from
    edit: list[str]  # "original" or the edit name

    def true_pairs(self) -> set[tuple[int, int]]:
        pairs: set[tuple[int, int]] = set()
        for g in np.unique(self.group):
            members = np.nonzero(self.group == g)[0].tolist()
            pairs |= {(a, b) for i, a in enumerate(members) for b in members[i + 1 :]}
        return pairs


def build_neardup_set(
    sources: Sequence[ImageSource], *, edits: Sequence[str] | None = None, max_side: int = 512
) -> NearDupSet:
    """Originals (shrunk to ``max_side`` to bound memory) plus one copy per edit of each."""
    names = list(edits or NEARDUP_EDITS)
    unknown = [e for e in names if e not in NEARDUP_EDITS]
    if unknown:
        raise ValueError(f"unknown edits {unknown}; known: {', '.join(NEARDUP_EDITS)}")
    images: list[Image.Image] = []
    group: list[int] = []
    edit: list[str] = []
    for g, src in enumerate(sources):
        try:
            original = src if isinstance(src, Image.Image) else load_image(src, draft_size=max_side).image
        except ImageLoadError:
            continue
        original = original.convert("RGB")
        original.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        images.append(original)
        group.append(g)
        edit.append("original")
        for name in names:
            images.append(NEARDUP_EDITS[name](original))
            group.append(g)
            edit.append(name)
    return NearDupSet(images, np.asarray(group, dtype=np.int64), edit)


def default_dup_threshold(model_name: str) -> float:
    """The model's plain near-duplicate threshold (no density margin here), as ``lookalike clean`` uses."""
    return model_settings(model_name).duplicate_threshold(0.0)


def neardup_scores(vectors: np.ndarray, dataset: NearDupSet, threshold: float) -> dict[str, object]:
    """Pair precision/recall/F1 at ``threshold`` and at the oracle best threshold, plus per-edit recall
    (share of copies whose score with their original reaches ``threshold``)."""
    truth = dataset.true_pairs()
    at = pair_scores(pairs_above(vectors, threshold), truth)
    best_t, best = best_f1_threshold(vectors, truth)
    per_edit: dict[str, float] = {}
    originals = {int(dataset.group[i]): i for i, e in enumerate(dataset.edit) if e == "original"}
    for name in dict.fromkeys(e for e in dataset.edit if e != "original"):
        idx = [i for i, e in enumerate(dataset.edit) if e == name]
        sims = [float(vectors[i] @ vectors[originals[int(dataset.group[i])]]) for i in idx]
        per_edit[name] = round(float(np.mean(np.asarray(sims) >= threshold)), 4)
    return {
        "images": len(dataset.images),
        "originals": len(originals),
        "threshold": round(threshold, 6),
        **at.to_dict(),
        "best_threshold": round(best_t, 6),
        "best_f1": round(best.f1, 6),
        "recall_by_edit": per_edit,
    }


# -- out-of-distribution ----------------------------------------------------------------------------
def _rule_scores(own: np.ndarray, ood: np.ndarray, threshold: float) -> dict[str, object]:
    return {
        "auroc": round(auroc(own, ood), 6),
        "threshold": round(float(threshold), 6),
        "ood_missed": round(float(np.mean(ood >= threshold)), 6),
        "in_collection_flagged": round(float(np.mean(own < threshold)), 6),
    }


def _statistics(rule: NoMatchRule, scores: np.ndarray) -> np.ndarray:
    """The rule's statistic (best or k-th score) of each row of best-first neighbour scores."""
    return np.asarray([rule.statistic(row) for row in scores], dtype=np.float64)


def ood_scores(
    collection: np.ndarray,
    ood: np.ndarray,
    *,
    threshold: float = FIXED_NO_MATCH_BELOW,
    accept: float | None = None,
    view: NoMatchView | None = None,
) -> dict[str, object]:
    """How well the no-match rules tell queries with no similar image (``ood``) from queries that
    have one (each collection item against the others). In-collection queries are the positives.

    * ``fixed``: the best match's similarity, flagged below ``threshold`` (0.5).
    * ``knn`` (what a calibrated index uses): the k-th nearest similarity with the index's k for
      this collection size, flagged below the collection's own k-th-NN similarities at the
      acceptance rate (Sun et al. 2022). On the collection itself the flagged share is then
      ``1 - accept`` by construction.

    Both are the :class:`~lookalike.search.no_match.NoMatchRule` a search applies. The top-level
    ``rule``/``auroc``/error rates are those of the rule the index applies by default (``knn`` when
    the collection has more than two images, else ``fixed``); both are listed under ``rules``.

    With the model's no-match ``view`` both rules read scores in it, as an index does (the index
    re-scores the nearest few by the whole vector; here the neighbours are found in the view itself).
    """
    if view is not None:
        collection, ood = view.apply(collection), view.apply(ood)
    fixed = NoMatchRule.fixed(threshold)
    _, own1 = knn(collection, 1)
    _, ood1 = knn(collection, 1, queries=ood)
    rules: dict[str, dict[str, object]] = {
        "fixed": _rule_scores(_statistics(fixed, own1), _statistics(fixed, ood1), fixed.threshold)
    }
    default = "fixed"
    rule_text = f"fixed: best score < {threshold}"
    if len(collection) > 2:
        k = max(1, min(auto_k(len(collection)), len(collection) - 1))
        rate = accept if accept is not None else DEFAULT_ACCEPT
        _, ownk = knn(collection, k)
        _, oodk = knn(collection, k, queries=ood)
        rule = NoMatchRule.knn(k, _statistics(NoMatchRule("knn", 0.0, k), ownk), rate)
        own_kth, ood_kth = _statistics(rule, ownk), _statistics(rule, oodk)
        rules["knn"] = {"k": k, "accept": rate, **_rule_scores(own_kth, ood_kth, rule.threshold)}
        default = "knn"
        rule_text = f"knn: {k}-th best score below the collection's own at {rate:.0%} acceptance"
    chosen = rules[default]
    return {
        "rule": rule_text,
        "auroc": chosen["auroc"],
        "in_collection_queries": len(own1),
        "ood_queries": len(ood1),
        "ood_missed": chosen["ood_missed"],
        "in_collection_flagged": chosen["in_collection_flagged"],
        "rules": rules,
    }


# -- the whole evaluation ---------------------------------------------------------------------------
@dataclass
class ModelEvaluation:
    """One model's results on one folder. ``scores`` uses raw vectors; ``adapted`` the same vectors
    after the collection-adaptive transform, when asked for."""

    model: str
    dim: int
    images: int
    images_per_second: float
    scores: RetrievalScores
    adaptation: str = "none"
    adapted: RetrievalScores | None = None
    neardup: dict[str, object] | None = None
    ood: dict[str, object] | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.model,
            "dim": self.dim,
            "images": self.images,
            "images_per_second": round(self.images_per_second, 2),
            **self.scores.to_dict(),
        }
        if self.adapted is not None:
            out[self.adaptation] = self.adapted.to_dict()
        if self.neardup is not None:
            out["neardup"] = self.neardup
        if self.ood is not None:
            out["ood"] = self.ood
        if self.failures:
            out["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return out


def evaluate_model(
    model: Embedder | str,
    data: LabelledSet,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    adaptation: str = "none",
    neardup: int = 0,
    ood_sources: Sequence[ImageSource] = (),
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ModelEvaluation:
    """Leave-one-out retrieval of ``data`` with one model, plus the optional near-dup and OOD tests.

    ``neardup``: how many of the folder's images (spread over the classes) become near-dup originals.
    """
    embedder = create_model(model) if isinstance(model, str) else model
    emb = embed_images(embedder, data.paths, workers=workers, progress=progress)
    labels = data.labels[emb.ok]
    if len(labels) < 2:
        raise EvaluationError("need at least two readable labelled images")
    scores = leave_one_out(emb.vectors, labels, class_names=data.class_names, ks=ks)
    result = ModelEvaluation(
        model=embedder.spec.name,
        dim=embedder.spec.dim,
        images=len(labels),
        images_per_second=emb.images_per_second,
        scores=scores,
        failures=[(data.paths[i], reason) for i, reason in emb.failures],
    )
    if adaptation != "none":
        result.adaptation = adaptation
        result.adapted = leave_one_out(adapt(emb.vectors, adaptation), labels, class_names=data.class_names, ks=ks)
    if neardup > 0:
        step = max(1, len(data.paths) // neardup)
        originals = data.paths[::step][:neardup]
        dataset = build_neardup_set(originals)
        vectors = embed_images(embedder, dataset.images, workers=workers).vectors
        result.neardup = neardup_scores(vectors, dataset, default_dup_threshold(embedder.spec.name))
    if ood_sources:
        ood = embed_images(embedder, list(ood_sources), workers=workers)
        if len(ood.ok) == 0:
            raise EvaluationError("none of the out-of-distribution images could be read")
        result.ood = ood_scores(emb.vectors, ood.vectors, view=embedder.spec.no_match_view)
    return result


def collect_images(folder: str | os.PathLike[str]) -> list[str]:
    """Every image under ``folder`` (for ``--ood``), in a stable order."""
    found: list[str] = [f.path for f in walk_images([folder], lambda _skip: None)]
    if not found:
        raise EvaluationError(f"no images under {folder}")
    return sorted(found)

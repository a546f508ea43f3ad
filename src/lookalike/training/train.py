"""``train_model``: labelled folder -> trained, exported, registered model package (both recipes).

Steps: scan the folder, read every image once (unreadable ones skipped and reported), split off a
stratified validation set, train the chosen recipe with early stopping on validation Recall@1, save
the package, export it to ONNX and check the exported graph on real validation images.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lookalike.models.registry import create_model
from lookalike.models.scratch_cnn import EMBED_DIM, INPUT_SIZE, preprocessor
from lookalike.models.trained import ModelPackage, PackageError
from lookalike.training.common import HEAD_BACKBONE, TrainProgress
from lookalike.training.data import LabeledImages, scan_labeled_folder, split_validation
from lookalike.training.features import FeatureCache, extract_features
from lookalike.training.head import HeadConfig, train_head
from lookalike.training.package import check_can_save, save_package
from lookalike.training.scratch import ScratchConfig, train_scratch

RECIPES = ("head", "scratch")


def _skips(data: LabeledImages) -> list[dict[str, str]]:
    return [asdict(s) for s in data.skipped]


def train_model(
    labeled_dir: str | os.PathLike[str],
    name: str,
    *,
    recipe: str = "head",
    epochs: int | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    force: bool = False,
    backbone: str = HEAD_BACKBONE,
    views: int | None = None,
    alpha: float | None = None,
    progress: TrainProgress | None = None,
) -> ModelPackage:
    """Train ``recipe`` on ``labeled_dir`` (``ROOT/<class>/<images>``) and save it as model ``name``.

    Raises :class:`~lookalike.training.data.TrainingDataError` for unusable data and
    :class:`~lookalike.models.trained.PackageError` for a taken or invalid name (before any work).
    """
    if recipe not in RECIPES:
        raise PackageError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise PackageError("alpha (the backbone's share of the vector) must be between 0 and 1", parameters=("alpha",))
    if epochs is not None and epochs < 1:
        raise PackageError("epochs must be at least 1", parameters=("epochs",))
    check_can_save(name, force)
    progress = progress or TrainProgress()
    started = time.perf_counter()
    progress.stage("scan", None)
    data = scan_labeled_folder(labeled_dir)
    job = _Job(data, name, epochs, val_split, seed, force, progress)
    package = _train_head(job, backbone, views, alpha) if recipe == "head" else _train_scratch(job)
    progress.message(f"saved model {name!r} to {package.path} in {time.perf_counter() - started:.0f} s")
    return package


def _split(data: LabeledImages, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    train_idx, val_idx = split_validation(data.labels, val_split, seed)
    return train_idx, val_idx


def _base_report(data: LabeledImages, recipe: str, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": {
            "root": str(data.root),
            "classes": data.classes,
            "images_per_class": data.counts(),
            "train_images": len(train_idx),
            "val_images": len(val_idx),
            "skipped": _skips(data),
        },
    }


@dataclass(frozen=True)
class _Job:
    """What every recipe is given: the scanned folder, the package name and the shared settings."""

    data: LabeledImages
    name: str
    epochs: int | None
    val_split: float
    seed: int
    force: bool
    progress: TrainProgress

    def unpack(self) -> tuple[LabeledImages, str, int | None, float, int, bool, TrainProgress]:
        return self.data, self.name, self.epochs, self.val_split, self.seed, self.force, self.progress


def _train_head(job: _Job, backbone_name: str, views: int | None, alpha: float | None) -> ModelPackage:
    data, name, epochs, val_split, seed, force, progress = job.unpack()
    config = HeadConfig(backbone=backbone_name, seed=seed, views=views)
    if alpha is not None:
        config.alpha = alpha
    if epochs is not None:
        config.epochs = epochs
    backbone = create_model(backbone_name)
    cache = FeatureCache(backbone)
    try:
        # Pass 1: the plain view of every image (this is also where unreadable files are found).
        t0 = time.perf_counter()
        progress.stage("features", len(data))
        plain, _, skips, computed = extract_features(backbone, data.paths, (0,), cache=cache, on_done=progress.advance)
        kept = np.array([i for i in range(len(data)) if (i, 0) in plain], dtype=np.int64)
        features = np.stack([plain[(i, 0)] for i in kept.tolist()]) if len(kept) else np.zeros((0, 0))
        data = data.subset(kept, skips)
        for skip in skips:
            progress.message(f"skipped {skip.path}: {skip.reason} ({skip.detail})")
        data.check()
        train_idx, val_idx = _split(data, val_split, seed)
        # Pass 2: augmented views of the training images only (cached like the plain ones).
        n_views = config.augment_views(len(train_idx))
        extra = np.zeros((0, features.shape[1]), np.float32)
        extra_labels = np.zeros(0, np.int64)
        if n_views:
            progress.stage("augmented views", len(train_idx))
            train_paths = [data.paths[i] for i in train_idx.tolist()]
            aug, _, _unreadable_now, aug_computed = extract_features(
                backbone, train_paths, range(1, n_views + 1), cache=cache, on_done=progress.advance
            )
            computed += aug_computed
            keys = sorted(aug)
            extra = np.stack([aug[k] for k in keys])
            extra_labels = data.labels[train_idx][[k[0] for k in keys]]
        feature_seconds = time.perf_counter() - t0
    finally:
        cache.close()

    progress.stage("train", config.epochs)
    result = train_head(
        np.concatenate([features[train_idx], extra]),
        np.concatenate([data.labels[train_idx], extra_labels]),
        len(data.classes),
        config,
        gallery_features=features[train_idx],
        gallery_labels=data.labels[train_idx],
        val_features=features[val_idx],
        val_labels=data.labels[val_idx],
        progress=progress,
    )
    report = _base_report(data, "head", train_idx, val_idx)
    report["config"] = config.to_dict() | {"augment_views_used": n_views}
    report["history"] = [h.to_dict() for h in result.history]
    report["best_epoch"] = result.best_epoch
    report["stopped_early"] = result.stopped_early
    report["val_recall_at_1"] = {
        "frozen_backbone": result.frozen_val_recall_at_1,
        "untrained_head": result.history[0].val_recall_at_1,
        "trained": _best(result.history, result.best_epoch),
    }
    report["timings"] = {
        "feature_seconds": feature_seconds,
        "features_computed": computed,
        "features_from_cache": len(data) + n_views * len(train_idx) - computed,
        "train_seconds": result.train_seconds,
    }
    package_config = {
        "recipe": "head",
        "backbone": backbone_name,
        "backbone_identity": backbone.spec.identity(),
        "in_dim": result.in_dim,
        "hidden": config.hidden,
        "dim": config.out_dim(result.in_dim),  # the embedding: frozen vector + head output when blended
        "head_dim": config.dim,
        "alpha": config.alpha,
        "classes": data.classes,
        "preprocessing": f"{backbone.spec.preprocessing};backbone={backbone_name}",
        "input_size": backbone.spec.input_size,
    }
    package = save_package(name, package_config, result.state_dict, report, force=force)
    progress.stage("export", None)
    _check_export(package, features[val_idx[:16]] if len(val_idx) else features[:16], result.state_dict, config)
    return package


def _check_export(package: ModelPackage, sample: np.ndarray, state: dict[str, Any], config: HeadConfig) -> None:
    """Export to ONNX (cached) and make sure the graph reproduces the torch head on real features."""
    import torch

    from lookalike.models.projection_head import load_head
    from lookalike.models.trained import HeadEmbedder

    embedder = package.embedder()
    assert isinstance(embedder, HeadEmbedder)
    head = load_head(state, sample.shape[1], config.hidden, config.dim, config.alpha)
    with torch.inference_mode():
        want = head(torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))).numpy()
    diff = float(np.abs(embedder.embed_features(sample) - want).max()) if len(sample) else 0.0
    if diff > 1e-3:
        raise PackageError(f"the ONNX export of {package.name!r} differs from torch by {diff:.3g}")


def _best(history: list, epoch: int) -> float | None:
    for stats in history:
        if stats.epoch == epoch:
            return stats.val_recall_at_1
    return None


def _train_scratch(job: _Job) -> ModelPackage:
    data, name, epochs, val_split, seed, force, progress = job.unpack()
    from lookalike.training.data import load_all

    config = ScratchConfig(seed=seed)
    if epochs is not None:
        config.epochs = epochs
    pre = preprocessor()
    t0 = time.perf_counter()
    progress.stage("decode", len(data))
    n_before = len(data.skipped)
    data, pixels_list = load_all(
        data,
        lambda image, _i: np.asarray(pre.resize(image), dtype=np.uint8).transpose(2, 0, 1).copy(),
        draft_size=INPUT_SIZE,
        on_done=progress.advance,
    )
    for skip in data.skipped[n_before:]:
        progress.message(f"skipped {skip.path}: {skip.reason} ({skip.detail})")
    pixels = np.stack(pixels_list)
    decode_seconds = time.perf_counter() - t0
    train_idx, val_idx = _split(data, val_split, seed)
    progress.stage("train", config.epochs)
    result = train_scratch(
        pixels[train_idx],
        data.labels[train_idx],
        len(data.classes),
        config,
        val_pixels=pixels[val_idx],
        val_labels=data.labels[val_idx],
        progress=progress,
    )
    report = _base_report(data, "scratch", train_idx, val_idx)
    report["config"] = config.to_dict()
    report["history"] = [h.to_dict() for h in result.history]
    report["best_epoch"] = result.best_epoch
    report["stopped_early"] = result.stopped_early
    report["val_recall_at_1"] = {
        "untrained": result.history[0].val_recall_at_1,
        "trained": _best(result.history, result.best_epoch),
    }
    report["timings"] = {"decode_seconds": decode_seconds, "train_seconds": result.train_seconds}
    package_config = {
        "recipe": "scratch",
        "dim": EMBED_DIM,
        "classes": data.classes,
        "preprocessing": pre.describe() + ";scratch-cnn",
        "input_size": INPUT_SIZE,
    }
    package = save_package(name, package_config, result.state_dict, report, force=force)
    progress.stage("export", None)
    package.embedder()  # exports to ONNX and checks it against torch on a fixed batch
    return package

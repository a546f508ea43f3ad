"""Recipe ``head``: a small projection head trained on cached, frozen backbone features.

Why this recipe is the default: on 2 CPU cores the backbone's forward pass is the whole cost, and a
frozen backbone lets us pay it once per image (cached, see :mod:`lookalike.training.features`).
Training then touches only ~0.8M parameters on 1280-d vectors, so tens of epochs over 60,000 images
take about a minute instead of hours, and there is too little capacity to destroy the backbone's
general knowledge (which matters for classes the head never saw).

Architecture: ``Linear(in, 512) -> BatchNorm -> ReLU -> Linear(512, dim)`` then L2 normalisation,
blended with the frozen vector (:mod:`lookalike.models.projection_head`, where loading a trained
package finds it too).

Loss: *normalised softmax* (cosine classifier with one learnable proxy per class, scale 16, label
smoothing 0.1; Zhai & Wu 2019, "Classification is a strong baseline for deep metric learning").
Reasons: Musgrave et al. (2020, "A metric learning reality check") found it on par with newer
pair/proxy losses under fair tuning; it needs no pair mining or class-balanced batches, so any batch
of a long-tailed user folder works; its cost is linear in the batch; and its cosine geometry is the
one the index searches with. The input is the backbone's L2-normalised vector, as stored in an index.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lookalike.evaluation.metrics import leave_one_out
from lookalike.models.projection_head import build_head
from lookalike.training.common import (
    EarlyStopping,
    EpochStats,
    TrainProgress,
    close_epoch,
    finish_training,
    optimise,
    seed_everything,
)

if TYPE_CHECKING:
    from torch import nn


@dataclass
class HeadConfig:
    """Hyper-parameters of the head recipe; all go into the package's config and report."""

    backbone: str = "mobilenet_v2"
    dim: int = 256
    hidden: int = 512
    epochs: int = 40
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scale: float = 16.0
    label_smoothing: float = 0.1
    patience: int = 6
    max_gallery: int = 10_000  # training images searched by validation queries each epoch (cost cap)
    views: int | None = None  # augmented views per training image; None: 2 up to 10k images, else 0
    seed: int = 0
    # Weight of the frozen backbone vector in the embedding (see build_head); 0 = head output only.
    alpha: float = 0.8
    centre: bool = False  # subtract the training mean from the frozen vector before blending

    def out_dim(self, in_dim: int) -> int:
        """Size of the saved embedding: frozen vector + head output when blended."""
        return in_dim + self.dim if self.alpha > 0 else self.dim

    def augment_views(self, n_train: int) -> int:
        if self.views is not None:
            return self.views
        return 2 if n_train <= 10_000 else 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class HeadResult:
    state_dict: dict[str, object]
    in_dim: int
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    frozen_val_recall_at_1: float | None = None
    train_seconds: float = 0.0


def embed_with(head: nn.Module, features: np.ndarray, batch: int = 4096) -> np.ndarray:
    import torch

    head.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(features), batch):
            out.append(head(torch.from_numpy(features[start : start + batch])).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def validation_recall(val: np.ndarray, val_labels: np.ndarray, train: np.ndarray, train_labels: np.ndarray) -> float:
    """Recall@1 of validation images searching validation + training images (leave-one-out).

    Searching the training images too is what a user's index does, and it keeps the metric stable
    when the validation split has only a few images per class. Computed by ``lookalike eval``'s
    :func:`~lookalike.evaluation.metrics.leave_one_out` (cosine, ties to the lower index), so the two
    commands report the same Recall@1 for the same vectors.
    """
    gallery = np.concatenate([val, train])
    labels = np.concatenate([val_labels, train_labels])
    scores = leave_one_out(gallery, labels, ks=(1,), query_rows=np.arange(len(val)), with_map_at_r=False)
    if scores.n_queries == 0:
        raise ValueError("no validation image has a same-label image to find")
    return scores.recall[1]


def train_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    config: HeadConfig,
    *,
    gallery_features: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    progress: TrainProgress | None = None,
) -> HeadResult:
    """Train the head on ``(n, in_dim)`` backbone features (augmented views included as extra rows).

    ``gallery_*`` are the training images' plain (view 0) features, searched by the validation
    queries; early stopping keeps the epoch with the best validation Recall@1.
    """
    import torch
    from torch import nn

    progress = progress or TrainProgress()
    rng = seed_everything(config.seed)
    in_dim = train_features.shape[1]
    head = build_head(in_dim, config.hidden, config.dim, config.alpha)
    if config.alpha > 0 and config.centre and len(train_features):
        head.mean.copy_(torch.from_numpy(np.asarray(train_features, np.float32).mean(axis=0)))
    proxies = nn.Parameter(torch.randn(n_classes, config.dim) * 0.1)
    optimizer = torch.optim.AdamW(
        [
            {"params": head.parameters(), "lr": config.lr},
            {"params": [proxies], "lr": config.lr * 10, "weight_decay": 0.0},
        ],
        weight_decay=config.weight_decay,
    )
    # Small folders: shrink the batch so that an epoch is still several optimiser steps.
    batch_size = min(config.batch_size, max(16, len(train_features) // 8))
    steps_per_epoch = max(1, int(np.ceil(len(train_features) / batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[config.lr, config.lr * 10],
        total_steps=steps_per_epoch * config.epochs,
        pct_start=0.1,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x_all = torch.from_numpy(np.ascontiguousarray(train_features, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    has_val = val_features is not None and val_labels is not None and len(val_features) > 0
    gallery = gallery_features if gallery_features is not None else np.zeros((0, in_dim), np.float32)
    g_labels = gallery_labels if gallery_labels is not None else np.zeros(0, np.int64)
    if len(gallery) > config.max_gallery:  # a fixed random subset: per-epoch validation stays cheap
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(gallery))[: config.max_gallery])
        gallery, g_labels = gallery[keep], g_labels[keep]

    def evaluate() -> float | None:
        if not has_val:
            return None
        return validation_recall(embed_with(head, val_features), val_labels, embed_with(head, gallery), g_labels)

    result = HeadResult(state_dict={}, in_dim=in_dim)
    if has_val:
        result.frozen_val_recall_at_1 = validation_recall(val_features, val_labels, gallery, g_labels)
    stopper = EarlyStopping(config.patience)
    start_time = time.perf_counter()
    score = evaluate()  # the untrained head: the baseline every epoch is compared with in the report
    stats = EpochStats(0, config.epochs, None, score, None, 0.0)
    result.history.append(stats)
    progress.epoch(stats)
    # A batch of one cannot pass BatchNorm in training mode; drop such a ragged last batch.
    drop_last = len(x_all) % batch_size == 1
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        head.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            if len(idx) < 2 or (drop_last and step == steps_per_epoch - 1 and len(idx) == 1):
                scheduler.step()
                continue
            emb = head.project(x_all[idx])
            logits = config.scale * emb @ nn.functional.normalize(proxies, dim=1).T
            batch_loss = loss_fn(logits, y_all[idx])
            total += optimise(batch_loss, optimizer, scheduler) * len(idx)
            seen += len(idx)
        score = evaluate()
        loss = total / max(seen, 1)
        if close_epoch(
            stopper, result, head, progress, epoch=epoch, epochs=config.epochs, loss=loss, score=score, started=t0
        ):
            break
    return finish_training(result, stopper, start_time)

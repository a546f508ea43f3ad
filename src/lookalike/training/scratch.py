"""Recipe ``scratch``: the original system's CNN, trained from random weights, for parity and comparison.

The network (:mod:`lookalike.models.scratch_cnn`, where loading a trained package finds it too) is
trained as a classifier (cross-entropy); afterwards the 128-d and class layers are dropped and the
514-d fc1 activation is the embedding.

Cost: about 1 GFLOP per 100x100 image forward, ~3 GFLOP forward + backward, so roughly 10-20 images/s
per epoch on 2 CPU cores: fine for a few thousand images, hours for 60,000 (use ``head`` there).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lookalike.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from lookalike.models.scratch_cnn import EMBED_DIM, build_scratch
from lookalike.training import common
from lookalike.training.common import EpochStats, TrainProgress
from lookalike.training.head import validation_recall

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class ScratchConfig:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    max_gallery: int = 5000  # training images searched by validation queries each epoch
    seed: int = 0
    device: str = "cpu"  # a torch device; the benchmark trains the 60k-image run on a GPU

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ScratchResult:
    state_dict: dict[str, object]
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0


def _normalizer() -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0
    return mean, std


def embed_pixels(model: nn.Module, pixels: np.ndarray, batch: int = 256, device: str = "cpu") -> np.ndarray:
    import torch

    mean, std = (t.to(device) for t in _normalizer())
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch):
            x = (torch.from_numpy(pixels[start : start + batch]).to(device).float() - mean) / std
            out.append(model.embed(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 6) -> torch.Tensor:
    """Random mirror + random shift by up to ``pad`` pixels (reflect padding), per image."""
    import torch

    n = x.shape[0]
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    size = x.shape[-1]
    return torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])


def train_scratch(
    train_pixels: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    config: ScratchConfig,
    *,
    val_pixels: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    progress: TrainProgress | None = None,
) -> ScratchResult:
    """Train on ``(n, 3, 100, 100) uint8`` pixels; early stopping on validation Recall@1 of fc1."""
    import torch
    from torch import nn

    progress = progress or TrainProgress()
    rng = common.seed_everything(config.seed)
    if config.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_scratch(n_classes).to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, int(np.ceil(len(train_pixels) / config.batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=steps * config.epochs, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    mean, std = (t.to(config.device) for t in _normalizer())
    y_all = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(config.device)
    has_val = val_pixels is not None and val_labels is not None and len(val_pixels) > 0
    gallery_idx = np.sort(rng.permutation(len(train_pixels))[: config.max_gallery])

    def evaluate() -> float | None:
        if not has_val:
            return None
        return validation_recall(
            embed_pixels(model, val_pixels, device=config.device),
            val_labels,
            embed_pixels(model, train_pixels[gallery_idx], device=config.device),
            np.asarray(train_labels)[gallery_idx],
        )

    result = ScratchResult(state_dict={})
    stopper = common.EarlyStopping(config.patience)
    start_time = time.perf_counter()
    stats = EpochStats(0, config.epochs, None, evaluate(), None, 0.0)
    result.history.append(stats)
    progress.epoch(stats)
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_pixels))
        total, seen = 0.0, 0
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                scheduler.step()
                continue
            x = (torch.from_numpy(train_pixels[np.sort(idx)]).to(config.device).float() - mean) / std
            x = _augment(x, gen)
            batch_loss = loss_fn(model(x), y_all[np.sort(idx)])
            total += common.optimise(batch_loss, optimizer, scheduler) * len(idx)
            seen += len(idx)
        score = evaluate()
        loss = total / max(seen, 1)
        if common.close_epoch(
            stopper, result, model, progress, epoch=epoch, epochs=config.epochs, loss=loss, score=score, started=t0
        ):
            break
    return common.finish_training(result, stopper, start_time)

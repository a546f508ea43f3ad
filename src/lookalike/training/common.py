"""Pieces both recipes share: per-epoch statistics, early stopping, seeding, the progress protocol."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The frozen backbone of the ``head`` recipe: the one bench/bench_train.py measured (the head is
#: trained on its plain top-layer vector; the default search model is ``mobilenet_v2_ml``).
HEAD_BACKBONE = "mobilenet_v2"


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean training loss and validation Recall@1 (``None`` without a validation split)."""

    epoch: int  # 0 = before any training (the untrained network)
    epochs: int
    loss: float | None
    val_recall_at_1: float | None
    best_recall_at_1: float | None
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TrainProgress:
    """Callbacks from a training run; the CLI implements them with a progress bar. No-ops by default."""

    def stage(self, name: str, total: int | None) -> None:
        """A new stage starts (``"scan"``, ``"features"``, ``"decode"``, ``"train"``, ``"export"``)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the current stage are done."""

    def epoch(self, stats: EpochStats) -> None:
        """An epoch (or the epoch-0 evaluation of the untrained network) finished."""

    def message(self, text: str) -> None:
        """Something the user should read (skipped files, early stop)."""


class EarlyStopping:
    """Stop after ``patience`` epochs without a strictly better validation Recall@1; remember the best."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, score: float | None) -> bool:
        """Record an epoch; True when it is the new best (always, without validation)."""
        if score is None:
            self.best_epoch = epoch
            return True
        if self.best is None or score > self.best + 1e-9:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.best is not None and self.bad_epochs >= self.patience


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch so two runs with one seed train the same network (on one machine)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def close_epoch(
    stopper: EarlyStopping,
    result: Any,
    module: Any,
    progress: TrainProgress,
    *,
    epoch: int,
    epochs: int,
    loss: float,
    score: float | None,
    started: float,
) -> bool:
    """End one epoch the same way in every recipe: keep the best weights, report, decide to stop.

    ``result`` needs ``state_dict``, ``history`` and ``stopped_early``; returns True to stop training.
    """
    if stopper.update(epoch, score):
        result.state_dict = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    stats = EpochStats(epoch, epochs, loss, score, stopper.best, time.perf_counter() - started)
    result.history.append(stats)
    progress.epoch(stats)
    if not stopper.should_stop:
        return False
    result.stopped_early = epoch < epochs
    progress.message(
        f"early stop after epoch {epoch}: validation Recall@1 has not improved for "
        f"{stopper.patience} epochs (best {stopper.best:.3f} at epoch {stopper.best_epoch})"
    )
    return True


def optimise(loss: Any, optimizer: Any, scheduler: Any) -> float:
    """One optimisation step of any recipe (and one scheduler step); returns the batch's loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.item())


def finish_training(result: Any, stopper: EarlyStopping, started: float) -> Any:
    """Record the best epoch and the training time on ``result`` (every recipe ends so)."""
    result.best_epoch = stopper.best_epoch
    result.train_seconds = time.perf_counter() - started
    return result

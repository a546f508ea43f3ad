"""``lookalike train``: fine-tune a feature extractor on a labelled folder and register it by name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lookalike.cli.common import JsonOption, QuietOption, err, friendly_errors, out, print_json
from lookalike.training.common import HEAD_BACKBONE, EpochStats, TrainProgress


def register(app: typer.Typer) -> None:
    app.command("train")(friendly_errors()(train_command))  # a full disk: one line, not a traceback


class RichTrainProgress(TrainProgress):
    """One bar per stage (features, epochs); each epoch also prints a line with loss and Recall@1."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=err,
            disable=not enabled,
        )
        self.task: int | None = None

    def __enter__(self) -> RichTrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def stage(self, name: str, total: int | None) -> None:
        if self.task is not None:
            self.bar.stop_task(self.task)
        self.task = self.bar.add_task(name, total=total, info="")

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)

    def epoch(self, stats: EpochStats) -> None:
        recall = "–" if stats.val_recall_at_1 is None else f"{stats.val_recall_at_1:.3f}"
        loss = "–" if stats.loss is None else f"{stats.loss:.4f}"
        best = "" if stats.best_recall_at_1 is None else f" (best {stats.best_recall_at_1:.3f})"
        if self.task is not None:
            self.bar.update(self.task, completed=stats.epoch, info=f"loss {loss}  val R@1 {recall}{best}")
        label = "untrained" if stats.epoch == 0 else f"epoch {stats.epoch}/{stats.epochs}"
        if self.enabled:
            self.bar.console.print(f"{label:>14}  loss {loss:>7}  val Recall@1 {recall}{best}")

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(text)


def train_command(
    labeled_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per class.")],
    name: Annotated[str, typer.Option("--name", help="Name to register the model under (use with --model).")],
    recipe: Annotated[
        str, typer.Option(help="head: small head on a frozen pretrained backbone (fast); scratch: the original CNN.")
    ] = "head",
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum epochs (default: head 40, scratch 15).")] = None,
    val_split: Annotated[float, typer.Option(help="Share of each class held out for validation.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed (split, initialisation, batches).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model with this name.")] = False,
    backbone: Annotated[str, typer.Option(help="Frozen backbone for --recipe head.")] = HEAD_BACKBONE,
    views: Annotated[
        int | None, typer.Option(min=0, help="Augmented views per training image (head; default: 2 up to 10k images).")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Weight of the frozen backbone vector in a head model's embedding (default 0.8)."
        ),
    ] = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a feature extractor on LABELED_DIR and register it as NAME (`lookalike index --model NAME`)."""
    from lookalike.training.train import train_model

    with RichTrainProgress(enabled=not (quiet or json_output)) as progress:  # errors: friendly_errors
        package = train_model(
            labeled_dir,
            name,
            recipe=recipe,
            epochs=epochs,
            val_split=val_split,
            seed=seed,
            force=force,
            backbone=backbone,
            views=views,
            alpha=alpha,
            progress=progress,
        )
    report = package.report
    if json_output:
        print_json({"name": package.name, "path": str(package.path), "report": report})
        return
    recalls = report.get("val_recall_at_1", {})
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in recalls.items() if v is not None)
    skipped = report["data"]["skipped"]
    out.print(
        f"model [bold]{package.name}[/bold] ({package.recipe}, {package.config['dim']}-d, "
        f"{len(package.classes)} classes, {report['data']['train_images']} training images)"
    )
    if shown:
        out.print(f"validation Recall@1: {shown}")
    if skipped:
        out.print(f"{len(skipped)} files skipped (see {package.path / 'report.json'})")
    out.print(f"use it: [bold]lookalike index FOLDER --db DB --model {package.name}[/bold]")

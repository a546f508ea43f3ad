"""``eval`` (retrieval quality on your own labelled folder) and ``models`` (what can run here)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lookalike.cli.common import JsonOption, err, fail, friendly_errors, out, print_json
from lookalike.evaluation.metrics import DEFAULT_KS
from lookalike.evaluation.retrieval import (
    ADAPTATIONS,
    ModelEvaluation,
    collect_images,
    evaluate_model,
    labelled_folder,
)
from lookalike.models.registry import DEFAULT_MODEL, ModelInfo, UnknownModelError, create_model, list_models
from lookalike.models.weights import WeightsNotInstalledError


def register(app: typer.Typer) -> None:
    # No index here, but files all the same: a full disk or unreadable folder is one line, not a traceback.
    app.command("eval")(friendly_errors()(eval_command))
    app.command("models")(friendly_errors()(models_command))


def eval_command(
    labeled_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per class.")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help=f"Model to evaluate (repeatable; default {DEFAULT_MODEL})."),
    ] = None,
    json_output: JsonOption = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print Markdown tables (for a README or issue).")
    ] = False,
    neardup: Annotated[
        bool, typer.Option("--neardup", help="Also run a copy-detection test built from the folder's images.")
    ] = False,
    neardup_images: Annotated[
        int, typer.Option("--neardup-images", min=2, help="How many images become near-duplicate originals.")
    ] = 50,
    ood: Annotated[
        Path | None, typer.Option("--ood", help="Folder of images unlike the collection: AUROC of the no-match rule.")
    ] = None,
    adaptation: Annotated[
        str, typer.Option("--adapt", help="Also score after collection-adaptive 'center' or 'whiten'.")
    ] = "none",
    workers: Annotated[int | None, typer.Option(help="Decode threads (default: min(4, CPUs)).")] = None,
) -> None:
    """Leave-one-out retrieval over a labelled folder: Recall@1/5/10, mAP@R, per-class table, images/s."""
    if json_output and markdown:
        fail("choose one of --json and --markdown")
    if adaptation not in ADAPTATIONS:
        fail(f"--adapt must be one of {', '.join(ADAPTATIONS)}")
    names = model or [DEFAULT_MODEL]
    data = labelled_folder(labeled_dir)
    ood_sources = collect_images(ood) if ood is not None else []
    if not json_output:
        err.print(f"{len(data.paths)} images in {len(data.class_names)} classes under {labeled_dir}")
    results: list[ModelEvaluation] = []
    for name in names:
        try:
            embedder = create_model(name)
        except (UnknownModelError, WeightsNotInstalledError, ImportError) as exc:
            fail(f"model {name}: {exc}")
        with _bar(name, len(data.paths), enabled=not json_output) as advance:
            results.append(
                evaluate_model(
                    embedder,
                    data,
                    adaptation=adaptation,
                    neardup=neardup_images if neardup else 0,
                    ood_sources=ood_sources,
                    workers=workers,
                    progress=advance,
                )
            )
    if json_output:
        print_json(_document(labeled_dir, data.class_names, results))
    elif markdown:
        out.print(_markdown(results), markup=False, highlight=False, soft_wrap=True)
    else:
        _print_tables(results)


class _bar:
    """A progress bar on stderr that gives ``evaluate_model`` an ``advance(n)`` callback."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]embedding with {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
            transient=True,
        )
        self.task = self.progress.add_task(name, total=total)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.progress.__enter__()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)


def _document(folder: Path, classes: list[str], results: list[ModelEvaluation]) -> dict[str, object]:
    """The JSON contract: the first model's scores at the top level, every model under ``models``."""
    first = results[0].to_dict()
    return {
        "folder": str(folder),
        "classes": classes,
        **first,
        "models": [r.to_dict() for r in results],
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _summary_rows(results: list[ModelEvaluation]) -> tuple[list[str], list[list[str]]]:
    ks = list(DEFAULT_KS)
    header = ["model", "dim", *[f"R@{k}" for k in ks], "mAP@R", "images/s"]
    rows = [
        [
            r.model,
            str(r.dim),
            *[_fmt(r.scores.recall[k]) for k in ks],
            _fmt(r.scores.map_at_r),
            f"{r.images_per_second:.1f}",
        ]
        for r in results
    ]
    return header, rows


def _extra_rows(results: list[ModelEvaluation]) -> tuple[list[str], list[list[str]]]:
    """Adapted scores, near-dup and OOD columns; empty when none was asked for."""
    header = ["model"]
    adapted = any(r.adapted is not None for r in results)
    if adapted:
        header += [f"R@1 {results[0].adaptation}", f"mAP@R {results[0].adaptation}"]
    dup = any(r.neardup for r in results)
    if dup:
        header += ["dup P", "dup R", "dup F1", "best F1"]
    ood = any(r.ood for r in results)
    if ood:
        header += ["OOD AUROC"]
    if len(header) == 1:
        return header, []
    rows = []
    for r in results:
        row = [r.model]
        if adapted:
            row += [_fmt(r.adapted.recall[1]), _fmt(r.adapted.map_at_r)] if r.adapted else ["", ""]
        if dup:
            row += [_fmt(r.neardup[key]) for key in ("precision", "recall", "f1", "best_f1")] if r.neardup else [""] * 4
        if ood:
            row.append(_fmt(r.ood["auroc"]) if r.ood else "")
        rows.append(row)
    return header, rows


def _class_rows(results: list[ModelEvaluation]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "n"] + [f"{r.model} R@1 / mAP@R" for r in results]
    rows = []
    for name, first in results[0].scores.per_class.items():
        row = [name, str(first["n"])]
        for r in results:
            cls = r.scores.per_class.get(name, {})
            row.append(f"{_fmt(cls.get('recall@1', float('nan')))} / {_fmt(cls.get('map@r', float('nan')))}")
        rows.append(row)
    return header, rows


def _print_tables(results: list[ModelEvaluation]) -> None:
    for title, (header, rows) in (
        ("leave-one-out retrieval", _summary_rows(results)),
        ("collection-adaptive / near-duplicate / no-match", _extra_rows(results)),
        ("per class", _class_rows(results)),
    ):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    for r in results:
        if r.neardup:
            edits = ", ".join(f"{k} {v:.2f}" for k, v in r.neardup["recall_by_edit"].items())  # type: ignore[union-attr]
            out.print(
                f"{r.model}: near-duplicate test on {r.neardup['images']} images at threshold "
                f"{r.neardup['threshold']}; copies found per edit: {edits}. "
                f"Best F1 {r.neardup['best_f1']:.3f} at {r.neardup['best_threshold']:.3f} (chosen with the labels)."
            )
        if r.ood:
            out.print(
                f"{r.model}: no-match rule ({r.ood['rule']}) AUROC {r.ood['auroc']:.3f}; at its threshold it "
                f"misses {r.ood['ood_missed']:.0%} of {r.ood['ood_queries']} unrelated queries and wrongly "
                f"flags {r.ood['in_collection_flagged']:.0%} of in-collection queries."
            )
        if r.failures:
            err.print(f"[yellow]{r.model}: {len(r.failures)} images could not be read (see --json)[/yellow]")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(results: list[ModelEvaluation]) -> str:
    parts = [_summary_rows(results), _extra_rows(results), _class_rows(results)]
    return "\n\n".join(_markdown_table(h, rows) for h, rows in parts if rows) + "\n"


# -- models ---------------------------------------------------------------------------------------
#: Where the reference speeds (``ModelSettings.reference_speed``, registered with each model) come from.
#: `lookalike models --measure` measures on this machine instead.
SPEED_SOURCE = "bench/bench_models.py on a quiet 2-core machine (model only)"


def _model_row(info: ModelInfo) -> dict[str, object]:
    row: dict[str, object] = {
        "name": info.name,
        "dim": info.dim,
        "offline": info.offline,
        "description": info.description,
    }
    if info.weights is None:
        row.update(available=True, size_bytes=0, note="no weights needed")
        return row
    try:
        path = info.weights()
    except (WeightsNotInstalledError, ImportError, OSError, ValueError) as exc:
        row.update(available=False, size_bytes=None, note=str(exc).strip().splitlines()[-1].strip())
        return row
    row.update(available=True, size_bytes=os.path.getsize(path), note=path)
    return row


def _measure(name: str, n: int = 64) -> float:
    """Images/s of preprocess + model on ``n`` synthetic 640x480 pictures (one warm-up batch first)."""
    from PIL import Image

    model = create_model(name)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]
    model.embed(pictures[: model.batch_size])
    started = time.perf_counter()
    model.embed(pictures)
    return n / (time.perf_counter() - started)


def models_command(
    json_output: JsonOption = False,
    measure: Annotated[
        bool, typer.Option("--measure", help="Time each available model here (loads every model: slow).")
    ] = False,
) -> None:
    """List the models: dimension, weights size, speed, and whether they can run offline here."""
    infos = list_models()
    rows = [_model_row(info) for info in infos]
    for info, row in zip(infos, rows, strict=True):
        name = info.name
        if measure and row["available"]:
            try:
                row["images_per_second"] = round(_measure(name), 1)
                row["speed_source"] = "measured here"
            except Exception as exc:  # report, keep listing the others
                row["images_per_second"] = None
                row["note"] = f"{row['note']}; measuring failed: {exc}"
        elif info.settings.reference_speed is not None:
            row["images_per_second"] = info.settings.reference_speed
            row["speed_source"] = SPEED_SOURCE
        else:
            row["images_per_second"] = None
    if json_output:
        print_json({"default": DEFAULT_MODEL, "models": rows})
        return
    table = Table(title=f"models (default: {DEFAULT_MODEL})", title_justify="left")
    for col in ("name", "dim", "weights", "images/s", "offline", "here"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        size = row["size_bytes"]
        speed = row.get("images_per_second")
        table.add_row(
            str(row["name"]),
            str(row["dim"] or "varies"),
            "–" if size is None else ("none" if size == 0 else f"{int(size) / 1e6:.1f} MB"),  # type: ignore[arg-type]
            "–" if speed is None else f"{speed}",
            "yes" if row["offline"] else "no",
            "yes" if row["available"] else "no",
        )
    out.print(table)
    for row in rows:
        out.print(f"[bold]{row['name']}[/bold]: {row['description']}")
        if not row["available"]:
            out.print(f"  not available here: {row['note']}")
    if not measure:
        out.print(
            "images/s: model-only reference figures from a quiet 2-core machine (decoding is extra); "
            "`lookalike models --measure` times them here."
        )

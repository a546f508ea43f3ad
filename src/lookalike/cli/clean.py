"""``dups``, ``sweep`` and ``restore``: find duplicates or look-alikes, review them, quarantine with undo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import (
    DEFAULT_DB,
    DbOption,
    JsonOption,
    OptionalDbOption,
    err,
    fail,
    friendly_errors,
    out,
    print_json,
)
from lookalike.dedup.groups import LINKAGES, DupGroup, default_margin, default_threshold, find_duplicate_groups
from lookalike.dedup.keep import DEFAULT_KEEP, KEEP_RULES
from lookalike.dedup.quarantine import QuarantineReport, RestoreReport, quarantine, restore
from lookalike.dedup.report import dups_html, sweep_html, write_html
from lookalike.dedup.sweep import DEFAULT_SWEEP_THRESHOLD, sweep
from lookalike.dedup.threshold import precision_threshold
from lookalike.dedup.turns import TurnedViews
from lookalike.index import Index

HtmlOption = Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML review page here.")]
QuarantineOption = Annotated[
    Path | None,
    typer.Option(
        "--quarantine",
        help="Move the found files into this folder (outside the indexed folders), keeping their relative "
        "paths; writes a manifest for `lookalike restore`. Without it nothing is moved (dry run).",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("dups")(dups_command)
    app.command("sweep")(sweep_command)
    app.command("restore")(restore_command)


def dups_command(
    db: DbOption = DEFAULT_DB,
    threshold: Annotated[
        float | None,
        typer.Option(min=-1.0, max=1.0, help="Cosine similarity for near-duplicates (default: the model's)."),
    ] = None,
    precision: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Pick the threshold that reaches this precision, from the collection's calibration "
            "(`lookalike calibrate`), e.g. 0.99.",
        ),
    ] = None,
    keep: Annotated[
        str, typer.Option(help=f"Which copy to keep: {', '.join(KEEP_RULES)} (best = most pixels, largest, oldest).")
    ] = DEFAULT_KEEP,
    linkage: Annotated[
        str, typer.Option(help="anchor: every duplicate is similar to the kept copy; complete: to every member.")
    ] = "anchor",
    k: Annotated[
        int, typer.Option("-k", min=1, max=1000, help="Neighbours examined per image (and the margin's crowd rank).")
    ] = 16,
    margin: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Density margin: a pair must also beat both images' k-th-neighbour score by this much "
            "(default: the model's, 0.07 for mobilenet_v2_ml and mobilenet_v2; 0 turns it off: plain threshold).",
        ),
    ] = None,
    turns: Annotated[
        bool,
        typer.Option(
            "--turns",
            help="Also find copies turned by 90/180/270 degrees: re-reads the images left ungrouped (and those "
            "in groups of 2-3) and embeds their quarter turns (3 model runs per such image; slower).",
        ),
    ] = False,
    crops: Annotated[
        bool,
        typer.Option(
            "--crops",
            help="Also find a photo shown inside a larger picture (a screenshot): embeds 6 crops (70/55/40%) of the "
            "same images as --turns (6 model runs per such image; slower). Combines with --turns.",
        ),
    ] = False,
    leftovers: Annotated[
        bool,
        typer.Option(
            "--leftovers/--no-leftovers",
            help="Second chance: an image left ungrouped joins its best match's group when it beats its own "
            "k-th neighbour by the margin (only the other image's crowd is not asked).",
        ),
    ] = True,
    json_output: JsonOption = False,
    html: HtmlOption = None,
    quarantine_dir: QuarantineOption = None,
    not_dup: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--not-dup", help="Mark two indexed images as not duplicates (remembered) and exit."),
    ] = None,
) -> None:
    """Find exact and near-duplicate groups; each names the copy to keep."""
    if keep not in KEEP_RULES:
        fail(f"unknown --keep {keep!r}; choose one of {', '.join(KEEP_RULES)}")
    if linkage not in LINKAGES:
        fail(f"unknown --linkage {linkage!r}; choose one of {', '.join(LINKAGES)}")
    if threshold is not None and precision is not None:
        fail("give --threshold or --precision, not both")
    with friendly_errors(db):
        writes = not_dup is not None or quarantine_dir is not None
        index = Index.open(db, create=False, read_only=False if writes else None)  # fail before moving files
        try:
            if not_dup is not None:
                _mark_not_dup(index, not_dup, json_output)
                return
            if precision is not None:
                try:
                    threshold = precision_threshold(index.store, precision)
                except ValueError as exc:  # a precision outside (0, 1); no calibration: friendly_errors
                    fail(str(exc))
            model = str((index.store.model_identity or {}).get("name", ""))
            used_margin = margin if margin is not None else default_margin(model)
            used = threshold if threshold is not None else default_threshold(model, used_margin)
            views = TurnedViews(index.model, turns=turns, crops=crops) if turns or crops else None
            groups = find_duplicate_groups(
                index.store,
                used,
                keep=keep,
                k=k,
                linkage=linkage,
                margin=used_margin,
                leftovers=leftovers,
                views=views,
            )
            if html is not None:
                write_html(html, dups_html(groups, used, keep))
            report = None
            if quarantine_dir is not None:
                records = [d for g in groups for d in g.duplicates]
                reasons = [
                    f"duplicate of {g.keep.path} (similarity {s:.3f}, threshold {used:.3f}, margin {used_margin:.2f})"
                    for g in groups
                    for s in g.scores
                ]
                report = quarantine(index.store, records, quarantine_dir, reason=reasons)
        finally:
            index.close()
    if json_output:
        document: dict[str, object] = {
            "threshold": used,
            "margin": used_margin,
            "keep_rule": keep,
            "groups": [g.to_dict() for g in groups],
        }
        if views is not None:
            document["turns"] = {"embedded": views.embedded, "unreadable": views.skipped}
        if report is not None:
            document["quarantine"] = report.to_dict()
        print_json(document)
    else:
        _print_groups(groups, used, used_margin)
        if html is not None:
            err.print(f"review page: {html}")
        if report is not None:
            print_quarantine(report)
    if report is not None and report.skipped:
        raise typer.Exit(1)


def _mark_not_dup(index: Index, pair: tuple[Path, Path], json_output: bool) -> None:
    records = []
    for path in pair:
        rec = index.store.get_by_path(str(path.absolute()))
        if rec is None:
            fail(f"{path} is not in the index")
        records.append(rec)
    if records[0].sha256 == records[1].sha256:
        fail("these two files have identical bytes; they are exact duplicates")
    new = index.store.mark_not_duplicates([(records[0].sha256, records[1].sha256)])
    if json_output:
        print_json({"not_dup": [r.path for r in records], "new": bool(new)})
    else:
        out.print(f"marked as not duplicates: {records[0].path} and {records[1].path}")


def _print_groups(groups: list[DupGroup], threshold: float, margin: float = 0.0) -> None:
    for number, group in enumerate(groups, 1):
        table = Table(title=f"group {number}", title_justify="left", show_header=False)
        table.add_column("role")
        table.add_column("similarity", justify="right")
        table.add_column("path", overflow="fold")
        table.add_row("[green]keep[/green]", "", group.keep.path)
        for dup, score in zip(group.duplicates, group.scores, strict=True):
            table.add_row("dup", f"{score:.3f}", dup.path)
        out.print(table)
    n_dups = sum(len(g.duplicates) for g in groups)
    rule = f"threshold {threshold:.3f}" + (f", margin {margin:.2f}" if margin > 0 else "")
    out.print(f"{len(groups)} groups, {n_dups} duplicates ({rule})")


def sweep_command(
    like: Annotated[list[str], typer.Option("--like", help="An example image (indexed or not); repeatable.")],
    db: DbOption = DEFAULT_DB,
    unlike: Annotated[
        list[str] | None, typer.Option("--unlike", help="A counter-example: matches must be closer to the likes.")
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=-1.0, max=1.0, help="Minimum cosine similarity to a like-example.")
    ] = DEFAULT_SWEEP_THRESHOLD,
    json_output: JsonOption = False,
    html: HtmlOption = None,
    quarantine_dir: QuarantineOption = None,
) -> None:
    """Find every indexed image like the examples (dry run), or quarantine them with --quarantine."""
    with friendly_errors(db):
        index = Index.open(db, create=False, read_only=False if quarantine_dir is not None else None)
        try:
            try:
                result = sweep(index, like, unlike or [], threshold)
            except ValueError as exc:  # no example given; an unreadable example: friendly_errors
                fail(str(exc))
            if html is not None:
                write_html(html, sweep_html(result))
            report = None
            if quarantine_dir is not None:
                query = f"sweep like={result.like} unlike={result.unlike} threshold={threshold}"
                report = quarantine(
                    index.store,
                    [m.record for m in result.matches],
                    quarantine_dir,
                    reason=[f"{query}: similarity {m.score:.3f}" for m in result.matches],
                )
        finally:
            index.close()
    if json_output:
        document = result.to_dict()
        if report is not None:
            document["quarantine"] = report.to_dict()
        print_json(document)
    else:
        for match in result.matches:
            out.print(f"{match.score:.3f}  {match.record.path}")
        out.print(f"{len(result.matches)} images at similarity ≥ {threshold:.3f}")
        if html is not None:
            err.print(f"review page: {html}")
        if report is not None:
            print_quarantine(report)
        elif result.matches:
            err.print("dry run: nothing moved (add --quarantine DIR to move them)")
    if report is not None and report.skipped:
        raise typer.Exit(1)


def restore_command(
    manifest: Annotated[Path, typer.Argument(help="A manifest written by --quarantine.")],
    db: OptionalDbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Move quarantined files back (sha256 verified) and re-add them to the index."""
    with friendly_errors(db):
        index = Index.open(db, create=False, read_only=False) if db is not None else None
        try:
            report = restore(manifest, index)
        finally:
            if index is not None:
                index.close()
    if json_output:
        print_json(report.to_dict())
    else:
        _print_restore(report)
    if report.skipped:
        raise typer.Exit(1)


def print_quarantine(report: QuarantineReport) -> None:
    for skip in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {skip.path}: {skip.reason}")
    out.print(
        f"moved {len(report.moved)} files, skipped {len(report.skipped)}; "
        f"undo with: lookalike restore {report.manifest}"
    )


def _print_restore(report: RestoreReport) -> None:
    for skip in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {skip.path}: {skip.reason}")
    out.print(f"restored {len(report.restored)} files, {report.reindexed} back in the index")

"""``audit`` and ``check``: what is wrong with a collection, and which new files it already holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.audit import check as check_files
from lookalike.audit.check import VERIFY_AUTO_PICTURES
from lookalike.audit.check import VERIFY_K as CHECK_VERIFY_K
from lookalike.audit.core import AuditReport, audit
from lookalike.audit.decisions import KINDS, mark_not_a_problem
from lookalike.audit.outliers import DEFAULT_OUTLIER_CUTOFF
from lookalike.audit.quality import DEFAULT_CUTOFFS
from lookalike.audit.report import FINDING_GROUPS, quarantine_plan, write_audit_html, write_csv
from lookalike.cli.clean import HtmlOption, print_check_results, print_quarantine
from lookalike.cli.common import DEFAULT_DB, DbOption, JsonOption, err, fail, friendly_errors, out, print_json
from lookalike.dedup.quarantine import quarantine
from lookalike.index import Index


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
    app.command("check")(check_command)


def _cutoffs(pairs: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            values[name.strip()] = float(value)
        except ValueError:
            fail(f"--cutoff takes NAME=VALUE (e.g. blurry=0.8), not {pair!r}")
    return values


def audit_command(
    db: DbOption = DEFAULT_DB,
    json_output: JsonOption = False,
    all_items: Annotated[
        bool, typer.Option("--all", help="With --json: every item's scores, not only the flagged ones.")
    ] = False,
    html: HtmlOption = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write the findings to this CSV file (one row per file and finding)."),
    ] = None,
    quarantine_dir: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            help="Move the flagged files (odd ones out, quality problems, the copies of duplicates that are not "
            "kept) into this folder, outside the indexed folders; `lookalike restore MANIFEST` undoes it.",
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help=f"Act on (export, quarantine) only these findings: {', '.join(FINDING_GROUPS)}; repeatable.",
        ),
    ] = None,
    cutoff: Annotated[
        list[str] | None,
        typer.Option(
            "--cutoff",
            metavar="NAME=VALUE",
            help="Change a quality cut-off, e.g. blurry=0.8 (scores at or above it are flagged; defaults: "
            + ", ".join(f"{k}={v}" for k, v in DEFAULT_CUTOFFS.to_dict().items())
            + "); repeatable.",
        ),
    ] = None,
    outlier_cutoff: Annotated[
        float, typer.Option(help="Odd-one-out score from which a file is flagged.")
    ] = DEFAULT_OUTLIER_CUTOFF,
    clusters: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Number of visual clusters (default: sqrt(n / 2), at most 64).")
    ] = None,
    not_a_problem: Annotated[
        list[Path] | None,
        typer.Option(
            "--not-a-problem", help="Remember that this indexed file's findings are not problems, and exit; repeatable."
        ),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help=f"With --not-a-problem: only findings of this kind ({', '.join(KINDS)})."),
    ] = None,
) -> None:
    """Audit the collection: odd ones out, quality problems, visual clusters, exact and near-duplicates."""
    overrides = _cutoffs(cutoff or [])
    try:
        cutoffs = DEFAULT_CUTOFFS.with_overrides(overrides)
    except ValueError as exc:
        fail(str(exc))
    with friendly_errors(db):
        writes = not_a_problem is not None or quarantine_dir is not None
        index = Index.open(db, create=False, read_only=False if writes else None)
        try:
            if not_a_problem is not None:
                _mark(index, not_a_problem, kind or ["all"], json_output)
                return
            report = audit(index, cutoffs=cutoffs, outlier_cutoff=outlier_cutoff, n_clusters=clusters)
            try:
                if export is not None:
                    write_csv(report, export, only)
                moved = None
                if quarantine_dir is not None:
                    records, reasons = quarantine_plan(report, only)
                    moved = quarantine(index.store, records, quarantine_dir, reason=reasons)
            except ValueError as exc:  # an unknown --only
                fail(str(exc))
            if html is not None:
                write_audit_html(report, html)
        finally:
            index.close()
    if json_output:
        print_json(report.to_dict(all_items=all_items))
    else:
        _print_report(report)
        for name, path in (("review page", html), ("findings", export)):
            if path is not None:
                err.print(f"{name}: {path}")
    if moved is not None:
        if not json_output:
            print_quarantine(moved)
        if moved.skipped:
            raise typer.Exit(1)


def _mark(index: Index, paths: list[Path], kinds: list[str], json_output: bool) -> None:
    records = []
    for path in paths:
        rec = index.store.get_by_path(str(path.absolute()))
        if rec is None:
            fail(f"{path} is not in the index")
        records.append(rec)
    try:
        new = mark_not_a_problem(index.store, [r.sha256 for r in records], kinds)
    except ValueError as exc:
        fail(str(exc))
    if json_output:
        print_json({"not_a_problem": [r.path for r in records], "kinds": kinds, "new": new})
    else:
        out.print(f"marked as not a problem ({', '.join(kinds)}): " + ", ".join(r.path for r in records))


def _print_report(report: AuditReport) -> None:
    outliers = report.outliers()
    if outliers:
        table = Table(title="odd ones out", title_justify="left")
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for a in outliers[:50]:
            table.add_row(f"{a.outlier_score:.1f}", a.record.path)
        out.print(table)
    found = report.quality()
    if found:
        table = Table(title="quality problems", title_justify="left")
        table.add_column("issues")
        table.add_column("path", overflow="fold")
        for a in found[:200]:
            table.add_row(", ".join(f"{i} {a.quality.severity(i):.2f}" for i in a.issues), a.record.path)
        out.print(table)
    for title, groups in (("exact duplicates", report.exact_duplicates), ("near-duplicates", report.near_duplicates)):
        for group in groups[:20]:
            out.print(f"[bold]{title}[/bold]: keep {group.keep.path}")
            for dup, score in zip(group.duplicates, group.scores, strict=True):
                out.print(f"  {score:.3f}  {dup.path}")
    table = Table(title="clusters", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("files", justify="right")
    table.add_column("examples", overflow="fold")
    for c in report.clusters:
        table.add_row(str(c.id), str(c.size), ", ".join(Path(r.path).name for r in c.examples))
    out.print(table)
    counts = report.counts()
    issues = ", ".join(f"{counts[i]} {i}" for i in DEFAULT_CUTOFFS.to_dict() if counts.get(i))
    out.print(
        f"{counts['items']} files: {counts['outliers']} odd ones out; quality: {issues or 'no problems'}; "
        f"{counts['exact_duplicate_groups']} exact and {counts['near_duplicate_groups']} near-duplicate groups; "
        f"{counts['clusters']} clusters ({report.seconds:.1f} s)"
    )
    if report.measured_now:
        err.print(f"measured the pixel statistics of {report.measured_now} files indexed before lookalike kept them")
    if report.not_measured:
        err.print(
            f"[yellow]{len(report.not_measured)} files have no pixel statistics and could not be read[/yellow] "
            "(changed or gone since indexing: run `lookalike index` again)"
        )


def check_command(
    new: Annotated[list[Path], typer.Argument(help="New image files or folders (searched recursively).")],
    db: DbOption = DEFAULT_DB,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help=f"Also check each new picture point for point (SIFT + RANSAC) against its {CHECK_VERIFY_K} nearest "
            "library pictures: turned, cropped, bordered, screenshotted copies are near copies too, and a "
            "look-alike the check denies is not. Default: on for the default model, up to "
            f"{VERIFY_AUTO_PICTURES:,} pictures to compare.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check new images against the library in --db: which are already there (exact or near copy)."""
    with friendly_errors(db):
        index = Index.open(db, create=False)
        try:
            results = check_files(index, new, verify=verify)
        finally:
            index.close()
    if json_output:
        counts = {status: sum(r.status == status for r in results) for status in ("exact", "near", "new", "unreadable")}
        print_json({"files": [r.to_dict() for r in results], "counts": counts})
        return
    print_check_results(results)

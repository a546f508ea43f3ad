"""``dups``, ``sweep`` and ``restore``: find duplicates or look-alikes, review them, quarantine with undo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from lookalike.audit.check import STATUSES as CHECK_STATUSES
from lookalike.audit.check import CheckResult, check_against
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
from lookalike.dedup.groups import (
    LINKAGES,
    DupGroup,
    find_duplicate_groups,
    resolve_rule,
)
from lookalike.dedup.keep import DEFAULT_KEEP, KEEP_RULES
from lookalike.dedup.quarantine import LINK_KINDS, QuarantineReport, RestoreReport, quarantine, restore
from lookalike.dedup.report import dups_html, sweep_html, write_html
from lookalike.dedup.sweep import KIND_SWEEP_THRESHOLD, SweepResult, sweep
from lookalike.dedup.sweep import VERIFY_K as SWEEP_VERIFY_K
from lookalike.dedup.threshold import precision_threshold
from lookalike.dedup.turns import TurnedViews
from lookalike.dedup.verify import GeometricCheck
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
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Check candidate pairs point for point with local features (SIFT + RANSAC): merge the groups "
            "whose central pictures match (turned, cropped, bordered, filtered copies) and take out of a group "
            "a member below 0.95 that matches its anchor nowhere (distinct look-alikes). Lets the similarity "
            "rule be stricter (margin 0.10). Re-reads most grouped images (26-32 s per 1,300 here). "
            "Default: on for the default model up to 20,000 distinct images; --no-verify: the similarity rule alone.",
            show_default=False,
        ),
    ] = None,
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
    link: Annotated[
        str | None,
        typer.Option(
            "--link",
            metavar="hard|symbolic",
            help="With --quarantine: leave a hard or symbolic link to the kept copy where each moved duplicate "
            "was (a hard link cannot cross file systems: such files are skipped, nothing lost); "
            "`lookalike restore` removes the links and puts the originals back.",
        ),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="Another index (a library): list the files of --db it already holds, exact or near copy, by the "
            "rule of `lookalike check`; --quarantine then moves those files of --db, never the library's.",
        ),
    ] = None,
) -> None:
    """Find exact and near-duplicate groups; each names the copy to keep."""
    if link is not None and link not in LINK_KINDS:
        fail(f"unknown --link {link!r}; choose one of {', '.join(LINK_KINDS)}")
    if link is not None and quarantine_dir is None:
        fail("--link needs --quarantine DIR: the duplicates move there and a link takes their place")
    if against is not None:
        _refuse_with_against(precision, keep, linkage, html, not_dup)
        _dups_against(db, against, threshold, margin, k, json_output, quarantine_dir, link, verify)
        return
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
            used, used_margin, leftover_margin, verify = resolve_rule(
                model,
                len({rec.sha256 for rec in index.store.items()}),
                threshold=threshold,
                margin=margin,
                verify=verify,
            )
            views = TurnedViews(index.model, turns=turns, crops=crops) if turns or crops else None
            check = GeometricCheck(stores=[index.store]) if verify else None
            groups = find_duplicate_groups(
                index.store,
                used,
                keep=keep,
                k=k,
                linkage=linkage,
                margin=used_margin,
                leftovers=leftovers,
                leftover_margin=leftover_margin,
                views=views,
                verify=check if check is not None else False,
            )
            if html is not None:
                write_html(html, dups_html(groups, used, keep))
            report = None
            if quarantine_dir is not None:
                records = [d for g in groups for d in g.duplicates]
                kept = [g.keep for g in groups for _ in g.duplicates]
                reasons = [
                    f"duplicate of {g.keep.path} (similarity {s:.3f}, threshold {used:.3f}, margin {used_margin:.2f})"
                    for g in groups
                    for s in g.scores
                ]
                report = quarantine(index.store, records, quarantine_dir, reason=reasons, link=link, link_to=kept)
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
        if check is not None:
            document["verify"] = {
                "images": check.decoded,
                "from_index": check.from_index,
                "mirrored": check.mirrored,
                "unreadable": check.unreadable,
                "pairs": check.checked,
                "second_looks": check.second_looks,
            }
        if report is not None:
            document["quarantine"] = report.to_dict()
        print_json(document)
    else:
        _print_groups(groups, used, used_margin, check)
        if html is not None:
            err.print(f"review page: {html}")
        if report is not None:
            print_quarantine(report)
    if report is not None and report.skipped:
        raise typer.Exit(1)


def _refuse_with_against(
    precision: float | None, keep: str, linkage: str, html: Path | None, not_dup: tuple[Path, Path] | None
) -> None:
    """Options of the grouping that mean nothing against a library: an error, not silently ignored."""
    given = [
        name
        for name, used in (
            ("--precision", precision is not None),
            ("--keep", keep != DEFAULT_KEEP),
            ("--linkage", linkage != "anchor"),
            ("--html", html is not None),
            ("--not-dup", not_dup is not None),
        )
        if used
    ]
    if given:
        fail(f"{', '.join(given)} cannot be combined with --against (the library's copy is always the one kept)")


def _dups_against(
    db: Path,
    against: Path,
    threshold: float | None,
    margin: float | None,
    k: int,
    json_output: bool,
    quarantine_dir: Path | None,
    link: str | None = None,
    verify: bool | None = None,
) -> None:
    """``dups --against LIBRARY``: which files of ``db`` the library already holds; optionally move them
    (with ``link``, leaving a link to the library's copy in their place)."""
    with friendly_errors(against):
        library = Index.open(against, create=False, read_only=True)  # never written
    try:
        with friendly_errors(db):
            index = Index.open(db, create=False, read_only=False if quarantine_dir is not None else None)
            try:
                results = check_against(index, library, threshold=threshold, margin=margin, k=k, verify=verify)
                report = None
                if quarantine_dir is not None:
                    found = [r for r in results if r.status in ("exact", "near") and r.item is not None]
                    reasons = [
                        f"{r.status} copy of {r.matches[0].record.path} in the library {against} "
                        f"(similarity {r.matches[0].score:.3f})"
                        for r in found
                    ]
                    report = quarantine(
                        index.store,
                        [r.item for r in found],  # type: ignore[misc]
                        quarantine_dir,
                        reason=reasons,
                        link=link,
                        link_to=[r.matches[0].record for r in found],
                    )
            finally:
                index.close()
    finally:
        library.close()
    counts = {status: sum(r.status == status for r in results) for status in CHECK_STATUSES}
    if json_output:
        document: dict[str, object] = {
            "against": str(against),
            "files": [r.to_dict() for r in results],
            "counts": counts,
        }
        if report is not None:
            document["quarantine"] = report.to_dict()
        print_json(document)
    else:
        print_check_results(results)
        if report is not None:
            print_quarantine(report)
        elif counts["exact"] or counts["near"]:
            err.print("dry run: nothing moved (add --quarantine DIR to move them)")
    if report is not None and report.skipped:
        raise typer.Exit(1)


def print_check_results(results: Sequence[CheckResult]) -> None:
    """One line per file (``check`` and ``dups --against``), then the counts."""
    for result in results:
        if result.status in ("exact", "near"):
            best = result.matches[0]
            how = ", point for point" if best.verified else ""
            what = "exact copy of" if result.status == "exact" else f"near copy ({best.score:.3f}{how}) of"
            out.print(f"[yellow]{result.status:5s}[/yellow] {result.path}  {what} {best.record.path}")
        elif result.status == "unreadable":
            err.print(f"[red]unreadable[/red] {result.path}: {result.reason}")
        elif result.status == "in_library":
            out.print(f"[blue]in library[/blue] {result.path}  ({result.reason})")
        else:
            out.print(f"[green]new[/green]   {result.path}")
    n_known = sum(r.status in ("exact", "near") for r in results)
    out.print(f"{len(results)} files: {n_known} already in the library, {sum(r.status == 'new' for r in results)} new")


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


def _print_groups(
    groups: list[DupGroup], threshold: float, margin: float = 0.0, check: GeometricCheck | None = None
) -> None:
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
    if check is not None:
        unreadable = f", {check.unreadable} unreadable" if check.unreadable else ""
        files = check.decoded - check.from_index
        read = (
            f"{check.decoded} images checked ({files} read from their files)"
            if files
            else f"{check.decoded} images checked"
        )
        rule += f", verified point for point: {read}{unreadable}"
    out.print(f"{len(groups)} groups, {n_dups} duplicates ({rule})")


def sweep_command(
    like: Annotated[list[str], typer.Option("--like", help="An example image (indexed or not); repeatable.")],
    db: DbOption = DEFAULT_DB,
    unlike: Annotated[
        list[str] | None, typer.Option("--unlike", help="A counter-example: matches must be closer to the likes.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Minimum cosine similarity to a like-example. Default: what this collection's calibration "
            f"calls the same picture; the output says where the next tier starts (e.g. {KIND_SWEEP_THRESHOLD} "
            "for the same kind of picture).",
        ),
    ] = None,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help=f"Check point for point (SIFT + RANSAC) each example's {SWEEP_VERIFY_K} best items under the "
            "threshold and add "
            "the copies it confirms (turned, cropped, bordered, screenshotted); at the default threshold also drop "
            "a match below 0.95 that matches its examples nowhere. Default: on for the default model.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
    html: HtmlOption = None,
    quarantine_dir: QuarantineOption = None,
) -> None:
    """Find every indexed image like the examples (dry run), or quarantine them with --quarantine."""
    with friendly_errors(db):
        index = Index.open(db, create=False, read_only=False if quarantine_dir is not None else None)
        try:
            try:
                result = sweep(index, like, unlike or [], threshold, verify=verify)
            except ValueError as exc:  # no example given; an unreadable example: friendly_errors
                fail(str(exc))
            if html is not None:
                write_html(html, sweep_html(result))
            report = None
            if quarantine_dir is not None:
                query = f"sweep like={result.like} unlike={result.unlike} threshold={result.threshold}"
                report = quarantine(
                    index.store,
                    [m.record for m in result.matches],
                    quarantine_dir,
                    reason=[
                        f"{query}: similarity {m.score:.3f}{', a copy point for point' if m.verified else ''}"
                        for m in result.matches
                    ],
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
            out.print(f"{match.score:.3f}  {match.record.path}{'  (copy point for point)' if match.verified else ''}")
        out.print(sweep_summary(result))
        if html is not None:
            err.print(f"review page: {html}")
        if report is not None:
            print_quarantine(report)
        elif result.matches:
            err.print("dry run: nothing moved (add --quarantine DIR to move them)")
    if report is not None and report.skipped:
        raise typer.Exit(1)


def sweep_summary(result: SweepResult) -> str:
    """How many matched under which rule, and where the next tier starts (the command for it)."""
    rule = f" ({result.rule})" if result.rule != "threshold" else ""
    verified = sum(m.verified for m in result.matches)
    lines = [f"{len(result.matches) - verified} images at similarity ≥ {result.threshold:.3f}{rule}"]
    counts = result.verify
    if counts is not None:
        denied = f"; {counts.denied} above it dropped (another picture)" if counts.denied else ""
        unreadable = f"; {counts.unreadable} unreadable" if counts.unreadable else ""
        lines.append(
            f"point for point: {verified} copies under it added, of {counts.checked} checked{denied}{unreadable}"
        )
    tier = result.next_tier
    if tier is not None:
        label = f", '{tier.label}'" if tier.label else ""
        more = "at least " if tier.more else ""
        gap = f"; a gap of {tier.gap_above:.3f} below the last match" if tier.gap_above is not None else ""
        lines.append(
            f"next tier: {more}{tier.count} more at {tier.lowest:.3f}-{tier.highest:.3f}{label}{gap} "
            f"(--threshold {tier.threshold:g} adds them)"
        )
    return "\n".join(lines)


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
        err.print(Text.assemble(("skipped", "yellow"), f" {skip.path}: {skip.reason}"), soft_wrap=True)
    links = sum(bool(o.link) for o in report.moved)
    out.print(
        f"moved {len(report.moved)} files{f' ({links} replaced by links)' if links else ''}, "
        f"skipped {len(report.skipped)}; undo with: lookalike restore {report.manifest}"
    )


def _print_restore(report: RestoreReport) -> None:
    for skip in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {skip.path}: {skip.reason}")
    out.print(f"restored {len(report.restored)} files, {report.reindexed} back in the index")

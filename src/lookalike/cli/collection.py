"""``index``, ``search``, ``info``, ``repair`` and ``demo``: build a collection, query it, mend it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import (
    DEFAULT_DB,
    BarProgress,
    DbOption,
    JsonOption,
    QuietOption,
    err,
    fail,
    friendly_errors,
    out,
    print_json,
)
from lookalike.dedup.copies import VERIFY_AUTO_QUERIES, search_verified
from lookalike.dedup.copies import VERIFY_K as SEARCH_VERIFY_K
from lookalike.dedup.groups import pair_check_for
from lookalike.index import Index, is_item_id
from lookalike.ingest import IngestReport
from lookalike.search.no_match import NO_MATCH_RULES
from lookalike.search.results import QueryResult


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
    app.command("search")(search_command)
    app.command("info")(info_command)
    app.command("repair")(repair_command)
    app.command("demo")(demo_command)


def index_command(
    paths: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) and image files.")],
    db: DbOption = DEFAULT_DB,
    model: Annotated[
        str | None, typer.Option(help="Model name (see `lookalike models`); default: the index's.")
    ] = None,
    index_type: Annotated[
        str | None,
        typer.Option(
            "--index",
            help="Search structure: auto (default), flat (exact), hnsw32, ivf4096,sq8, ivf16384,pq64, "
            "pca256,ivf1024,sq8 ... (remembered by the index).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Decode threads (default: min(4, CPUs)); with --ray: Ray actors.")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Embed on a Ray cluster: its address (HOST:PORT), 'auto' (RAY_ADDRESS / `ray start`) or "
            "'local'. Needs `pip install lookalike[distributed]`.",
        ),
    ] = None,
    rehash: Annotated[
        bool,
        typer.Option(
            "--rehash",
            help="Read and hash every file, also those whose size and modification time are unchanged "
            "(catches files rewritten in place with their old timestamp).",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Add images under PATHS to the index; re-runs only embed new or changed files.

    A damaged vector file is repaired first (see `lookalike repair`): the files that lost their
    vectors are embedded again by this run.
    """
    with friendly_errors(db):
        index = Index.open(db, model=model, index_kind=index_type, read_only=False, repair=True)
        repaired = getattr(index.store, "repaired", None)
        if repaired is not None:
            err.print(
                f"[yellow]repaired {db}:[/yellow] dropped {len(repaired.dropped)} items whose vectors were lost "
                f"from {repaired.vector_file}; this run embeds those under {', '.join(map(str, paths))} again"
            )
        with BarProgress(enabled=not (quiet or json_output)) as progress:
            report = index.add(paths, progress=progress, workers=workers, ray=ray, rehash=rehash)
        if json_output:
            extra = {"repaired": repaired.to_dict()} if repaired is not None else {}
            print_json({"db": str(db), "count": len(index), **report.to_dict(), **extra})
        else:
            _print_report(report, len(index))
        index.close()


def _print_report(report: IngestReport, count: int) -> None:
    shown = [s for s in report.skipped if s.reason != "not an image" or Path(s.path).suffix]
    if shown:
        table = Table(title="skipped", show_lines=False, title_justify="left")
        table.add_column("file", overflow="fold")
        table.add_column("reason")
        for skip in shown[:50]:
            table.add_row(skip.path, f"{skip.reason}: {skip.detail}")
        err.print(table)
        if len(shown) > 50:
            err.print(f"… and {len(shown) - 50} more (use --json for the full list)")
    if report.excluded:
        shown_folders = ", ".join(report.excluded[:3]) + (" …" if len(report.excluded) > 3 else "")
        err.print(f"[dim]left out lookalike's own folders (index, caches, quarantine): {shown_folders}[/dim]")
    out.print(f"{report.summary()}; {count} images in the index")


def search_command(
    images: Annotated[
        list[str] | None, typer.Argument(help="Query images (files); indexed paths use stored vectors.")
    ] = None,
    db: DbOption = DEFAULT_DB,
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=1000, help="How many results per query.")] = 4,
    item_id: Annotated[list[int] | None, typer.Option("--id", help="Query by indexed item id (repeatable).")] = None,
    json_output: JsonOption = False,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            help="Search by words (repeatable). With a CLIP model: by meaning. Otherwise: keyword match "
            "against each image's stored ImageNet class tags (e.g. 'pickup', 'golden retriever').",
        ),
    ] = None,
    no_match_rule: Annotated[
        str,
        typer.Option(
            "--no-match-rule", help="auto (k-NN when calibrated), knn, or fixed (best score < 0.5).", show_default=True
        ),
    ] = "auto",
    accept: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="k-NN rule: share of the collection's own items accepted.")
    ] = 0.95,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help=f"Also check each query point for point (SIFT + RANSAC) against its {SEARCH_VERIFY_K} most similar "
            "results: copies (turned, cropped, in a screenshot or a collage) come first, marked. Default: on "
            f"for the default model, up to {VERIFY_AUTO_QUERIES:,} query images.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Find the indexed images most similar to each query image (or matching --text), best first."""
    queries: list[str | int] = [*(images or []), *(item_id or [])]
    if not queries and not text:
        fail("give at least one query image, --id or --text")
    bad_id = next((i for i in item_id or [] if not is_item_id(i)), None)
    if bad_id is not None:  # checked here: the store would overflow on it (a traceback, not "no such item")
        fail(f"--id {bad_id} is not an item id (ids run from 0 to 2^63-1)")
    if no_match_rule not in NO_MATCH_RULES:
        fail(f"--no-match-rule must be one of {', '.join(NO_MATCH_RULES)}")
    with friendly_errors(db):
        index = Index.open(db, create=False)
        check = pair_check_for(
            index.model_name, verify, within_limit=len(queries) <= VERIFY_AUTO_QUERIES, stores=[index.store]
        )
        rule = {"no_match_rule": no_match_rule, "accept_rate": accept}
        if not queries:
            results = []
        elif check is not None:
            results = search_verified(index, queries, k, check=check, **rule)  # type: ignore[arg-type]
        else:
            results = index.search_many(queries, k=k, **rule)  # type: ignore[arg-type]
        results += [index.search_text(t, k=k) for t in text or []]
        index.close()
    if json_output:
        print_json({"queries": [r.to_dict() for r in results]})
    else:
        for result in results:
            _print_result(result)
    if any(r.error for r in results):
        raise typer.Exit(1)


def _display_path(path: str) -> str:
    """Paths under the working directory are shown relative to it; others in full."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _print_result(result: QueryResult) -> None:
    if result.error:
        err.print(f"[red]{result.query}: {result.error}[/red]")
        return
    table = Table(title=f"query: {_display_path(result.query)}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score" if result.extra.get("mode") == "keyword-tags" else "similarity", justify="right")
    calibrated = any(m.label is not None for m in result.results)
    if calibrated:
        table.add_column("reading")
        table.add_column("copy prob.", justify="right")
    copies = any(m.verified for m in result.results)
    if copies:
        table.add_column("copy")
    table.add_column("id", justify="right")
    table.add_column("path", overflow="fold")
    for rank, match in enumerate(result.results, 1):
        reading = []
        if calibrated:
            reading = [match.label or "", f"{match.probability:.0%}" if match.probability is not None else ""]
        if copies:
            reading.append("[green]point for point[/green]" if match.verified else "")
        table.add_row(str(rank), f"{match.score:.3f}", *reading, str(match.id), _display_path(match.path))
    out.print(table)
    checked = result.extra.get("verify")
    if isinstance(checked, dict) and checked.get("checked"):
        out.print(
            f"[dim]point for point: {checked['confirmed']} of the {checked['checked']} most similar results "
            "are copies of the query[/dim]"
        )
    if result.extra.get("mode") == "keyword-tags":
        out.print("[dim]keyword match on ImageNet class tags (score: tag probability x share of words matched)[/dim]")
        if not result.results:
            out.print("[yellow]No image is tagged with these words.[/yellow]")
        return
    if result.extra.get("mode") == "clip":
        return
    if result.no_match:
        why = (
            "its closest matches are further than this collection's own pictures are from each other"
            if result.extra.get("no_match_rule") == "knn"
            else "best similarity below the fixed no-match threshold"
        )
        out.print(f"[yellow]No similar images in this collection[/yellow] ({why}); the closest ones are listed anyway.")


def info_command(
    db: DbOption = DEFAULT_DB,
    json_output: JsonOption = False,
) -> None:
    """Show what an index holds: count, model, dimensions, size on disk, last update."""
    with friendly_errors(db):
        index = Index.open(db, create=False)
        info = index.info()
        index.close()
    if json_output:
        print_json(info)
        return
    table = Table(show_header=False, title=str(db), title_justify="left")
    for key, value in info.items():
        if key in ("created_at", "updated_at") and isinstance(value, int | float):
            value = dt.datetime.fromtimestamp(value).isoformat(timespec="seconds")
        elif key in ("size_bytes", "check_pictures_bytes") and isinstance(value, int):
            value = f"{value / 1e6:.1f} MB"
        elif isinstance(value, list):
            value = "\n".join(map(str, value)) or "-"
        table.add_row(key, str(value))
    out.print(table)


def repair_command(
    db: DbOption = DEFAULT_DB,
    json_output: JsonOption = False,
) -> None:
    """Make a damaged index usable: keep the intact items, drop those whose vectors are lost.

    Run `lookalike index` over the same folders afterwards: it embeds the dropped files again.
    """
    with friendly_errors(db):
        index = Index.open(db, create=False, read_only=False, repair=True)
        try:
            report = getattr(index.store, "repaired", None) or index.store.repair()  # a full check if none yet
            roots = [str(r) for r in index.store.get_meta("roots") or []]  # type: ignore[union-attr]
        finally:
            index.close()
    if json_output:
        print_json({"db": str(db), **report.to_dict()})
        return
    out.print(report.summary())
    if report.dropped and roots:
        out.print(f"re-embed them: [bold]lookalike index {' '.join(roots)} --db {db}[/bold]")


def demo_command(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            envvar="LOOKALIKE_DEMO_DB",
            help="Where to build the demo index (default: $LOOKALIKE_DEMO_DB, else ./lookalike-demo.db; never "
            "$LOOKALIKE_DB, so the demo photos cannot land in your own index).",
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=50)] = 4,
) -> None:
    """Index the bundled demo photos and search them with the bundled query images."""
    from lookalike.demo import demo_images_dir, demo_queries_dir

    target = db or Path("lookalike-demo.db")
    with friendly_errors(target):
        index = Index.open(target, read_only=False)
        with BarProgress() as progress:
            report = index.add([demo_images_dir()], progress=progress)
        _print_report(report, len(index))
        queries = sorted(str(p) for p in demo_queries_dir().iterdir() if p.is_file())
        for result in index.search_many(queries, k=k):
            _print_result(result)
        index.close()
    out.print(f"\nTry your own: [bold]lookalike search IMAGE --db {target}[/bold]")

"""``calibrate``: measure what scores mean in a collection (copy probability, labels, no-match rule)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.common import DEFAULT_DB, DbOption, JsonOption, err, friendly_errors, out, print_json
from lookalike.index import Index


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    db: DbOption = DEFAULT_DB,
    copies: Annotated[int, typer.Option(min=1, help="Indexed images to make edited copies of.")] = 200,
    neighbours: Annotated[int, typer.Option(min=1, help="Items whose nearest neighbours are measured.")] = 2000,
    knn_k: Annotated[
        int | None, typer.Option("--knn-k", min=1, max=100, help="k of the k-NN no-match rule (default: by size).")
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Only show the stored calibration.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Recompute the collection's calibration now (it is also refreshed by `index` when stale)."""
    with friendly_errors(db):
        index = Index.open(db, create=False, read_only=None if show else False)
        if show:
            cal = index.calibration
        else:
            with err.status("calibrating: editing sampled images and measuring neighbours…"):
                cal = index.calibrate(copies=copies, neighbours=neighbours, knn_k=knn_k)
        index.close()
    summary = cal.summary() if cal is not None else {"status": "none", "reason": "not calibrated yet"}
    if json_output:
        print_json(summary)
        return
    table = Table(show_header=False, title=f"calibration of {db}", title_justify="left")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} >= {v}" for k, v in value.items())
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)

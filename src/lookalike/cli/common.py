"""Shared pieces of the CLI: the options every command shares, consoles, JSON output, the one error
handler, the progress bar (in the spirit of sqlite-utils' shared option decorators)."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from lookalike.errors import LookalikeError
from lookalike.imaging.discover import Skip
from lookalike.ingest import Progress as IngestProgress

#: The index every command reads or writes: ``--db``, else ``$LOOKALIKE_DB``, else ./lookalike.db.
DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="LOOKALIKE_DB",
        help="Index folder (created by `index` if missing), a Milvus Lite file (*.milvus.db) "
        "or milvus://HOST:PORT/COLLECTION. Default: $LOOKALIKE_DB, else ./lookalike.db.",
    ),
]
DEFAULT_DB = Path("lookalike.db")
#: For commands whose index has another default (the manifest's, the demo's): None when not given.
OptionalDbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", envvar="LOOKALIKE_DB", help="Index folder (default: $LOOKALIKE_DB, else what the command says)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

out = Console()  # results
err = Console(stderr=True)  # progress, warnings, errors: keeps --json output on stdout clean


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def friendly_errors(db: object | None = None) -> Iterator[None]:
    """Turn failures into one clear line and exit code 2, never a traceback: the CLI's one handler.

    The library raises :class:`~lookalike.errors.LookalikeError` subclasses (wrong model, missing,
    read-only, full or damaged index, unknown model, untrainable folder...) with messages written for
    users. A bare ``sqlite3.Error`` or ``OSError`` (disk full, read-only file system, permission
    denied) that escaped it is printed with the index it concerns (``db``) and the file involved; a
    missing optional package (``ImportError``) with its name.
    """
    try:
        yield
    except LookalikeError as exc:
        flags = ", ".join(_FLAGS.get(p, "--" + p.replace("_", "-")) for p in exc.parameters)
        _fail(f"{exc} (see {flags})" if flags else str(exc), exc)
    except ImportError as exc:
        _fail(f"a package this needs is not installed: {exc}", exc)
    except sqlite3.Error as exc:
        _fail(f"{_where(db)}the index database failed: {exc}", exc)
    except OSError as exc:
        problem = exc.strerror or str(exc)
        problem = problem[:1].lower() + problem[1:]  # "read-only file system", as the library words it
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        _fail(f"{_where(db)}{problem}{f' ({files})' if files else ''}", exc)


#: Library parameter names whose command-line option is spelt differently.
_FLAGS = {"index_kind": "--index"}


def _where(db: object | None) -> str:
    return f"index {db}: " if db is not None else ""


def fail(message: str) -> NoReturn:
    """Stop the command with one error line and exit code 2 (a usage or input problem)."""
    _fail(message, None)


def _fail(message: str, exc: BaseException | None) -> NoReturn:
    # Text, not markup: paths may hold [brackets]; soft_wrap: one line, however long (the terminal wraps it)
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)
    raise typer.Exit(2) from exc


class RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} files/s" if speed else "– files/s"


class BarProgress(IngestProgress):
    """A rich progress bar on stderr: files/s, ETA and a running count of skipped files."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.skips = 0
        self.bar = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[skipped]} skipped"),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self.task = self.bar.add_task("index", total=None, skipped=0)

    def __enter__(self) -> BarProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def found(self, total: int) -> None:
        self.bar.update(self.task, total=total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def skipped(self, skip: Skip) -> None:
        self.skips += 1
        self.bar.update(self.task, skipped=self.skips)

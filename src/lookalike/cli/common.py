"""Shared pieces of the CLI: consoles, JSON output, error handling, the progress bar."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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

from lookalike.imaging.discover import Skip
from lookalike.ingest import Progress as IngestProgress
from lookalike.store.base import StoreError

out = Console()  # results
err = Console(stderr=True)  # progress, warnings, errors: keeps --json output on stdout clean


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def friendly_errors(db: object | None = None) -> Iterator[None]:
    """Turn failures into one clear line and exit code 2, never a traceback.

    The library raises typed errors (:class:`StoreError` and subclasses: wrong model, missing,
    read-only, full or damaged index) with messages written for users. A bare ``sqlite3.Error`` or
    ``OSError`` (disk full, read-only file system, permission denied) that escaped it is printed
    with the index it concerns (``db``) and the file involved.
    """
    try:
        yield
    except StoreError as exc:
        _fail(str(exc), exc)
    except sqlite3.Error as exc:
        _fail(f"{_where(db)}the index database failed: {exc}", exc)
    except OSError as exc:
        problem = exc.strerror or str(exc)
        problem = problem[:1].lower() + problem[1:]  # "read-only file system", as the library words it
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
        _fail(f"{_where(db)}{problem}{f' ({files})' if files else ''}", exc)


def _where(db: object | None) -> str:
    return f"index {db}: " if db is not None else ""


def _fail(message: str, exc: BaseException) -> None:
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

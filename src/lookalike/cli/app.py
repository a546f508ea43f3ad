"""The ``lookalike`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from lookalike.cli import audit, calibration, clean, collection, evaluate, serve, train

app = typer.Typer(
    name="lookalike",
    help="Visual similarity search for image collections: index a folder, search it by image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in (collection, calibration, clean, audit, serve, evaluate, train):
    group.register(app)


def main() -> None:
    app()

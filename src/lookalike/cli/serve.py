"""``serve``: the web page and HTTP API on uvicorn."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.common import DEFAULT_DB, DbOption, err, fail, friendly_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to bind. Keep 127.0.0.1 unless others must reach it.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token for adding/removing items. Without it they are disabled."),
    ] = None,
    upload_dir: Annotated[
        Path | None, typer.Option(help="Folder where images added through POST /api/items are stored.")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.1, help="Largest accepted upload, in MB.")] = 20.0,
    max_megapixels: Annotated[float, typer.Option(min=0.1, help="Largest accepted picture, in megapixels.")] = 64.0,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeatable). None by default.")
    ] = None,
    hide_paths: Annotated[bool, typer.Option(help="Show file names instead of full server paths.")] = False,
    quarantine_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder (outside the indexed ones) where the review page (/review) moves the files it "
            "quarantines; needs --token-file. Undo with `lookalike restore MANIFEST`."
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client has to send a request's headers, then it is dropped.")
    ] = 10.0,  # lookalike.web.server's defaults (not imported here: it loads uvicorn)
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds an upload may stall (no bytes) before it is dropped.")
    ] = 30.0,
    timeout_keep_alive: Annotated[
        int, typer.Option(min=1, help="Seconds an idle kept-alive connection stays open after a response.")
    ] = 5,
    limit_concurrency: Annotated[
        int, typer.Option(min=1, help="Open connections (or running requests) beyond which requests get 503.")
    ] = 512,
) -> None:
    """Serve the search page and the JSON API (docs at /docs)."""
    import uvicorn

    from lookalike.web import create_app
    from lookalike.web.security import read_token_file
    from lookalike.web.server import server_config

    token = None
    if token_file is not None:
        try:
            token = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            fail(f"cannot use the token file: {exc}")
        if token_file.stat().st_mode & 0o077:
            err.print(f"[yellow]warning:[/yellow] {token_file} is readable by other users (chmod 600 it)")
    if not _is_loopback(host):
        err.print(f"[yellow]warning:[/yellow] binding {host}: the page and API are reachable from the network")
    with friendly_errors(db):
        app = create_app(
            db,
            token=token,
            upload_dir=upload_dir,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=int(max_megapixels * 1_000_000),
            cors_origins=cors_origin or None,
            expose_paths=not hide_paths,
            quarantine_dir=quarantine_dir,
        )
    writes = "enabled" if token and upload_dir else ("remove only" if token else "disabled (no --token-file)")
    err.print(f"lookalike: serving {db} on http://{host}:{port}  (write endpoints: {writes})")
    config = server_config(
        app,
        host,
        port,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

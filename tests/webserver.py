"""Serve an ASGI app on a free 127.0.0.1 port in a thread, for the tests that need a real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(app: object, timeout: float = 60.0) -> Iterator[str]:
    """The app's base URL while the block runs; the server is stopped after it."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for_images(page: object, selector: str, timeout: float = 30.0) -> None:
    """Wait until every ``<img>`` under ``selector`` has loaded (naturalWidth > 0). Polled from Python:
    Playwright's ``wait_for_function`` with a string predicate failed in CI with an EvalError, since
    the app's CSP forbids eval."""
    loaded = f"[...document.querySelectorAll({selector!r} + ' img')].every(i => i.complete && i.naturalWidth > 0)"
    deadline = time.monotonic() + timeout
    while not page.evaluate(loaded):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"images under {selector} did not load"
        time.sleep(0.1)

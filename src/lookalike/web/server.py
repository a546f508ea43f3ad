"""Serving the app on uvicorn with deadlines for idle and slow clients.

uvicorn only times out a connection that is idle *after* a response (``timeout_keep_alive``), and
any byte cancels that timer. A client that connects and sends nothing, or sends a request line and
then trickles headers (slowloris), or stops half-way through a body, holds its socket forever.
:func:`guarded_protocol` adds the two deadlines a reverse proxy would (nginx's
``client_header_timeout`` and ``client_body_timeout``):

* the headers of each request must be complete within ``header_timeout`` seconds of the connection
  opening or of the previous response ending, however slowly they trickle in;
* while a request body is being received, ``body_timeout`` seconds without a byte drop it (unless
  the server itself paused reading because the app has not taken what it has yet).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
KEEP_ALIVE_TIMEOUT = 5
#: Requests beyond this many open connections (or running requests) get a 503 from uvicorn.
LIMIT_CONCURRENCY = 512
GRACEFUL_SHUTDOWN_TIMEOUT = 10

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_protocol(
    header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (h11 or httptools, whichever it picks) with the two deadlines above.

    It relies only on what both implementations share: ``cycle`` (the request being handled, with
    ``more_body`` and ``response_complete``), ``flow.read_paused``, ``transport`` and ``loop``.
    """

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[valid-type, misc]
        _deadline: asyncio.TimerHandle | None = None
        _phase = ""  # "headers": waiting for a request's headers; "body": receiving one; "app": neither
        _partial = False  # bytes of the awaited request have arrived (so a 408 is owed, not a silent close)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._update_deadline()

        def data_received(self, data: bytes) -> None:
            if self._phase == "headers" and data.strip():
                self._partial = True
            super().data_received(data)
            self._update_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request
            self._update_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, *args: Any) -> None:
            self._cancel()  # the transport belongs to another protocol from now on
            self._phase = "app"
            super().handle_websocket_upgrade(*args)

        # -- deadlines -------------------------------------------------------------------------
        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _update_deadline(self) -> None:
            if self.transport.is_closing():
                self._cancel()
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                if self._phase != "headers":  # a new wait begins; later bytes never extend it
                    self._cancel()
                    self._phase, self._partial = "headers", False
                    self._deadline = self.loop.call_later(header_timeout, self._headers_overdue)
            elif cycle.more_body:
                self._cancel()  # an idle timer: every chunk of the body restarts it
                self._phase = "body"
                self._deadline = self.loop.call_later(body_timeout, self._body_stalled)
            else:
                self._cancel()  # the request is in; the app's time is not the client's
                self._phase = "app"

        def _headers_overdue(self) -> None:
            self._deadline = None
            if self._phase == "headers" and not self.transport.is_closing():
                if self._partial:
                    self.transport.write(_TIMEOUT_RESPONSE)
                self.transport.close()

        def _body_stalled(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if self.transport.is_closing() or cycle is None or not cycle.more_body or cycle.response_complete:
                return
            if self.flow.read_paused:  # we stopped reading, not the client: wait for the app
                self._deadline = self.loop.call_later(body_timeout, self._body_stalled)
                return
            self.transport.close()  # the app's receive() then reports a disconnect

    return GuardedHTTPProtocol


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    timeout_keep_alive: int = KEEP_ALIVE_TIMEOUT,
    limit_concurrency: int | None = LIMIT_CONCURRENCY,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration `lookalike serve` runs with: every client-facing limit set.
    ``options`` go to :class:`uvicorn.Config` as they are."""
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_TIMEOUT)  # a slow client cannot hold up Ctrl-C
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(header_timeout, body_timeout),
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
        **options,
    )

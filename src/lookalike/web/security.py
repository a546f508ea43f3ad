"""The web app's guards: request body size, bearer tokens, and which files may be served.

Kept apart from the routes so each rule is small enough to read and test on its own.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Room for the multipart envelope and small form fields on top of the file itself.
MULTIPART_SLACK = 64 * 1024


class BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` once a request body passes the limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, before they are spooled to disk.

    A declared ``Content-Length`` over the limit is refused without reading anything. A chunked or
    lying body is counted as it streams in; once over the limit, the app's own answer (whatever its
    form parser made of the cut-off body) is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        state = {"received": 0, "tripped": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["tripped"] = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["tripped"]:
                return
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["tripped"]:
                raise
        if state["tripped"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"upload too large: the limit is {self.max_bytes / 2**20:.3g} MB",
                "reason": "too large",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Add nosniff, no-framing, referrer and content-security-policy headers to every response.

    A plain ASGI wrapper (not ``BaseHTTPMiddleware``), so it costs nothing per request and never
    buffers file responses.
    """

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.extra if k not in present
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def token_matches(configured: str, authorization: str | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), configured.encode())


def inside(path: str, folders: Iterable[str]) -> bool:
    """True if ``path`` (already resolved) lies in one of ``folders`` (resolved here)."""
    for folder in folders:
        real = os.path.realpath(folder)
        if path == real or path.startswith(real.rstrip(os.sep) + os.sep):
            return True
    return False


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (first line, stripped). Refuses empty or very short tokens."""
    with open(path, encoding="utf-8") as handle:
        token = handle.readline().strip()
    if len(token) < 16:
        raise ValueError(f"the token in {path} is {'empty' if not token else 'too short'}: use at least 16 characters")
    return token

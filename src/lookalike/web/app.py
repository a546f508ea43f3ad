"""The HTTP face of an :class:`~lookalike.index.Index`: a JSON API and a small web page.

``create_app(db_or_index)`` returns a FastAPI app. The model is loaded once (at start-up) and
shared; uploads are decoded in worker threads and searched in micro-batches (see ``batching``).
The routes live in :mod:`lookalike.web.routes`, one router per concern; what they share is one
:class:`~lookalike.web.state.WebState`, handed to them by the dependencies in
:mod:`lookalike.web.deps`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from lookalike import __version__
from lookalike.imaging.load import ImageLoadError
from lookalike.index import Index
from lookalike.web.routes import audit, health, items, pages, review, search
from lookalike.web.security import MULTIPART_SLACK, BodyLimitMiddleware, SecurityHeadersMiddleware
from lookalike.web.state import WebState
from lookalike.web.uploads import image_error_response

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Uploads above this many pixels are refused (decompression bombs); generous for camera photos.
DEFAULT_MAX_PIXELS = 64_000_000

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def create_app(
    index_or_db: Index | str | os.PathLike[str],
    *,
    token: str | None = None,
    upload_dir: str | os.PathLike[str] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    thumbnail_dir: str | os.PathLike[str] | None = None,
    cors_origins: list[str] | None = None,
    expose_paths: bool = True,
    quarantine_dir: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """Build the web app for an index (an open :class:`Index`, or the folder of one).

    ``token``: bearer token for ``POST /api/items`` and ``DELETE /api/items/{id}``; without one they
    answer 403. ``upload_dir``: where ``POST /api/items`` stores added images (required to add).
    ``cors_origins``: allowed browser origins for cross-site calls (none by default).
    ``expose_paths``: when False, results carry file names instead of full server paths.
    ``quarantine_dir``: where the review page (``/review``) moves the files it quarantines (with the
    token); without it quarantining answers 403.
    """
    if token is not None and not token.strip():
        raise ValueError("an empty token would leave the write endpoints open; pass None to disable them")
    if isinstance(index_or_db, Index):
        index, owns = index_or_db, False
    else:
        index, owns = Index.open(index_or_db, create=False), True
    if thumbnail_dir is None:
        folder = getattr(index.store, "folder", None)
        thumbnail_dir = Path(folder) / "thumbnails" if folder else Path(tempfile.mkdtemp(prefix="lookalike-thumbs-"))
    state = WebState(
        index,
        owns_index=owns,
        token=token.strip() if token else None,
        upload_dir=Path(upload_dir).resolve() if upload_dir is not None else None,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        thumbnail_dir=Path(thumbnail_dir),
        expose_paths=expose_paths,
        quarantine_dir=Path(quarantine_dir).absolute() if quarantine_dir is not None else None,
    )

    app = FastAPI(
        title="lookalike",
        version=__version__,
        summary="Visual similarity search: upload a picture, find what looks like it.",
        lifespan=_lifespan,
        exception_handlers={ImageLoadError: image_error_response},
        docs_url=None,  # FastAPI's Swagger UI loads from a CDN; pages.api_docs serves /docs offline
        redoc_url=None,
    )
    app.state.lookalike = state
    app.mount("/static", StaticFiles(directory=STATIC), name="static")  # the pages' script and stylesheet
    for router in (health.router, search.router, items.router, pages.router, review.router, audit.router):
        app.include_router(router)

    app.add_middleware(SecurityHeadersMiddleware, csp=_CSP)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_upload_bytes + MULTIPART_SLACK)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: WebState = app.state.lookalike
    await run_in_threadpool(lambda: state.index.model)  # load the model once, before the first request
    yield
    state.close()

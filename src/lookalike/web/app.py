"""The HTTP face of an :class:`~lookalike.index.Index`: a JSON API and a small web page.

``create_app(db_or_index)`` returns a FastAPI app. The model is loaded once (at start-up) and
shared; uploads are decoded in worker threads and searched in micro-batches (see ``batching``).
Files are only ever served by item id, and only when they resolve inside the indexed folders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import math
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.concurrency import run_in_threadpool

from lookalike import __version__
from lookalike.imaging.load import DEFAULT_MAX_PIXELS as INDEX_MAX_PIXELS
from lookalike.imaging.load import ImageLoadError, decode_image, pixel_limit
from lookalike.index import Index
from lookalike.search.results import Match, QueryResult
from lookalike.store.base import ItemRecord
from lookalike.web.batching import SearchBatcher
from lookalike.web.review import register_review
from lookalike.web.security import (
    MULTIPART_SLACK,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    inside,
    token_matches,
)
from lookalike.web.thumbnails import THUMBNAIL_SIZE, ThumbnailCache

HERE = Path(__file__).parent
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Uploads above this many pixels are refused (decompression bombs); generous for camera photos.
DEFAULT_MAX_PIXELS = 64_000_000
MAX_K = 200
PREVIEW_SIZE = 1280
PAGE_SIZE = 48

#: ImageLoadError reason -> HTTP status. Anything else that cannot be decoded is a 422.
_STATUS_FOR_REASON = {"not an image": 415, "too many pixels": 413, "too large": 413}

_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}

K = Annotated[int, Query(ge=1, le=MAX_K, description="How many results (1-200).")]

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Upload too large (bytes or pixels)"},
    415: {"description": "Not an image"},
    422: {"description": "Corrupt or empty image, or a bad parameter"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token"},
    403: {"description": "Disabled: no token (or no upload folder) configured"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item"}}
_FILE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The file lies outside the indexed folders"},
    404: {"description": "No such item, or its file is missing"},
}

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class _State:
    """Everything the routes share; one per app."""

    def __init__(
        self,
        index: Index,
        *,
        owns_index: bool,
        token: str | None,
        upload_dir: Path | None,
        max_upload_bytes: int,
        max_pixels: int,
        thumbnail_dir: Path,
        expose_paths: bool,
        quarantine_dir: Path | None = None,
    ) -> None:
        self.index = index
        self.quarantine_dir = quarantine_dir
        self.decode_upload: Any = None  # set by create_app (it needs the request-size limits)
        self.owns_index = owns_index
        self.token = token
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.expose_paths = expose_paths
        self.thumbs = ThumbnailCache(thumbnail_dir, size=THUMBNAIL_SIZE)
        self.previews = ThumbnailCache(thumbnail_dir, size=PREVIEW_SIZE)
        self.batcher = SearchBatcher(index)
        # Bound concurrent decodes: each may hold a full-size RGB picture in memory.
        self.decode_slots = asyncio.Semaphore(max(2, 2 * (os.cpu_count() or 1)))
        self.add_lock = asyncio.Lock()

    # -- presenting results -----------------------------------------------------------------------
    def match_dict(self, match: Match) -> dict[str, object]:
        out = match.to_dict()
        if not self.expose_paths:
            out["path"] = os.path.basename(match.path)
        rec = self.index.item(match.id)
        out.update(_urls(match.id, rec.sha256 if rec else ""))
        return out

    def result_dict(self, result: QueryResult) -> dict[str, object]:
        out = result.to_dict()
        out["results"] = [self.match_dict(m) for m in result.results]
        return out

    def item_dict(self, rec: ItemRecord) -> dict[str, object]:
        return {
            "id": rec.id,
            "path": rec.path if self.expose_paths else os.path.basename(rec.path),
            "name": os.path.basename(rec.path),
            "width": rec.width,
            "height": rec.height,
            "size": rec.size,
            "sha256": rec.sha256,
            "mtime_ns": rec.mtime_ns,
            "added_at": rec.added_at,
            **_urls(rec.id, rec.sha256),
        }

    # -- files ------------------------------------------------------------------------------------
    def allowed_folders(self) -> list[str]:
        roots = [str(r) for r in (self.index.store.get_meta("roots") or [])]  # type: ignore[union-attr]
        if self.upload_dir is not None:
            roots.append(str(self.upload_dir))
        return roots

    def servable(self, item_id: int) -> tuple[ItemRecord, str]:
        """The record and the resolved file path of an item, if it may be served; else an HTTP error."""
        rec = self.index.item(item_id)
        if rec is None:
            raise HTTPException(404, f"no item with id {item_id}")
        real = os.path.realpath(rec.path)
        if not inside(real, self.allowed_folders()):
            raise HTTPException(403, "this item's file lies outside the indexed folders and is not served")
        if not os.path.isfile(real):
            raise HTTPException(404, "this item's file is missing on disk (re-run `lookalike index`)")
        return rec, real

    def decode(self, data: bytes) -> Image.Image:
        return decode_image(data, draft_size=self.index.model.spec.input_size, max_pixels=self.max_pixels).image


def _urls(item_id: int, sha256: str) -> dict[str, str]:
    version = sha256[:12]
    return {
        "page_url": f"/items/{item_id}",
        "image_url": f"/api/items/{item_id}/image",
        "thumbnail_url": f"/api/items/{item_id}/thumbnail?v={version}",
        "similar_url": f"/api/items/{item_id}/similar",
    }


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
    if isinstance(index_or_db, Index):
        index, owns = index_or_db, False
    else:
        index, owns = Index.open(index_or_db, create=False), True
    if thumbnail_dir is None:
        folder = getattr(index.store, "folder", None)
        thumbnail_dir = Path(folder) / "thumbnails" if folder else Path(tempfile.mkdtemp(prefix="lookalike-thumbs-"))
    if token is not None and not token.strip():
        raise ValueError("an empty token would leave the write endpoints open; pass None to disable them")
    state = _State(
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(lambda: index.model)  # load the model once, before the first request
        yield
        state.batcher.close()
        if state.owns_index:
            index.close()

    app = FastAPI(
        title="lookalike",
        version=__version__,
        summary="Visual similarity search: upload a picture, find what looks like it.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's Swagger UI loads from a CDN; /docs below works offline
        redoc_url=None,
    )
    app.state.lookalike = state
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["basename"] = lambda p: os.path.basename(str(p))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    app.add_middleware(SecurityHeadersMiddleware, csp=_CSP)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_upload_bytes + MULTIPART_SLACK)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ImageLoadError)
    async def image_error(request: Request, exc: ImageLoadError) -> JSONResponse:
        status = _STATUS_FOR_REASON.get(exc.reason, 422)
        return JSONResponse({"detail": f"{exc.reason}: {exc.detail}", "reason": exc.reason}, status_code=status)

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(state.max_upload_bytes + 1)
        if len(data) > state.max_upload_bytes:
            raise HTTPException(413, f"upload too large: the limit is {state.max_upload_bytes / 2**20:.3g} MB")
        return data

    async def decode_upload(upload: UploadFile) -> tuple[bytes, Image.Image]:
        data = await read_upload(upload)
        async with state.decode_slots:
            image = await run_in_threadpool(state.decode, data)
        return data, image

    state.decode_upload = decode_upload

    def require_token(authorization: str | None) -> None:
        if state.token is None:
            raise HTTPException(403, "this endpoint is disabled: the server was started without a token")
        if not token_matches(state.token, authorization):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="lookalike"'}
            )

    # ------------------------------------------------------------------------------------- JSON API
    @app.get("/api/health", tags=["api"])
    def health() -> dict[str, object]:
        """Liveness and what is being served."""
        return {
            "status": "ok",
            "version": __version__,
            "items": len(index),
            "model": index.model_name,
            "writable": state.token is not None and state.upload_dir is not None,
            "batches": dict(sorted(state.batcher.batch_sizes.items())),
        }

    @app.post("/api/search", tags=["api"], responses=_UPLOAD_ERRORS)
    async def search(
        image: Annotated[UploadFile | None, File(description="The query picture (JPEG, PNG, WebP, ...).")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K, description="How many results (1-200).")] = 4,
        text: Annotated[
            str | None,
            Form(
                max_length=500,
                description="Search by words instead of a picture: by meaning with a CLIP model, otherwise "
                "keyword match on the images' ImageNet class tags.",
            ),
        ] = None,
    ) -> dict[str, object]:
        """Find the k indexed images most like an uploaded picture, or matching ``text``.
        Same schema as `lookalike search --json`."""
        if text is not None and text.strip():
            result = await asyncio.to_thread(index.search_text, text, k)
            if result.error:
                raise HTTPException(422, result.error)
            return {"queries": [state.result_dict(result)]}
        if image is None:
            raise HTTPException(422, "send an image file (field 'image') or words (field 'text')")
        _, picture = await decode_upload(image)
        result = await asyncio.wrap_future(state.batcher.submit(picture, k))
        result = dataclasses.replace(result, query=image.filename or "<upload>")
        return {"queries": [state.result_dict(result)]}

    @app.get("/api/items", tags=["api"])
    def list_items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
    ) -> dict[str, object]:
        """Browse the collection by id, with paging."""
        items = [state.item_dict(r) for r in index.store.items(offset=offset, limit=limit)]
        return {"total": len(index), "offset": offset, "limit": limit, "items": items}

    @app.get("/api/items/{item_id}", tags=["api"], responses=_NOT_FOUND)
    def get_item(item_id: int) -> dict[str, object]:
        """What the index knows about one item."""
        rec = index.item(item_id)
        if rec is None:
            raise HTTPException(404, f"no item with id {item_id}")
        return state.item_dict(rec)

    @app.get("/api/items/{item_id}/similar", tags=["api"], responses=_NOT_FOUND)
    def similar(item_id: int, k: K = 4) -> dict[str, object]:
        """Recommendations ("more like this") for an indexed item, itself excluded."""
        if index.item(item_id) is None:
            raise HTTPException(404, f"no item with id {item_id}")
        result = index.similar(item_id, k)
        if result.error:
            raise HTTPException(404, result.error)
        return {"queries": [state.result_dict(result)]}

    def cached_image(request: Request, item_id: int, cache: ThumbnailCache, v: str | None) -> Response:
        rec, real = state.servable(item_id)
        etag = f'"{rec.sha256[:16]}-{cache.size}"'
        # A URL that names the content (?v=) never changes meaning: cache it for good.
        cache_control = "public, max-age=31536000, immutable" if v == rec.sha256[:12] else "no-cache"
        headers = {"ETag": etag, "Cache-Control": cache_control}
        if etag in (request.headers.get("if-none-match") or ""):
            return Response(status_code=304, headers=headers)
        path = cache.get(real, rec.sha256)
        return FileResponse(path, media_type="image/jpeg", headers=headers)

    @app.get("/api/items/{item_id}/thumbnail", tags=["api"], response_class=FileResponse, responses=_FILE_ERRORS)
    def thumbnail(
        request: Request,
        item_id: int,
        v: Annotated[str | None, Query(description="content version (from thumbnail_url)")] = None,
        size: Annotated[str, Query(pattern="^(small|large)$")] = "small",
    ) -> Response:
        """A JPEG thumbnail (320 px, or 1280 px with size=large), made once and cached on disk."""
        return cached_image(request, item_id, state.thumbs if size == "small" else state.previews, v)

    @app.get("/api/items/{item_id}/image", tags=["api"], response_class=FileResponse, responses=_FILE_ERRORS)
    def original(item_id: int) -> Response:
        """The indexed file itself, by id only."""
        rec, real = state.servable(item_id)
        try:
            # Opening an ICO decodes it: the file may have been swapped for a bomb since it was indexed.
            with pixel_limit(max(INDEX_MAX_PIXELS, state.max_pixels)), Image.open(real) as probe:
                fmt = probe.format or ""
        except Exception as exc:
            raise HTTPException(415, "this item's file is no longer a readable image") from exc
        media = _MIME.get(fmt)
        if media is None:  # formats browsers cannot show (or could be abused) go out as a JPEG preview
            return FileResponse(state.previews.get(real, rec.sha256), media_type="image/jpeg")
        return FileResponse(real, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.post("/api/items", tags=["api"], status_code=201, responses={**_UPLOAD_ERRORS, **_WRITE_ERRORS})
    async def add_item(
        response: Response,
        image: Annotated[UploadFile, File(description="The picture to add to the collection.")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, object]:
        """Add an uploaded picture to the collection (stored under the upload folder). Needs the token."""
        require_token(authorization)
        if state.upload_dir is None:
            raise HTTPException(403, "adding is disabled: the server was started without an upload folder")
        data, _ = await decode_upload(image)  # decoded only to refuse bad pictures before writing
        with pixel_limit(state.max_pixels), Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
        sha = hashlib.sha256(data).hexdigest()
        target = state.upload_dir / f"{sha[:24]}{_FORMAT_SUFFIX.get(fmt, '.img')}"
        async with state.add_lock:  # one ingest at a time; searches go on meanwhile
            existing = index.store.get_by_path(str(target))
            if existing is not None and target.exists():
                response.status_code = 200
                return {"added": False, "item": state.item_dict(existing)}
            await run_in_threadpool(_write_file, target, data)
            report = await run_in_threadpool(
                lambda: index.add([target], remove_missing=False, max_pixels=state.max_pixels)
            )
            rec = index.store.get_by_path(str(target))
        if rec is None:
            detail = "; ".join(f"{s.reason}: {s.detail}" for s in report.skipped) or "the image was not indexed"
            raise HTTPException(422, detail)
        return {"added": True, "item": state.item_dict(rec)}

    @app.delete("/api/items/{item_id}", tags=["api"], responses={**_WRITE_ERRORS, **_NOT_FOUND})
    def delete_item(item_id: int, authorization: Annotated[str | None, Header()] = None) -> dict[str, object]:
        """Drop an item from the index. The file itself is never deleted. Needs the token."""
        require_token(authorization)
        if index.remove([item_id]) == 0:
            raise HTTPException(404, f"no item with id {item_id}")
        return {"removed": item_id}

    # ------------------------------------------------------------------------------------ web pages
    def page(request: Request, name: str, **context: object) -> HTMLResponse:
        context.setdefault("count", len(index))
        return templates.TemplateResponse(request, name, context)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request) -> HTMLResponse:
        return page(request, "search.html", max_k=MAX_K, max_mb=state.max_upload_bytes / 2**20)

    @app.get("/items/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    def item_page(request: Request, item_id: int, k: Annotated[int, Query(ge=1, le=MAX_K)] = 8) -> HTMLResponse:
        rec = index.item(item_id)
        if rec is None:
            raise HTTPException(404, f"no item with id {item_id}")
        result = state.result_dict(index.similar(item_id, k))
        return page(request, "item.html", item=state.item_dict(rec), result=result, k=k, max_k=MAX_K)

    @app.get("/browse", response_class=HTMLResponse, include_in_schema=False)
    def browse(request: Request, page_number: Annotated[int, Query(alias="page", ge=1)] = 1) -> HTMLResponse:
        total = len(index)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        items = [state.item_dict(r) for r in index.store.items(offset=(page_number - 1) * PAGE_SIZE, limit=PAGE_SIZE)]
        return page(request, "browse.html", items=items, page=page_number, pages=pages, total=total)

    register_review(app, state, require_token, page)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(request: Request) -> HTMLResponse:
        return page(request, "docs.html", spec=app.openapi())

    return app


def _write_file(target: Path, data: bytes) -> None:
    """Write atomically (temp + rename) so the indexer never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

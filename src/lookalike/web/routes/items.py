"""The collection's items: records, the files themselves, thumbnails, and adding or dropping one.

Files are only ever served by item id, and only when they resolve inside the indexed folders (or
the upload folder). Adding and dropping need the bearer token.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from lookalike.imaging import formats
from lookalike.imaging.load import DEFAULT_MAX_PIXELS as INDEX_MAX_PIXELS
from lookalike.imaging.load import pixel_limit
from lookalike.web.deps import NEEDS_TOKEN, TOKEN_ERRORS, StateDep, UploadsDep
from lookalike.web.uploads import UPLOAD_ERRORS

PAGE_SIZE = 48

_FORMAT_SUFFIX = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "HEIF": ".heic",
    "AVIF": ".avif",
}
_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}

_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"description": "Disabled: no token (or no upload folder) configured"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item"}}
_FILE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The file lies outside the indexed folders"},
    404: {"description": "No such item, or its file is missing"},
}

router = APIRouter(tags=["api"])


@router.get("/api/items")
def list_items(
    state: StateDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
) -> dict[str, object]:
    """Browse the collection by id, with paging."""
    items = [state.item_dict(r) for r in state.index.store.items(offset=offset, limit=limit)]
    return {"total": len(state.index), "offset": offset, "limit": limit, "items": items}


@router.get("/api/items/{item_id}", responses=_NOT_FOUND)
def get_item(state: StateDep, item_id: int) -> dict[str, object]:
    """What the index knows about one item."""
    return state.item_dict(state.record(item_id))


@router.get("/api/items/{item_id}/thumbnail", response_class=FileResponse, responses=_FILE_ERRORS)
def thumbnail(
    state: StateDep,
    request: Request,
    item_id: int,
    v: Annotated[str | None, Query(description="content version (from thumbnail_url)")] = None,
    size: Annotated[str, Query(pattern="^(small|large)$")] = "small",
) -> Response:
    """A JPEG thumbnail (320 px, or 1280 px with size=large), made once and cached on disk."""
    cache = state.thumbs if size == "small" else state.previews
    rec, real = state.servable(item_id)
    etag = f'"{rec.sha256[:16]}-{cache.size}"'
    # A URL that names the content (?v=) never changes meaning: cache it for good.
    cache_control = "public, max-age=31536000, immutable" if v == rec.sha256[:12] else "no-cache"
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    return FileResponse(cache.get(real, rec.sha256), media_type="image/jpeg", headers=headers)


@router.get("/api/items/{item_id}/image", response_class=FileResponse, responses=_FILE_ERRORS)
def original(state: StateDep, item_id: int) -> Response:
    """The indexed file itself, by id only."""
    rec, real = state.servable(item_id)
    try:
        with open(real, "rb") as handle:
            head = handle.read(65536)
    except OSError as exc:
        raise HTTPException(415, "this item's file is no longer a readable image") from exc
    if formats.kind_of(head, real) == "raw":  # no browser shows camera RAW (Pillow may take one for a TIFF)
        return FileResponse(state.previews.get(real, rec.sha256), media_type="image/jpeg")
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


@router.post("/api/items", status_code=201, responses={**UPLOAD_ERRORS, **_WRITE_ERRORS}, dependencies=[NEEDS_TOKEN])
async def add_item(
    state: StateDep,
    decode: UploadsDep,
    response: Response,
    image: Annotated[UploadFile, File(description="The picture to add to the collection.")],
) -> dict[str, object]:
    """Add an uploaded picture to the collection (stored under the upload folder). Needs the token."""
    if state.upload_dir is None:
        raise HTTPException(403, "adding is disabled: the server was started without an upload folder")
    upload = await decode(image)  # decoded only to refuse bad pictures before writing
    sha = hashlib.sha256(upload.data).hexdigest()
    suffix = _FORMAT_SUFFIX.get(upload.format or "", ".img")
    if upload.format == "RAW":  # keep a RAW extension: NEF, ARW... are told from a TIFF by their name
        suffix = Path(image.filename or "").suffix.lower()
        suffix = suffix if suffix in formats.RAW_EXTENSIONS else ".dng"
    target = state.upload_dir / f"{sha[:24]}{suffix}"
    index = state.index
    async with state.change_lock:  # one ingest at a time; searches go on meanwhile
        existing = index.store.get_by_path(str(target))
        if existing is not None and target.exists():
            response.status_code = 200
            return {"added": False, "item": state.item_dict(existing)}
        await run_in_threadpool(_write_file, target, upload.data)
        report = await run_in_threadpool(lambda: index.add([target], remove_missing=False, max_pixels=state.max_pixels))
        rec = index.store.get_by_path(str(target))
    if rec is None:
        detail = "; ".join(f"{s.reason}: {s.detail}" for s in report.skipped) or "the image was not indexed"
        raise HTTPException(422, detail)
    return {"added": True, "item": state.item_dict(rec)}


@router.delete("/api/items/{item_id}", responses={**_WRITE_ERRORS, **_NOT_FOUND}, dependencies=[NEEDS_TOKEN])
def delete_item(state: StateDep, item_id: int) -> dict[str, object]:
    """Drop an item from the index. The file itself is never deleted. Needs the token."""
    if state.index.remove([item_id]) == 0:
        raise HTTPException(404, f"no item with id {item_id}")
    return {"removed": item_id}


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

"""Uploaded pictures: read under the byte limit, decoded under the pixel limit, refused with a status.

Search, adding and the review sweep all take pictures from strangers, so they all go through one
:class:`UploadDecoder`: one byte limit, one pixel limit, one bound on concurrent decodes, and one
mapping from :class:`~lookalike.imaging.load.ImageLoadError` to an HTTP status.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from lookalike.imaging.load import ImageLoadError, LoadedImage, decode_image

if TYPE_CHECKING:
    from lookalike.index import Index

#: ImageLoadError reason -> HTTP status. Anything else that cannot be decoded is a 422.
STATUS_FOR_REASON = {"not an image": 415, "decoder missing": 415, "too many pixels": 413, "too large": 413}

#: The OpenAPI ``responses`` of every route that takes a picture.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Upload too large (bytes or pixels)"},
    415: {"description": "Not an image"},
    422: {"description": "Corrupt or empty image, or a bad parameter"},
}


@dataclass(frozen=True)
class DecodedUpload:
    """An upload that passed every limit: its bytes, the upright RGB picture and the file format."""

    data: bytes
    image: Image.Image
    format: str | None


class UploadDecoder:
    """Turns an :class:`UploadFile` into a :class:`DecodedUpload`, or an HTTP error.

    Decodes run in worker threads, a few at a time: each may hold a full-size RGB picture in memory.
    JPEGs are draft-decoded at the index model's input size (read when decoding: the model is
    loaded at start-up, after the app is built).
    """

    def __init__(self, index: Index, *, max_bytes: int, max_pixels: int) -> None:
        self.index = index
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.slots = asyncio.Semaphore(max(2, 2 * (os.cpu_count() or 1)))

    async def _read(self, upload: UploadFile) -> bytes:
        """The upload's bytes; 413 past the byte limit (reading at most one byte beyond it)."""
        data = await upload.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise HTTPException(413, f"upload too large: the limit is {self.max_bytes / 2**20:.3g} MB")
        return data

    async def __call__(self, upload: UploadFile) -> DecodedUpload:
        data = await self._read(upload)
        async with self.slots:
            loaded = await run_in_threadpool(self._decode, data, upload.filename)
        return DecodedUpload(data, loaded.image, loaded.format)

    def _decode(self, data: bytes, name: str | None = None) -> LoadedImage:
        """``name``: the upload's file name, which tells camera RAW files that begin like a TIFF."""
        return decode_image(data, draft_size=self.index.model.spec.input_size, max_pixels=self.max_pixels, name=name)


async def image_error_response(request: Request, exc: ImageLoadError) -> JSONResponse:
    """The app's handler for :class:`ImageLoadError` (from uploads, and from thumbnails of indexed files)."""
    status = STATUS_FOR_REASON.get(exc.reason, 422)
    return JSONResponse({"detail": f"{exc.reason}: {exc.detail}", "reason": exc.reason}, status_code=status)

"""Searching: by an uploaded picture, by words, or by an indexed item ("more like this")."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile

from lookalike.dedup.copies import VERIFY_K
from lookalike.web.deps import StateDep, UploadsDep
from lookalike.web.uploads import UPLOAD_ERRORS

MAX_K = 200

K = Annotated[int, Query(ge=1, le=MAX_K, description="How many results (1-200).")]
VERIFY_HELP = (
    f"Also check the query point for point against its {VERIFY_K} most similar results: copies (turned, "
    'cropped, in a screenshot) come first with "verified": true. Reads those images again (about a second).'
)

router = APIRouter(tags=["api"])


@router.post("/api/search", responses=UPLOAD_ERRORS)
async def search(
    state: StateDep,
    decode: UploadsDep,
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
    verify: Annotated[bool, Form(description=VERIFY_HELP)] = False,
) -> dict[str, object]:
    """Find the k indexed images most like an uploaded picture, or matching ``text``.
    Same schema as `lookalike search --json`."""
    if text is not None and text.strip():
        result = await asyncio.to_thread(state.index.search_text, text, k)
        if result.error:
            raise HTTPException(422, result.error)
        return {"queries": [state.result_dict(result)]}
    if image is None:
        raise HTTPException(422, "send an image file (field 'image') or words (field 'text')")
    upload = await decode(image)
    if verify:
        result = (await asyncio.to_thread(state.search_verified, [upload.image], k))[0]
    else:
        result = await asyncio.wrap_future(state.batcher.submit(upload.image, k))
    result = dataclasses.replace(result, query=image.filename or "<upload>")
    return {"queries": [state.result_dict(result)]}


@router.get("/api/items/{item_id}/similar", responses={404: {"description": "No such item"}})
def similar(
    state: StateDep, item_id: int, k: K = 4, verify: Annotated[bool, Query(description=VERIFY_HELP)] = False
) -> dict[str, object]:
    """Recommendations ("more like this") for an indexed item, itself excluded."""
    state.record(item_id)
    result = state.search_verified([item_id], k)[0] if verify else state.index.similar(item_id, k)
    if result.error:
        raise HTTPException(404, result.error)
    return {"queries": [state.result_dict(result)]}

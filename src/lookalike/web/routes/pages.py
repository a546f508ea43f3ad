"""The HTML pages: search, an item with "more like this", browsing, and the offline API reference.

They are rendered on the server from the same records the JSON API returns; the page scripts in
``static/`` (mounted by :func:`~lookalike.web.app.create_app`) then call the API.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from lookalike.web.deps import PageDep, StateDep
from lookalike.web.routes.items import PAGE_SIZE
from lookalike.web.routes.search import MAX_K, VERIFY_K

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/")
def home(state: StateDep, page: PageDep) -> HTMLResponse:
    return page("search.html", max_k=MAX_K, max_mb=state.max_upload_bytes / 2**20, verify_k=VERIFY_K)


@router.get("/items/{item_id}")
def item_page(
    state: StateDep, page: PageDep, item_id: int, k: Annotated[int, Query(ge=1, le=MAX_K)] = 8
) -> HTMLResponse:
    rec = state.record(item_id)
    result = state.result_dict(state.index.similar(item_id, k))
    return page("item.html", item=state.item_dict(rec), result=result, k=k, max_k=MAX_K)


@router.get("/browse")
def browse(state: StateDep, page: PageDep, page_number: Annotated[int, Query(alias="page", ge=1)] = 1) -> HTMLResponse:
    total = len(state.index)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    records = state.index.store.items(offset=(page_number - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    items = [state.item_dict(r) for r in records]
    return page("browse.html", items=items, page=page_number, pages=pages, total=total)


@router.get("/docs")
def api_docs(request: Request, page: PageDep) -> HTMLResponse:
    return page("docs.html", spec=request.app.openapi())

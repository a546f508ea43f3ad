"""The dependencies routes ask for: the app's state, its index, the upload decoder, the token check
and the page renderer.

Each reads the one :class:`~lookalike.web.state.WebState` of the app serving the request. They
are ``async`` although none awaits: FastAPI runs a plain ``def`` dependency in a worker thread,
a hop per request for what is an attribute lookup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from lookalike.index import Index
from lookalike.web.security import token_matches
from lookalike.web.state import WebState
from lookalike.web.uploads import UploadDecoder

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.filters["basename"] = lambda p: os.path.basename(str(p))

#: The OpenAPI ``responses`` the token check adds (routes that also need a folder say which).
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or wrong bearer token"}}


async def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.lookalike
    return state


StateDep = Annotated[WebState, Depends(web_state)]


async def the_index(state: StateDep) -> Index:
    return state.index


async def upload_decoder(state: StateDep) -> UploadDecoder:
    return state.uploads


IndexDep = Annotated[Index, Depends(the_index)]
UploadsDep = Annotated[UploadDecoder, Depends(upload_decoder)]


async def require_token(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Refuse the request unless it carries the server's bearer token (403 when there is none).

    As a route dependency it runs before the route's own parameters are validated: a caller
    without the token gets 401 or 403, never a 422 about a payload it may not send at all.
    """
    if state.token is None:
        raise HTTPException(403, "this endpoint is disabled: the server was started without a token")
    if not token_matches(state.token, authorization):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="lookalike"'}
        )


#: ``dependencies=[NEEDS_TOKEN]`` on every route that changes the collection.
NEEDS_TOKEN = Depends(require_token)


class PageRenderer:
    """Renders one of the templates for the current request, with the collection size every page shows."""

    def __init__(self, request: Request, index: Index) -> None:
        self.request = request
        self.index = index

    def __call__(self, name: str, **context: object) -> HTMLResponse:
        context.setdefault("count", len(self.index))
        return TEMPLATES.TemplateResponse(self.request, name, context)


async def page_renderer(request: Request, index: IndexDep) -> PageRenderer:
    return PageRenderer(request, index)


PageDep = Annotated[PageRenderer, Depends(page_renderer)]

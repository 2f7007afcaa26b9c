"""`GET /v1/models`: the served model ids in Writer's shape (those the caller's key may use)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from inkstand.api.gateway import admission


async def list_models(request: Request) -> JSONResponse:
    key = admission(request).key
    listing = request.app.state.runtime.catalog().listing()
    return JSONResponse({"models": [m for m in listing if key.allows(m["id"])]})

"""`GET /v1/models`: the served model ids in Writer's shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse({"models": request.app.state.runtime.catalog().listing()})

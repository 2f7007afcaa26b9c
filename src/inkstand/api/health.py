"""`GET /health` (no key needed): 200 once every model is loaded, 503 before."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def health(request: Request) -> JSONResponse:
    state = request.app.state.runtime
    if state.ready:
        return JSONResponse({"status": "ok"})
    if state.failure:
        return JSONResponse({"status": "failed", "error": state.failure}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})

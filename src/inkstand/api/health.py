"""`GET /health` (no key needed): 200 once every model is ready, 503 before or after a failure.

    {"status": "ok" | "loading" | "failed", "models": {"palmyra-x5": "ready" | "loading" | ...}}

It names no file paths and no error text: the reason a model is not ready goes to the log and
to authenticated API callers (their requests get the 503 with it).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


async def health(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    models = runtime.model_states()
    if runtime.ready and all(state == "ready" for state in models.values()):
        return JSONResponse({"status": "ok", "models": models})
    if "failed" in models.values():
        return JSONResponse({"status": "failed", "models": models}, status_code=503)
    body = {"status": "loading", "models": models}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

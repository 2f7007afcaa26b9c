"""`GET /health` (no key needed): 200 once every model is ready, 503 before or after a failure.

    {"status": "ok" | "degraded" | "loading" | "failed" | "stopping",
     "models": {"palmyra-x5": "ready" | "loading" | "failed" | "unavailable"}}

"unavailable": an upstream model none of whose replicas answers. "degraded" (200): some
models are ready, the others' upstreams unavailable. "stopping" (503): the server got
SIGTERM and finishes the answers in flight; a load balancer should send it nothing new. It
names no file paths, URLs or error text: the reason a model is not ready goes to the log and
to authenticated API callers (their requests get the 503 with it). A caller with a valid key
(`inkstand status`) also gets
`"upstreams": {"model id": [{"replica": 0, "up": true, "in_flight": 0}, ...]}`: replicas by
their place in the config, never their URLs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from inkstand.api.gate import RETRY_AFTER
from inkstand.errors import AuthenticationError


async def health(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    models = runtime.model_states()
    detail = _upstreams(request)
    if request.app.state.gate.closed:
        body = {"status": "stopping", "models": models, **detail}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
    if runtime.ready and all(state == "ready" for state in models.values()):
        return JSONResponse({"status": "ok", "models": models, **detail})
    if "failed" in models.values():
        return JSONResponse({"status": "failed", "models": models, **detail}, status_code=503)
    states = set(models.values())
    if runtime.ready and states == {"ready", "unavailable"}:
        return JSONResponse({"status": "degraded", "models": models, **detail})
    body = {"status": "loading", "models": models, **detail}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


def _upstreams(request: Request) -> dict:
    header = request.headers.get("authorization")
    if header is None or not request.app.state.runtime.upstreams:
        return {}
    try:
        request.app.state.gateway.authenticate(header)
    except AuthenticationError:
        return {}
    upstreams = request.app.state.runtime.upstreams
    return {"upstreams": {model_id: up.states() for model_id, up in upstreams.items()}}

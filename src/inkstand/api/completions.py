"""`POST /v1/completions`: Writer's text generation, whole or streamed."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from inkstand.api.body import read_model
from inkstand.api.gateway import admission
from inkstand.api.sse import ClientGoneError, SSEResponse, until_disconnect
from inkstand.chat.completions import CompletionStream
from inkstand.schemas.completions import CompletionsRequest


async def completions(request: Request):
    service = request.app.state.runtime.completion_service()
    body = await read_model(request, CompletionsRequest, request.app.state.settings.max_body_bytes)
    request.state.model = body.model
    gate = admission(request)
    gate.authorize(body.model)
    plan = service.plan(body)
    request.state.usage = plan.usage
    gate.reserve(plan.usage.prompt + plan.generation.max_tokens * plan.generation.n)
    try:
        if body.stream:
            stream = CompletionStream(plan)
            await until_disconnect(request.receive, stream.prime())
            return SSEResponse(stream.values(), stream.aclose)
        answer = await until_disconnect(request.receive, service.complete(plan))
    except ClientGoneError:
        return Response(status_code=499)
    return Response(orjson.dumps(answer), media_type="application/json")

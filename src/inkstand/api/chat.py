"""`POST /v1/chat`: Writer's chat completion, whole or streamed."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from inkstand.api.body import read_model
from inkstand.api.gateway import admission
from inkstand.api.sse import ClientGoneError, SSEResponse, until_disconnect
from inkstand.chat.service import ChatService
from inkstand.schemas.chat import ChatRequest


async def chat(request: Request):
    service: ChatService = request.app.state.runtime.chat_service()
    body = await read_model(request, ChatRequest, request.app.state.settings.max_body_bytes)
    request.state.model = body.model
    gate = admission(request)
    gate.authorize(body.model)
    plan = service.plan(body)
    request.state.usage = plan.usage
    gate.reserve(plan.usage.prompt + plan.generation.max_tokens * plan.n)
    try:
        if body.stream:
            stream = service.open_stream(plan)
            # A client may leave while its request waits for a slot or its prompt is read.
            await until_disconnect(request.receive, stream.prime())
            return SSEResponse(stream.chunks(), stream.aclose)
        answer = await until_disconnect(request.receive, service.complete(plan))
    except ClientGoneError:
        return Response(status_code=499)  # nobody reads it; it names the outcome in the log
    return Response(orjson.dumps(answer), media_type="application/json")

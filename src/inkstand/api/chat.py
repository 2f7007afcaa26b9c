"""`POST /v1/chat`: Writer's chat completion, whole or streamed."""

from __future__ import annotations

from starlette.requests import Request

from inkstand.api.answer import answer
from inkstand.api.body import read_model
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.service import ChatService
from inkstand.schemas.chat import ChatRequest
from inkstand.tools.delegate import delegates


async def chat(request: Request):
    service: ChatService = request.app.state.runtime.chat_service()
    body = await read_model(request, ChatRequest, request.app.state.settings)
    request.state.model = body.model
    admission(request).authorize(body.model)
    for delegate in delegates(body):  # the `llm` tool must not reach past the key's scope
        admission(request).authorize(delegate)
    plan = await service.plan(body, scope=cache_scope(request), admit=admission(request).check)
    stream = service.open_stream(plan) if body.stream else None
    return await answer(
        request,
        plan,
        lambda: service.complete(plan),
        (stream, stream.chunks) if stream is not None else None,
    )

"""`POST /v1/completions`: Writer's text generation, whole or streamed."""

from __future__ import annotations

from starlette.requests import Request

from inkstand.api.answer import answer
from inkstand.api.body import read_model
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.completions import CompletionStream
from inkstand.schemas.completions import CompletionsRequest


async def completions(request: Request):
    service = request.app.state.runtime.completion_service()
    body = await read_model(request, CompletionsRequest, request.app.state.settings)
    request.state.model = body.model
    admission(request).authorize(body.model)
    plan = await service.plan(body, scope=cache_scope(request))
    stream = CompletionStream(plan) if body.stream else None
    return await answer(
        request,
        plan,
        lambda: service.complete(plan),
        (stream, stream.values) if stream is not None else None,
    )

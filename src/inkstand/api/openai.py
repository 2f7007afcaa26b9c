"""OpenAI's API under `/openai/v1`: chat completions, completions and the model list.

The same keys, scopes, limits, usage records and engines as Writer's routes, through the
same code: a body is read as the Writer body it corresponds to (`schemas/openai.py`),
planned and answered by the Writer route's own path, and only the answer is reshaped
(`chat/openai.py`). Errors on these paths are rendered in OpenAI's shape wherever they are
raised (`api/errors.py` looks at the path), the gateway's 401, 403 and 429 included.
"""

from __future__ import annotations

import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inkstand.api.answer import answer
from inkstand.api.body import read_object, validate
from inkstand.api.chat import answer_chat
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.completions import CompletionStream
from inkstand.chat.openai import TextCompletion, chat_chunks, chat_completion
from inkstand.schemas.chat import ChatRequest
from inkstand.schemas.openai import OpenAICompletionsRequest, writer_chat

PREFIX = "/openai/v1"


async def chat_completions(request: Request):
    data = writer_chat(await read_object(request, request.app.state.settings))
    body = validate(ChatRequest, data)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await answer_chat(
        request, body, chat_completion, lambda chunks: chat_chunks(chunks, include_usage)
    )


async def completions(request: Request):
    service = request.app.state.runtime.completion_service()
    data = await read_object(request, request.app.state.settings)
    body = validate(OpenAICompletionsRequest, data)
    body.refuse_unsupported()
    request.state.model = body.model
    admission(request).authorize(body.model)
    plan = await service.plan(body.writer(), scope=cache_scope(request), choices=body.choices)
    shaper = TextCompletion(plan, uuid.uuid4().hex, int(time.time()))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    stream = CompletionStream(plan) if body.stream else None
    return await answer(
        request,
        plan,
        shaper.whole,
        (stream, lambda: shaper.chunks(stream.events(), include_usage)) if stream else None,
    )


async def list_models(request: Request) -> JSONResponse:
    """OpenAI's list: `{"object": "list", "data": [{"id", "object", "created", "owned_by"}]}`."""
    key = admission(request).key
    listing = request.app.state.runtime.catalog().listing()
    now = int(time.time())  # as vLLM: the files carry no creation date worth reporting
    data = [
        {"id": m["id"], "object": "model", "created": now, "owned_by": "inkstand"}
        for m in listing
        if key.allows(m["id"])
    ]
    return JSONResponse({"object": "list", "data": data})


ROUTES = [
    Route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{PREFIX}/completions", completions, methods=["POST"]),
    Route(f"{PREFIX}/models", list_models, methods=["GET"]),
]

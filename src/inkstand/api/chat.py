"""`POST /v1/chat`: Writer's chat completion, whole or streamed.

`answer_chat` is the whole path after the body is read, shared with OpenAI's
`/openai/v1/chat/completions` (`api/openai.py`), which only reshapes what it returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from inkstand.api.answer import answer
from inkstand.api.body import read_model
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.service import ChatService
from inkstand.schemas.chat import ChatRequest
from inkstand.tools.delegate import delegates

Reshape = Callable[[dict], dict]
ReshapeChunks = Callable[[AsyncIterator[dict]], AsyncIterator[dict]]


async def chat(request: Request):
    body = await read_model(request, ChatRequest, request.app.state.settings)
    return await answer_chat(request, body)


async def answer_chat(
    request: Request,
    body: ChatRequest,
    whole: Reshape | None = None,
    chunks: ReshapeChunks | None = None,
):
    """Authorize, plan and answer `body`; `whole` and `chunks` reshape the answer for
    another API's callers (none: Writer's shapes)."""
    service: ChatService = request.app.state.runtime.chat_service()
    request.state.model = body.model
    admission(request).authorize(body.model)
    for delegate in delegates(body):  # the `llm` tool must not reach past the key's scope
        admission(request).authorize(delegate)
    plan = await service.plan(body, scope=cache_scope(request), admit=admission(request).check)
    stream = service.open_stream(plan) if body.stream else None

    async def complete() -> dict:
        answered = await service.complete(plan)
        return whole(answered) if whole is not None else answered

    def frames() -> AsyncIterator[dict]:
        assert stream is not None
        return chunks(stream.chunks()) if chunks is not None else stream.chunks()

    return await answer(request, plan, complete, (stream, frames) if stream is not None else None)

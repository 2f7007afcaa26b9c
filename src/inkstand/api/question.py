"""`POST /v1/graphs/question`: ask Knowledge Graphs directly, whole or streamed.

The question runs as a chat with the `graph` tool on the server's first model (the API
names no model): the same retrieval, grounding, generation, gateway and usage as
`/v1/chat`. The answer is Writer's `Question` (`question`, `answer`, `sources`,
`subqueries`, and `references` with inline citations); a stream is SSE
`{"data": Question}` events: the sources and sub-questions in the first (with an empty
answer), then answer fragments with no sources, then the references (with inline
citations) in the last, so nothing repeats.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request

from inkstand.api.answer import answer
from inkstand.api.body import read_model
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.service import ChatPlan, ChatService
from inkstand.schemas.chat import ChatRequest
from inkstand.schemas.question import QuestionRequest
from inkstand.tools.graph import UnknownGraphsError


async def question(request: Request):
    service: ChatService = request.app.state.runtime.chat_service()
    body = await read_model(request, QuestionRequest, request.app.state.settings)
    model = request.app.state.settings.models[0].id
    request.state.model = model
    admission(request).authorize(model)
    chat = as_chat(body, model)
    try:
        plan = await service.plan(chat, scope=cache_scope(request), admit=admission(request).check)
    except UnknownGraphsError as error:
        raise error.naming("graph_ids") from None
    asked = body.question
    if not body.stream:
        return await answer(request, plan, lambda: _whole(service, plan, asked), None)
    stream = service.open_stream(plan)
    frames = (stream, lambda: _chunks(stream.chunks(), plan, asked))
    return await answer(request, plan, lambda: _whole(service, plan, asked), frames)


def as_chat(body: QuestionRequest, model: str) -> ChatRequest:
    function = {"graph_ids": body.graph_ids, "subqueries": body.subqueries}
    if body.query_config is not None:
        function["query_config"] = body.query_config
    return ChatRequest.model_validate(
        {
            "model": model,
            "messages": [{"role": "user", "content": body.question}],
            "tools": [{"type": "graph", "function": function}],
        }
    )


async def _whole(service: ChatService, plan: ChatPlan, asked: str) -> dict:
    completion = await service.complete(plan)
    message = completion["choices"][0]["message"]
    data = message["graph_data"]
    whole = {
        "question": asked,
        "answer": message["content"],
        "sources": data["sources"],
        "subqueries": data["subqueries"],
    }
    if "references" in data:
        whole["references"] = data["references"]
    return whole


async def _chunks(chunks: AsyncIterator[dict], plan: ChatPlan, asked: str) -> AsyncIterator[dict]:
    data = plan.tool_data.get("graph_data") or {}
    sources, subqueries = data.get("sources", []), data.get("subqueries", [])
    yield {"data": {"question": asked, "answer": "", "sources": sources, "subqueries": subqueries}}
    async for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                yield {"data": {"question": asked, "answer": text, "sources": []}}
            references = (delta.get("graph_data") or {}).get("references")
            if references is not None:
                yield {
                    "data": {
                        "question": asked,
                        "answer": "",
                        "sources": [],
                        "references": references,
                    }
                }

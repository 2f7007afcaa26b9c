"""`POST /v1/translation`: Writer's translation API (`client.translation.translate`).

The same path as the chat `translation` tool (`chat/builtin.py plan_translation`): the
codes checked (400 naming the field), the text translated by the model serving
`palmyra-translate` under the caller's key and limits, answered as `{"data": <text>}`.
"""

from __future__ import annotations

from starlette.requests import Request

from inkstand.api.answer import answer
from inkstand.api.body import read_model
from inkstand.api.gateway import admission, cache_scope
from inkstand.chat.builtin import plan_translation
from inkstand.chat.service import ChatPlan, ChatService
from inkstand.schemas.chat import ChatRequest
from inkstand.schemas.translation import TranslationRequest
from inkstand.tools.translate import Translation, check_code


async def translation(request: Request):
    service: ChatService = request.app.state.runtime.chat_service()
    body = await read_model(request, TranslationRequest, request.app.state.settings)
    request.state.model = body.model
    admission(request).authorize(body.model)
    asked = Translation(
        body.text,
        check_code("source_language_code", body.source_language_code),
        check_code("target_language_code", body.target_language_code),
        body.formality,
        body.length_control,
        body.mask_profanity,
    )
    shape = ChatRequest.model_validate(
        {"model": body.model, "messages": [{"role": "user", "content": body.text}]}
    )
    plan = await plan_translation(service, asked, body.model, shape, cache_scope(request))
    return await answer(request, plan, lambda: _data(service, plan), None)


async def _data(service: ChatService, plan: ChatPlan) -> dict:
    completion = await service.complete(plan)
    return {"data": completion["choices"][0]["message"]["content"]}

"""Planning a request that uses one of Writer's built-in tools (`graph`, `llm`,
`translation`): the tool's own work first (retrieval, sub-questions, the delegate's prompt,
language codes), then the generation that answers, planned as any other request.

Every internal generation goes through the service's own path (`ChatService.ask`: the
same planning, grammar, engine and limits), and its tokens join the answer's `usage`; work
that runs before the answer's reservation is first checked against the caller's rate
limit (`admit`). What the caller sees beyond the generation comes from the plan's
`tool_data` and `shaping` (`chat/shaping.py`). The tools' own logic lives in `tools/`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from inkstand.chat.catalog import Catalog, Served
from inkstand.chat.prompt import caller_text_size
from inkstand.chat.shaping import CitationShaping, WholeTextShaping
from inkstand.errors import BadRequestError, UnsupportedFeatureError
from inkstand.schemas.chat import ChatRequest, GraphTool, LLMTool, TranslationTool
from inkstand.tools import delegate, translate
from inkstand.tools.graph import Knowledge, ground, latest_question, read_query_config
from inkstand.tools.subqueries import Asked, work_estimate

if TYPE_CHECKING:
    from inkstand.chat.service import ChatPlan

log = logging.getLogger("inkstand.tools")
Admit = Callable[[int], None]  # raises when the caller may not spend that many tokens now
SOURCES_FRAME_TOKENS = 96  # the sources message's instructions and numbering
SNIPPET_CHARS_PER_TOKEN = 3  # cautious: prose runs about four, other text fewer


class Generator(Protocol):
    """What built-in tools need of the chat service."""

    catalog: Catalog
    knowledge: Knowledge | None

    async def plan_generation(self, request: ChatRequest, scope: str) -> ChatPlan: ...

    async def ask(self, request: ChatRequest, scope: str) -> Asked: ...


def estimate_tokens(chars: int, messages: int = 1) -> int:
    """A prompt's tokens guessed from its characters (about four a token in English), for
    rate limits before an engine reports the real count."""
    return chars // 4 + 8 * messages


def snippet_room_chars(served: Served, request: ChatRequest) -> int:
    """Characters of snippets the model's context has room for: the context less the
    conversation (estimated) and the answer's room (`max_tokens`, or a quarter of the
    context when it is not set)."""
    spec = served.spec
    answer_room = request.max_tokens or min(spec.max_output_tokens, spec.ctx_size // 4)
    size = caller_text_size(request.messages, request.tools)
    conversation = estimate_tokens(size, len(request.messages))
    room = spec.ctx_size - answer_room - conversation - SOURCES_FRAME_TOKENS
    return max(0, room) * SNIPPET_CHARS_PER_TOKEN


async def plan_built_in(
    service: Generator, request: ChatRequest, scope: str, admit: Admit | None
) -> ChatPlan | None:
    """The plan of a request with a built-in tool; None when it has none."""
    for tool in request.tools or ():
        if isinstance(tool, GraphTool):
            return await plan_graph(service, request, tool, scope, admit)
        if isinstance(tool, LLMTool):
            return await plan_delegation(service, request, tool, scope, admit)
        if isinstance(tool, TranslationTool):
            return await plan_translation_tool(service, request, tool, scope)
    return None


async def plan_graph(
    service: Generator, request: ChatRequest, tool: GraphTool, scope: str, admit: Admit | None
) -> ChatPlan:
    """The `graph` tool (`tools/graph.py`): the answer grounded in the graphs' snippets."""
    if service.knowledge is None:
        raise UnsupportedFeatureError("This server has no knowledge base for `graph` tools.")
    room = snippet_room_chars(service.catalog.resolve(request.model), request)
    if tool.function.subqueries and admit is not None:
        config = read_query_config(tool.function.query_config)
        admit(work_estimate(config.max_subquestions, room))

    async def ask(inner: ChatRequest) -> Asked:
        return await service.ask(inner, scope)

    grounded = await ground(request, tool, service.knowledge, ask, room)
    plan = await service.plan_generation(grounded.request, scope)
    plan.tool_data = {"graph_data": grounded.graph_data}
    if grounded.citations is not None:
        plan.shaping = CitationShaping(grounded.citations, grounded.graph_data)
    plan.usage.add_prior(grounded.spent.prompt, grounded.spent.completion)
    return plan


async def plan_delegation(
    service: Generator, request: ChatRequest, tool: LLMTool, scope: str, admit: Admit | None
) -> ChatPlan:
    """The `llm` tool (`tools/delegate.py`): the request's model writes the prompt, the
    delegate's answer is the response."""
    model = tool.function.model
    service.catalog.resolve(model)  # 400 for an unknown or removed id, before any work
    writing = delegate.prompt_request(request, tool, model)
    if admit is not None:
        size = caller_text_size(writing.messages, None)
        admit(estimate_tokens(size, len(writing.messages)) + delegate.PROMPT_TOKENS)
    asked = await service.ask(writing, scope)
    prompt = delegate.read_prompt(asked.text)
    if prompt is None:  # cut by its token cap: the caller's own words go to the delegate
        log.warning("delegation: the model's prompt did not parse; sending the user's message")
        prompt = latest_question(request.messages)
    plan = await service.plan_generation(delegate.delegate_request(request, model, prompt), scope)
    plan.request = plan.request.model_copy(update={"model": request.model})
    plan.usage.add_prior(asked.prompt_tokens, asked.completion_tokens)
    plan.tool_data = {"llm_data": {"prompt": prompt, "model": model}}
    return plan


async def plan_translation_tool(
    service: Generator, request: ChatRequest, tool: TranslationTool, scope: str
) -> ChatPlan:
    """The `translation` tool: the latest user message translated by the translator."""
    function = tool.function
    message = latest_question(request.messages)
    if not message.strip():
        raise BadRequestError("The `translation` tool needs a user message to translate.")
    text = translate.text_to_translate(message)
    extra = function.model_extra or {}  # the guide's spelling: source_language ...
    source = function.source_language_code or extra.get("source_language")
    target = function.target_language_code or extra.get("target_language")
    field = "tools[].function."
    if source:
        source = translate.check_code(field + "source_language_code", str(source))
    else:
        source = await asyncio.to_thread(translate.detect_language, text)
    if target:
        target = translate.check_code(field + "target_language_code", str(target))
    else:
        target = translate.target_from_message(message)
    if target is None:
        raise BadRequestError(
            "The `translation` tool found no target language: set "
            "`tools[].function.target_language_code` or name the language in the message "
            '("Translate into French: ...").'
        )
    translation = translate.Translation(
        text, source, target, function.formality, function.length_control, function.mask_profanity
    )
    return await plan_translation(service, translation, function.model, request, scope)


async def plan_translation(
    service: Generator,
    translation: translate.Translation,
    translator: str,
    request: ChatRequest,
    scope: str,
) -> ChatPlan:
    """`translation` answered by `translator` (normally `palmyra-translate`, an alias of the
    configured translator), as `request`'s answer (its model id, `n`, `stream_options`)."""
    body = translate.translator_request(
        translator,
        translation,
        request.max_tokens or _translation_bound(service, translator, translation),
    )
    inner = ChatRequest.model_validate(body).model_copy(
        update={"n": request.n, "stream_options": request.stream_options}
    )
    plan = await service.plan_generation(inner, scope)
    plan.request = plan.request.model_copy(update={"model": request.model})
    plan.tool_data = {"translation_data": translation.data()}
    plan.shaping = WholeTextShaping(plan.tool_data, translate.FINISH_REASON)
    return plan


def _translation_bound(
    service: Generator, translator: str, translation: translate.Translation
) -> int | None:
    """`max_tokens` for a translation whose caller set none: three times the source's
    estimated tokens (a translation is seldom longer), within the model's output cap; None
    (the room the context leaves) when that is more than half the context."""
    spec = service.catalog.resolve(translator).spec
    bound = min(estimate_tokens(len(translation.text)) * 3 + 64, spec.max_output_tokens)
    return bound if bound <= spec.ctx_size // 2 else None

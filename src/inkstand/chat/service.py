"""The chat service: validate what the engine cannot serve, build the prompt, run choices.

`plan()` does everything that can fail with a 4xx before any generation starts. A plan is
then answered whole (`complete`) or as a primed stream of Writer chunks (`open_stream`).
What every model shares (limits, tools and output plan, usage, chunks) is planned here; the
rest goes by the model's kind: a local model's prompt is rendered and tokenized for its
engine (`GenerationRequest`), an upstream model gets an OpenAI request (`UpstreamJob`,
`upstream/`). Both kinds answer with the same events.

Planning is bounded before it is done: counts and sizes (messages, tools, stop sequences,
prompt characters against the context) are checked first, at O(1) or O(messages) cost; the
heavy parts then run off the event loop: tools and response formats in the planner's
worker process (`chat/planner.py`), the grammar's parse and the prompt's tokenization in a
thread (llama.cpp releases the GIL for both).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from inkstand.chat.builtin import Admit, estimate_tokens, plan_built_in
from inkstand.chat.calls import CallChunks, extract_calls, finish_reason
from inkstand.chat.catalog import Catalog, Served, ServedModel, ServedUpstream
from inkstand.chat.checks import (
    RequestLimits,
    check_built_in_tools,
    check_choices,
    check_images,
    check_prompt_size,
    check_stops,
    fit_max_tokens,
    over_limit,
    reject_unsupported,
    resolve_max_tokens,
    sampling_params,
    tokenize_prompt,
    upstream_max_tokens,
)
from inkstand.chat.chunks import (
    ChoiceResult,
    ChunkFactory,
    completion_body,
    tool_call_body,
    usage_body,
)
from inkstand.chat.grammar import GrammarLimits
from inkstand.chat.output import OutputPlan
from inkstand.chat.planner import OutputPlanner
from inkstand.chat.prompt import caller_text_size, render_prompt
from inkstand.chat.shaping import Shaping
from inkstand.chat.toolformat import HermesFormat, tool_format
from inkstand.engine import Finish, GenerationRequest, TokenEvent
from inkstand.engine.types import CallEvent, Event
from inkstand.errors import UnsupportedFeatureError
from inkstand.schemas.chat import ChatRequest
from inkstand.tools.graph import Knowledge
from inkstand.tools.subqueries import Asked
from inkstand.upstream.translate import UpstreamJob, chat_job

Job = GenerationRequest | UpstreamJob


@dataclass
class Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    finish_reason: str | None = None  # of the last choice to finish
    # Tokens the answer's own generation needed before it (the `graph` tool's sub-questions):
    # included in `prompt` and `completion`.
    prior_prompt: int = 0

    def add_prior(self, prompt: int, completion: int) -> None:
        self.prior_prompt += prompt
        self.prompt += prompt
        self.completion += completion

    def body(self) -> dict:
        return usage_body(self.prompt, self.completion, self.cached)

    def count(self, finish: Finish) -> None:
        """Add one finished choice: its completion tokens; prompt and cache are shared."""
        self.prompt = self.prior_prompt + finish.prompt_tokens
        self.completion += finish.completion_tokens
        self.cached = max(self.cached, finish.cached_tokens)
        self.finish_reason = finish.reason


@dataclass
class ChatPlan:
    request: ChatRequest
    served: Served
    generation: Job  # `max_tokens` and `n` for either kind
    n: int
    output: OutputPlan
    response_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage = field(default_factory=Usage)
    # What a built-in tool adds to the message (`graph_data`, `llm_data` ...), sent once.
    tool_data: dict[str, Any] = field(default_factory=dict)
    shaping: Shaping | None = None  # a built-in tool's changes to what the caller sees

    def open(self) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        return open_job(self.served, self.generation)


def open_job(served: Served, job: Job) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
    """The events of `job` from the model's engine, local or upstream."""
    if isinstance(job, UpstreamJob):
        assert isinstance(served, ServedUpstream)
        return served.upstream.open(job)
    assert isinstance(served, ServedModel)
    return served.engine.stream(job)


class ChatService:
    def __init__(
        self,
        catalog: Catalog,
        limits: RequestLimits | None = None,
        planner: OutputPlanner | None = None,
        knowledge: Knowledge | None = None,
    ) -> None:
        """`knowledge`: what the `graph` tool retrieves from (none: the tool is a 400)."""
        self.catalog = catalog
        self.limits = limits or RequestLimits()
        self.planner = planner or OutputPlanner(GrammarLimits(), processes=0)
        self.knowledge = knowledge

    async def plan(
        self, request: ChatRequest, *, scope: str = "", admit: Admit | None = None
    ) -> ChatPlan:
        """Everything before generation; `scope` is whose prefix cache the request may use.

        `admit(tokens)` raises when the caller may not spend `tokens` now: asked before a
        built-in tool's own generations run (their tokens count in the answer's `usage`)."""
        self._check_counts(request)
        check_built_in_tools(request)
        planned = await plan_built_in(self, request, scope, admit)
        return planned if planned is not None else await self.plan_generation(request, scope)

    async def ask(self, request: ChatRequest, scope: str) -> Asked:
        """One internal generation (a built-in tool's), whole, on the request's path; its
        `max_tokens` held within the model's output cap and half its context."""
        spec = self.catalog.resolve(request.model).spec
        cap = min(request.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        request = request.model_copy(update={"max_tokens": min(cap, spec.ctx_size // 2)})
        plan = await self.plan_generation(request, scope)
        body = await self.complete(plan)
        usage = body["usage"]
        text = body["choices"][0]["message"]["content"] or ""
        return Asked(text, usage["prompt_tokens"], usage["completion_tokens"])

    async def plan_generation(self, request: ChatRequest, scope: str) -> ChatPlan:
        """The plan of one generation (no built-in tools left in `request`)."""
        served = self.catalog.resolve(request.model)
        if isinstance(served, ServedUpstream):
            return await self._plan_upstream(request, served, scope)
        reject_unsupported(request)
        info = served.engine.info
        check_prompt_size(served, caller_text_size(request.messages, request.tools))
        output = await self.planner.plan(request, tool_format(info.chat_template))
        if output.grammar is not None and not await asyncio.to_thread(
            served.engine.grammar_compiles, output.grammar
        ):
            raise UnsupportedFeatureError(
                "The tools' or the response format's JSON Schema gave a grammar the engine "
                "cannot load; simplify the schema."
            )
        prompt = render_prompt(
            info.chat_template,
            request.messages,
            bos=info.bos_text,
            eos=info.eos_text,
            tools=output.tools,
            specials=info.special_texts,
        )
        check_prompt_size(served, len(prompt.text.encode("utf-8")))
        tokens = tuple(await asyncio.to_thread(tokenize_prompt, served, prompt))
        max_tokens = resolve_max_tokens(request, served, len(tokens))
        sampling = sampling_params(
            served,
            request.temperature,
            request.top_p,
            seed=request.seed,
            logprobs=bool(request.logprobs),
            top_logprobs=request.top_logprobs or 0,
            grammar=output.grammar,
            grammar_triggers=output.triggers,
        )
        n = check_choices("n", request.n or 1, self.limits.max_n, served)
        generation = GenerationRequest(
            tokens, max_tokens, sampling, request.stops, n, served.turn_tail, scope
        )
        return ChatPlan(request, served, generation, n, output, usage=Usage(prompt=len(tokens)))

    async def _plan_upstream(
        self, request: ChatRequest, served: ServedUpstream, scope: str
    ) -> ChatPlan:
        """An upstream model's plan: the same checks and output plan (tools and formats are
        validated as for a local model), then the OpenAI request."""
        upstream = served.spec.upstream
        assert upstream is not None
        if not upstream.vision:
            reject_unsupported(request)
        check_images(request, self.limits)
        output = await self.planner.plan(request, HermesFormat())
        n = request.n or 1
        if n > self.limits.max_n:
            raise over_limit(f"`n` is {n}", "max_n", self.limits.max_n)
        size = caller_text_size(request.messages, request.tools)
        prompt = estimate_tokens(size, len(request.messages))
        max_tokens = upstream_max_tokens(request, served, prompt)
        job = chat_job(
            request,
            output,
            model=upstream.model,
            max_tokens=max_tokens,
            n=n,
            scope=scope,
            cap=request.max_tokens is not None,
        )
        counted = await served.upstream.count_prompt(job)
        if counted is not None:  # the engine's own count: the context checked as locally
            prompt = counted
            spec = served.spec
            job = job.capped(
                fit_max_tokens(request, spec.ctx_size, spec.max_output_tokens, counted)
            )
        job = dataclasses.replace(job, prompt_tokens=prompt)
        # The engine parses its own tool calls (`CallEvent`s): no text parsing here.
        plan_shown = OutputPlan(tools=output.tools)
        return ChatPlan(request, served, job, n, plan_shown, usage=Usage(prompt=prompt))

    def _check_counts(self, request: ChatRequest) -> None:
        limits = self.limits
        if len(request.messages) > limits.max_messages:
            raise over_limit(
                f"The request has {len(request.messages)} messages",
                "max_messages",
                limits.max_messages,
            )
        if request.tools and len(request.tools) > limits.max_tools:
            raise over_limit(
                f"The request has {len(request.tools)} tools", "max_tools", limits.max_tools
            )
        check_stops(request.stops, limits)

    async def complete(self, plan: ChatPlan) -> dict:
        choices = [
            ChoiceResult(i, tokens=[] if plan.request.logprobs else None) for i in range(plan.n)
        ]
        async with plan.open() as events:
            async for event in events:
                _collect(choices[event.index], event, plan.usage)
        if plan.output.parse_calls:
            for choice in choices:
                extract_calls(choice)
        if plan.shaping is not None:
            for choice in choices:
                plan.shaping.whole(choice)
        return completion_body(
            response_id=plan.response_id,
            created=plan.created,
            model=plan.request.model,
            choices=choices,
            usage=plan.usage.body(),
            tool_data=plan.tool_data,
        )

    def open_stream(self, plan: ChatPlan) -> ChatStream:
        return ChatStream(plan)


def _collect(choice: ChoiceResult, event: Event, usage: Usage) -> None:
    if isinstance(event, TokenEvent):
        choice.text += event.text
        if choice.tokens is not None and event.token is not None:
            choice.tokens.append(event.token)
    elif isinstance(event, CallEvent):
        calls = choice.tool_calls = choice.tool_calls or []
        if event.id is not None:
            calls.append(tool_call_body(len(calls), event.id, event.name or "", ""))
        if calls:
            calls[-1]["function"]["arguments"] += event.arguments
    else:
        choice.finish_reason = finish_reason(event.reason, bool(choice.tool_calls))
        usage.count(event)


class PrimedStream:
    """An engine stream opened before the response starts: `prime()`, then read, `aclose()`.

    `prime` waits for the first event, so a request refused or failed before its first token
    still gets a real status instead of a 200 followed by an error frame.
    """

    def __init__(self, served: Served, job: Job) -> None:
        self._served = served
        self._job = job
        self._stack = AsyncExitStack()
        self._events: AsyncIterator[Event] | None = None
        self._first: Event | None = None

    async def prime(self) -> None:
        try:
            self._events = await self._stack.enter_async_context(open_job(self._served, self._job))
            self._first = await anext(self._events)
        except BaseException:
            await self.aclose()
            raise

    async def events(self) -> AsyncIterator[Event]:
        """Every event, the first (read by `prime`) included."""
        assert self._events is not None and self._first is not None, "prime() first"
        yield self._first
        async for event in self._events:
            yield event

    async def aclose(self) -> None:
        await self._stack.aclose()


class ChatStream(PrimedStream):
    """A streamed answer: `prime()` before sending headers, then iterate `chunks()`."""

    def __init__(self, plan: ChatPlan) -> None:
        super().__init__(plan.served, plan.generation)
        self.plan = plan

    def chunks(self) -> AsyncIterator[dict]:
        plan = self.plan
        shaping = plan.shaping
        opening_data = plan.tool_data if shaping is None or shaping.opening_data else None
        factory = ChunkFactory(
            plan.response_id, plan.created, plan.request.model, tool_data=opening_data
        )
        chunks = self._chunks(factory)
        return chunks if shaping is None else shaping.stream(chunks, plan.n, factory)

    async def _chunks(self, factory: ChunkFactory) -> AsyncIterator[dict]:
        plan = self.plan
        options = plan.request.stream_options
        include_usage = bool(options and options.include_usage)
        yield factory.opening(range(plan.n))
        calls = [CallChunks(factory, i) if plan.output.parse_calls else None for i in range(plan.n)]
        engine_calls = [0] * plan.n  # calls the engine parsed itself (upstreams)
        finished = 0
        async for event in self.events():
            tracker = calls[event.index]
            if isinstance(event, CallEvent):
                if event.id is not None:
                    engine_calls[event.index] += 1
                    yield factory.call_start(event.index, event.call, event.id, event.name or "")
                if event.arguments:
                    yield factory.call_arguments(event.index, event.call, event.arguments)
                continue
            if isinstance(event, TokenEvent):
                tokens = [event.token] if event.token is not None else None
                if tracker is not None:
                    for chunk in tracker.feed(event.text, tokens):
                        yield chunk
                elif event.text or tokens is not None:
                    yield factory.content(event.index, event.text, tokens)
                continue
            reason: str = event.reason
            if tracker is not None:
                for chunk in tracker.finish():
                    yield chunk
                reason = finish_reason(reason, tracker.parser.calls > 0)
            reason = finish_reason(reason, engine_calls[event.index] > 0)
            plan.usage.count(event)
            finished += 1
            last = finished == plan.n
            usage = plan.usage.body() if include_usage and last else None
            yield factory.closing(event.index, reason, usage)

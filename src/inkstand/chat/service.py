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
from typing import Any, Protocol

from inkstand.chat.builtin import Admit, estimate_tokens, plan_built_in
from inkstand.chat.calls import CallChunks, extract_calls, finish_reason
from inkstand.chat.catalog import Catalog, Served, ServedModel, ServedUpstream
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
from inkstand.chat.prompt import Prompt, caller_text_size, render_prompt
from inkstand.chat.shaping import Shaping
from inkstand.chat.toolformat import HermesFormat, tool_format
from inkstand.engine import Finish, GenerationRequest, SamplingParams, TokenEvent
from inkstand.engine.types import CallEvent, Event
from inkstand.errors import BadRequestError, ContextLengthError, UnsupportedFeatureError
from inkstand.schemas.chat import BUILT_IN_TOOL_TYPES, ChatRequest, ImageFragment
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


@dataclass(frozen=True)
class RequestLimits:
    """Per-request caps from the settings; each refusal names its limit."""

    max_messages: int = 1000
    max_n: int = 16
    max_tools: int = 128
    max_stops: int = 16
    max_stop_chars: int = 256
    max_images: int = 16
    max_image_bytes: int = 8 * 1024 * 1024


def over_limit(what: str, limit: str, value: int) -> BadRequestError:
    """The 400 for a request over one of the server's limits, naming it."""
    return BadRequestError(
        f"{what}; this server takes at most {value} (`{limit}`).",
        extras={"limit": limit, "value": value},
    )


class ChatService:
    def __init__(
        self,
        catalog: Catalog,
        limits: RequestLimits = RequestLimits(),
        planner: OutputPlanner | None = None,
        knowledge: Knowledge | None = None,
    ) -> None:
        """`knowledge`: what the `graph` tool retrieves from (none: the tool is a 400)."""
        self.catalog = catalog
        self.limits = limits
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
            logprobs=bool(request.logprobs),
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


def check_built_in_tools(request: ChatRequest) -> None:
    built_in = [t.type for t in request.tools or () if t.type in BUILT_IN_TOOL_TYPES]
    if len(built_in) > 1:
        raise BadRequestError(
            f"A request may use at most one built-in tool; got {', '.join(built_in)}."
        )


def check_stops(stops: tuple[str, ...], limits: RequestLimits) -> None:
    """Stop sequences are matched against every generated token: their count and length
    are capped."""
    if len(stops) > limits.max_stops:
        raise over_limit(f"`stop` has {len(stops)} sequences", "max_stops", limits.max_stops)
    longest = max(map(len, stops), default=0)
    if longest > limits.max_stop_chars:
        raise over_limit(
            f"A `stop` sequence is {longest} characters long",
            "max_stop_chars",
            limits.max_stop_chars,
        )


def check_prompt_size(served: ServedModel, size: int) -> None:
    """400 for a prompt of `size` characters or bytes that cannot fit the context, known
    before it is tokenized: no token stands for more than `max_token_bytes` bytes."""
    info = served.engine.info
    most = info.n_ctx * info.max_token_bytes
    if size > most:
        raise ContextLengthError(
            f"The prompt is {size} bytes long: more than the model's context window of "
            f"{info.n_ctx} tokens can hold (at most {info.max_token_bytes} bytes a token, "
            f"{most} in all). Shorten the conversation."
        )


def tokenize_prompt(served: ServedModel, prompt: Prompt) -> list[int]:
    """The prompt's tokens: control tokens from the template's text only."""
    tokens: list[int] = []
    for i, (text, template_text) in enumerate(prompt.parts):
        tokens += served.engine.tokenize(text, add_special=i == 0, parse_special=template_text)
    return tokens


def check_choices(field: str, n: int, max_n: int, served: ServedModel) -> int:
    """`n` (or `best_of`) within the configured cap and the engine's sequences."""
    if n > max_n:
        raise BadRequestError(
            f"`{field}` is {n}; this server allows at most {max_n} (`max_n`).",
            extras={"limit": "max_n", "value": max_n},
        )
    if n > served.engine.slots:
        raise BadRequestError(
            f"`{field}` is {n}, but this server runs at most {served.engine.slots} sequences "
            "at once (`slots`).",
            extras={"limit": "slots", "value": served.engine.slots},
        )
    return n


def sampling_params(
    served: ServedModel, temperature: float | None, top_p: float | None, **fields
) -> SamplingParams:
    """Writer's defaults for what the request leaves out, and the model's own sampler settings."""
    return SamplingParams(
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=served.spec.top_k,
        min_p=served.spec.min_p,
        repeat_penalty=served.spec.repeat_penalty,
        **fields,
    )


class TokenBudget(Protocol):
    """What `resolve_max_tokens` reads from a chat or a completions request."""

    model: str
    max_tokens: int | None


def upstream_max_tokens(request: TokenBudget, served: ServedUpstream, prompt: int) -> int:
    """`max_tokens` within the model's `max_output_tokens` (400 beyond it); without one, what
    is reserved against the key's limits: what may fit after the estimated prompt."""
    limit = served.spec.max_output_tokens
    if request.max_tokens is not None:
        if request.max_tokens > limit:
            raise BadRequestError(
                f"`max_tokens` is {request.max_tokens}, but `{request.model}` produces at most "
                f"{limit} tokens (`max_output_tokens`).",
                extras={"limit": "max_output_tokens", "value": limit},
            )
        return request.max_tokens
    return max(1, min(limit, served.spec.ctx_size - prompt))


def check_images(request: ChatRequest, limits: RequestLimits) -> None:
    """Images for a vision engine: how many, what kind of address, how large a `data:` URI
    is, all checked before anything is sent upstream."""
    images = [
        f.image_url.url
        for m in request.messages
        if isinstance(m.content, list)
        for f in m.content
        if isinstance(f, ImageFragment)
    ]
    if len(images) > limits.max_images:
        raise over_limit(f"The request has {len(images)} images", "max_images", limits.max_images)
    for url in images:
        if url.startswith("data:"):
            head, _, data = url.partition(",")
            if not head.startswith("data:image/") or not data:
                raise BadRequestError(
                    "An `image_url` data URI must be `data:image/<type>;base64,<data>`."
                )
            size = len(data) * 3 // 4
            if size > limits.max_image_bytes:
                raise over_limit(
                    f"An image is {size} bytes", "max_image_bytes", limits.max_image_bytes
                )
        elif not url.startswith(("https://", "http://")):
            raise BadRequestError(
                "An `image_url` must be an http(s) URL or a `data:image/...` URI."
            )


def reject_unsupported(request: ChatRequest) -> None:
    """400 for valid Writer input this server cannot honour, before any work starts.

    Tools and response formats are checked by `plan_output`."""
    for message in request.messages:
        if isinstance(message.content, list) and any(
            isinstance(f, ImageFragment) for f in message.content
        ):
            raise UnsupportedFeatureError(
                "This server's model takes no images: send `text` content fragments only "
                "(an `image_url` fragment was found)."
            )


def resolve_max_tokens(
    request: TokenBudget, served: ServedModel, prompt_len: int, default: int | None = None
) -> int:
    """`max_tokens` as asked, or as much as fits (at most `default`), within the model's caps."""
    return fit_max_tokens(
        request, served.engine.info.n_ctx, served.spec.max_output_tokens, prompt_len, default
    )


def fit_max_tokens(
    request: TokenBudget, n_ctx: int, limit: int, prompt_len: int, default: int | None = None
) -> int:
    """`max_tokens` as asked or as much as fits in `n_ctx` after the prompt (at most
    `default`), within `limit` (`max_output_tokens`); 400s naming what does not fit."""
    if request.max_tokens is None:
        room = n_ctx - prompt_len
        if room < 1:
            raise ContextLengthError(
                f"The prompt is {prompt_len} tokens, which fills the model's context window of "
                f"{n_ctx} tokens. Shorten the conversation."
            )
        return min(limit, room, default or limit)
    if request.max_tokens > limit:
        raise BadRequestError(
            f"`max_tokens` is {request.max_tokens}, but `{request.model}` produces at most "
            f"{limit} tokens (`max_output_tokens`).",
            extras={"limit": "max_output_tokens", "value": limit},
        )
    if prompt_len + request.max_tokens > n_ctx:
        raise ContextLengthError(
            f"The prompt is {prompt_len} tokens and `max_tokens` is {request.max_tokens}: "
            f"{prompt_len + request.max_tokens} tokens, over the model's context window of "
            f"{n_ctx} tokens. Shorten the conversation or lower `max_tokens`."
        )
    return request.max_tokens

"""Text generation (`/v1/completions`): the chat service's engine path with a raw prompt.

No chat template: the prompt is tokenized as given, as text (control-token text in it stays
text unless the model's `prompt_special_tokens` says otherwise). `best_of` generates that
many choices from one prefill and returns the one with the highest mean token
log-probability; it cannot be combined with streaming (the best is known only at the end).
A stream is Writer's `{"value": ...}` events, the first one empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from inkstand.chat.builtin import estimate_tokens
from inkstand.chat.catalog import Catalog, Served, ServedUpstream
from inkstand.chat.checks import (
    RequestLimits,
    check_choices,
    check_prompt_size,
    check_stops,
    fit_max_tokens,
    resolve_max_tokens,
    sampling_params,
    upstream_max_tokens,
)
from inkstand.chat.service import Job, PrimedStream, Usage, open_job
from inkstand.engine import GenerationRequest, TokenEvent
from inkstand.engine.types import Event, Finish
from inkstand.errors import BadRequestError, UnsupportedFeatureError
from inkstand.schemas.completions import CompletionsRequest
from inkstand.upstream.translate import completion_job

DEFAULT_MAX_TOKENS = 100  # Writer's text generation guide


@dataclass
class CompletionPlan:
    request: CompletionsRequest
    served: Served
    generation: Job
    usage: Usage = field(default_factory=Usage)


@dataclass
class _Choice:
    text: str = ""
    logprob: float = 0.0
    tokens: int = 0

    def score(self) -> float:
        return self.logprob / self.tokens if self.tokens else float("-inf")


class CompletionService:
    def __init__(self, catalog: Catalog, limits: RequestLimits | None = None) -> None:
        self.catalog = catalog
        self.limits = limits or RequestLimits()

    async def plan(
        self, request: CompletionsRequest, *, scope: str = "", choices: int | None = None
    ) -> CompletionPlan:
        """Everything before generation; `scope` is whose prefix cache the request may use.

        `choices`: that many answers, all kept (OpenAI's `n`), instead of Writer's `best_of`."""
        served = self.catalog.resolve(request.model)
        if isinstance(served, ServedUpstream):
            if (choices or 1) > 1:
                raise UnsupportedFeatureError(
                    f"`n` above 1 is not available for `{request.model}`, which an upstream "
                    "engine serves; send one request per choice."
                )
            return await self._plan_upstream(request, served, scope)
        if choices is not None:
            best_of = check_choices("n", choices, self.limits.max_n, served)
        else:
            best_of = check_choices("best_of", request.best_of or 1, self.limits.max_n, served)
        if best_of > 1 and request.stream and choices is None:
            raise BadRequestError(
                "`best_of` above 1 cannot be streamed: the best choice is known only at the end."
            )
        check_stops(request.stops, self.limits)
        check_prompt_size(served, len(request.prompt))
        tokens = tuple(
            await asyncio.to_thread(
                served.engine.tokenize,
                request.prompt,
                parse_special=served.spec.prompt_special_tokens,
            )
        )
        if not tokens:
            raise BadRequestError("`prompt` is empty; send the text to continue.")
        max_tokens = resolve_max_tokens(request, served, len(tokens), DEFAULT_MAX_TOKENS)
        sampling = sampling_params(
            served,
            request.temperature,
            request.top_p,
            seed=request.random_seed,
            logprobs=best_of > 1 and choices is None,
        )
        generation = GenerationRequest(
            tokens, max_tokens, sampling, request.stops, best_of, cache_scope=scope
        )
        return CompletionPlan(request, served, generation, Usage(prompt=len(tokens)))

    async def _plan_upstream(
        self, request: CompletionsRequest, served: ServedUpstream, scope: str
    ) -> CompletionPlan:
        upstream = served.spec.upstream
        assert upstream is not None
        if (request.best_of or 1) > 1:
            raise UnsupportedFeatureError(
                f"`best_of` is not available for `{request.model}`, which an upstream engine "
                "serves; send one request per choice."
            )
        check_stops(request.stops, self.limits)
        if not request.prompt:
            raise BadRequestError("`prompt` is empty; send the text to continue.")
        prompt = estimate_tokens(len(request.prompt))
        max_tokens = upstream_max_tokens(request, served, prompt)
        if request.max_tokens is None:
            max_tokens = min(max_tokens, DEFAULT_MAX_TOKENS)
        job = completion_job(request, model=upstream.model, max_tokens=max_tokens, scope=scope)
        counted = await served.upstream.count_prompt(job)
        if counted is not None:
            prompt = counted
            spec = served.spec
            fitted = fit_max_tokens(
                request, spec.ctx_size, spec.max_output_tokens, counted, DEFAULT_MAX_TOKENS
            )
            job = job.capped(fitted)
        job = dataclasses.replace(job, prompt_tokens=prompt)
        return CompletionPlan(request, served, job, Usage(prompt=prompt))

    async def complete(self, plan: CompletionPlan) -> dict:
        choices = [_Choice() for _ in range(plan.generation.n)]
        async with open_job(plan.served, plan.generation) as events:
            async for event in events:
                _collect(choices[event.index], event, plan.usage)
        best = max(choices, key=_Choice.score) if len(choices) > 1 else choices[0]
        return {"choices": [{"text": best.text, "log_probs": None}], "model": plan.request.model}


def _collect(choice: _Choice, event: Event, usage: Usage) -> None:
    if isinstance(event, TokenEvent):
        choice.text += event.text
        if event.token is not None:
            choice.logprob += event.token.logprob
            choice.tokens += 1
    elif isinstance(event, Finish):
        usage.count(event)


class CompletionStream(PrimedStream):
    """A streamed completion: `prime()` before sending headers, then iterate `values()`."""

    def __init__(self, plan: CompletionPlan) -> None:
        super().__init__(plan.served, plan.generation)
        self.plan = plan

    async def values(self) -> AsyncIterator[dict]:
        yield {"value": ""}
        async for event in self.events():
            if isinstance(event, TokenEvent):
                if event.text:
                    yield {"value": event.text}
            elif isinstance(event, Finish):
                self.plan.usage.count(event)

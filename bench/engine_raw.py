"""Inkstand's engine in this process, no HTTP: the ceiling the HTTP stack is measured against.

The prompt is rendered and tokenized exactly as the chat service does it (the model's own
chat template, `Engine.tokenize`), and the events are consumed the way the service consumes
them: `async with engine.stream(request) as events`, on uvloop as `inkstand serve` runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import uvloop
from stats import Clock, Sample

from inkstand.backends.base import ModelInfo
from inkstand.backends.llama_cpp import LlamaCppBackend
from inkstand.chat.prompt import render_prompt
from inkstand.config import Settings
from inkstand.engine import (
    Engine,
    EngineConfig,
    Finish,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from inkstand.schemas.chat import ChatMessage


class PromptMaker(Protocol):
    """What a prompt needs: the model's template and tokenizer (an `Engine` or a backend)."""

    @property
    def info(self) -> ModelInfo: ...

    def tokenize(self, text: str, *, parse_special: bool = False) -> list[int]: ...


def build_request(engine: PromptMaker, messages: list[dict], max_tokens: int) -> GenerationRequest:
    info = engine.info
    chat = [ChatMessage.model_validate(m) for m in messages]
    prompt = render_prompt(info.chat_template, chat, bos=info.bos_text, eos=info.eos_text)
    tokens = tuple(engine.tokenize(prompt.text, parse_special=True))  # the messages hold none
    return GenerationRequest(tokens, max_tokens, SamplingParams(temperature=0.0))


async def generate(engine: Engine, request: GenerationRequest) -> Sample:
    clock = Clock()
    async with engine.stream(request) as events:
        async for event in events:
            if isinstance(event, TokenEvent) and event.text:
                clock.content(event.text)
            elif isinstance(event, Finish):
                return clock.stop(event.completion_tokens, event.reason)
    raise RuntimeError("the engine stream ended without a Finish event")


@contextmanager
def loaded_engine(
    model_path: str, settings: Settings, *, kv_unified: bool = False
) -> Iterator[Engine]:
    """The model in a started `Engine`, built as `inkstand serve` builds it (runtime.py).

    `kv_unified=True` swaps the per-slot KV streams for one shared buffer; `ctx_size` then
    counts that buffer's cells, not one sequence's.
    """
    backend = LlamaCppBackend(
        model_path,
        n_ctx=settings.ctx_size,
        n_threads=settings.threads,
        n_seq_max=settings.slots,
        kv_unified=kv_unified,
    )
    config = EngineConfig(settings.max_waiting, settings.queue_timeout, settings.step_tokens)
    engine = Engine(backend, name="bench", config=config)
    engine.start()
    try:
        yield engine
    finally:
        engine.close()


def generate_once(engine: Engine, request: GenerationRequest) -> Sample:
    """One timed request on a fresh uvloop (the loop is made before the clock starts)."""
    return uvloop.run(generate(engine, request))

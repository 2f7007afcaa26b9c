"""OpenAI's response and chunk shapes, made from what the services already produce.

Chat: a Writer chat completion or chunk (`chat/chunks.py`) becomes OpenAI's by renaming and
dropping, never by planning or generating anything again: the message keeps `role`,
`content`, `tool_calls` and `refusal` (Writer's `graph_data`, `llm_data` ... go), usage's
`prompt_token_details` is OpenAI's `prompt_tokens_details`, ids get OpenAI's `chatcmpl-`
prefix. In a stream, usage (when `stream_options.include_usage` asks for it) moves from
Writer's closing chunk to a last chunk of its own with no choices, and every other chunk
carries `"usage": null`, as OpenAI sends them.

Completions: OpenAI's `text_completion` objects are built from the engine's events (Writer's
completions shape has nothing to rename from): every choice with its finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from inkstand.chat.chunks import SYSTEM_FINGERPRINT, usage_body
from inkstand.chat.completions import CompletionPlan
from inkstand.chat.service import Usage, open_job
from inkstand.engine import TokenEvent
from inkstand.engine.types import Event, Finish

MESSAGE_KEYS = ("role", "content", "tool_calls", "refusal")
DELTA_KEYS = ("content", "tool_calls", "refusal")


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A whole Writer chat completion as OpenAI's `chat.completion`."""
    return {
        "id": _chat_id(body["id"]),
        "object": "chat.completion",
        "created": body["created"],
        "model": body["model"],
        "choices": [
            {
                "index": c["index"],
                "message": _message(c["message"]),
                "logprobs": c["logprobs"],
                "finish_reason": c["finish_reason"],
            }
            for c in body["choices"]
        ],
        "usage": usage(body["usage"]),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


async def chat_chunks(
    chunks: AsyncIterator[dict[str, Any]], include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """Writer's chunks as OpenAI's `chat.completion.chunk`s, usage last on its own."""
    last_usage = None
    head: dict[str, Any] = {}
    async for chunk in chunks:
        head = {
            "id": _chat_id(chunk["id"]),
            "object": "chat.completion.chunk",
            "created": chunk["created"],
            "model": chunk["model"],
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if chunk.get("usage") is not None:
            last_usage = chunk["usage"]
        out = {**head, "choices": [_chunk_choice(c) for c in chunk["choices"]]}
        if include_usage:
            out["usage"] = None
        yield out
    if include_usage and last_usage is not None:
        yield {**head, "choices": [], "usage": usage(last_usage)}


def usage(body: dict[str, Any]) -> dict[str, Any]:
    """Writer's usage object in OpenAI's spelling."""
    return {
        "prompt_tokens": body["prompt_tokens"],
        "completion_tokens": body["completion_tokens"],
        "total_tokens": body["total_tokens"],
        "prompt_tokens_details": body.get("prompt_token_details"),
        "completion_tokens_details": body.get("completion_tokens_details"),
    }


def _chat_id(response_id: str) -> str:
    return f"chatcmpl-{response_id}"


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {key: message.get(key) for key in MESSAGE_KEYS}


def _chunk_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's delta: the role and empty content first, then only what is new."""
    source = choice["delta"]
    delta = {k: source[k] for k in DELTA_KEYS if source.get(k) is not None}
    if not delta and choice["finish_reason"] is None:
        delta = {"role": "assistant", "content": ""}
    return {
        "index": choice["index"],
        "delta": delta,
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice["finish_reason"],
    }


@dataclass
class TextCompletion:
    """OpenAI's `text_completion` objects for one planned completion."""

    plan: CompletionPlan
    response_id: str
    created: int
    texts: list[str] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.texts = [""] * self.plan.generation.n
        self.reasons = [None] * self.plan.generation.n

    async def whole(self) -> dict[str, Any]:
        async with open_job(self.plan.served, self.plan.generation) as events:
            async for event in events:
                self._collect(event)
        choices = [
            self._choice(i, text, self.reasons[i] or "stop") for i, text in enumerate(self.texts)
        ]
        return self._object(choices) | {"usage": self._usage()}

    async def chunks(
        self, events: AsyncIterator[Event], include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        async for event in events:
            if isinstance(event, TokenEvent):
                if event.text:
                    yield self._chunk([self._choice(event.index, event.text, None)], include_usage)
            elif isinstance(event, Finish):
                self.plan.usage.count(event)
                choice = self._choice(event.index, "", _reason(event))
                yield self._chunk([choice], include_usage)
        if include_usage:
            yield self._object([]) | {"usage": self._usage()}

    def _collect(self, event: Event) -> None:
        if isinstance(event, TokenEvent):
            self.texts[event.index] += event.text
        elif isinstance(event, Finish):
            self.plan.usage.count(event)
            self.reasons[event.index] = _reason(event)

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"cmpl-{self.response_id}",
            "object": "text_completion",
            "created": self.created,
            "model": self.plan.request.model,
            "choices": choices,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> dict[str, Any]:
        out = self._object(choices)
        return out | {"usage": None} if include_usage else out

    def _usage(self) -> dict[str, Any]:
        counted: Usage = self.plan.usage
        return usage(usage_body(counted.prompt, counted.completion, counted.cached))

    @staticmethod
    def _choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}


def _reason(finish: Finish) -> str:
    return "length" if finish.reason == "length" else "stop"

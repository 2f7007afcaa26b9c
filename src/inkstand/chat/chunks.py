"""Writer's response and chunk shapes (spec sections 2 and 3), built as plain dicts.

Dicts rather than pydantic models because a chunk is built per token; the tests check every
shape here against Writer's published OpenAPI schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inkstand.engine import TokenInfo

SYSTEM_FINGERPRINT = "inkstand-v1"


def empty_graph_data() -> dict[str, None]:
    return {"sources": None, "status": None, "subqueries": None}


def logprob_entries(tokens: list[TokenInfo]) -> list[dict[str, Any]]:
    return [{**_logprob(t), "top_logprobs": [_logprob(a) for a in t.top]} for t in tokens]


def _logprob(token: TokenInfo) -> dict[str, Any]:
    return {"token": token.text, "logprob": token.logprob, "bytes": list(token.raw)}


def usage_body(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_token_details": {"cached_tokens": cached},
        "completion_tokens_details": None,
    }


@dataclass
class ChoiceResult:
    """One finished choice of a non-streaming answer."""

    index: int
    text: str = ""
    finish_reason: str = "stop"
    tokens: list[TokenInfo] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # already in wire shape
    tool_data: dict[str, Any] | None = None  # this choice's own (graph references ...)


def tool_call_body(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def completion_body(
    *,
    response_id: str,
    created: int,
    model: str,
    choices: list[ChoiceResult],
    usage: dict,
    tool_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`tool_data`: what a built-in tool adds to every choice's message (`graph_data`,
    `llm_data`, `translation_data`)."""
    return {
        "id": response_id,
        "object": "chat.completion",
        "choices": [_choice(c, tool_data or {}) for c in choices],
        "created": created,
        "model": model,
        "usage": usage,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "service_tier": None,
    }


def _choice(choice: ChoiceResult, tool_data: dict[str, Any]) -> dict[str, Any]:
    logprobs = None
    if choice.tokens is not None:
        logprobs = {"content": logprob_entries(choice.tokens), "refusal": None}
    return {
        "index": choice.index,
        "finish_reason": choice.finish_reason,
        "message": {
            "content": choice.text,
            "role": "assistant",
            "tool_calls": choice.tool_calls or None,
            "graph_data": empty_graph_data(),
            "llm_data": None,
            "image_data": None,
            "translation_data": None,
            "web_search_data": None,
            "refusal": None,
            **tool_data,
            **(choice.tool_data or {}),
        },
        "logprobs": logprobs,
    }


@dataclass
class ChunkFactory:
    """Builds the chunks of one streamed response; every chunk shares id, created, model."""

    response_id: str
    created: int
    model: str
    tool_data: dict[str, Any] | None = None  # a built-in tool's, in the opening chunk only
    _head: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self._head = {
            "id": self.response_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, choices: list[dict[str, Any]], usage: dict | None = None) -> dict[str, Any]:
        return {
            **self._head,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": None,
        }

    def opening(self, indexes: range) -> dict[str, Any]:
        """The first chunk: the assistant role for every choice, in index order."""
        return self._chunk([_opening_choice(i, self.tool_data or {}) for i in indexes])

    def content(self, index: int, text: str, tokens: list[TokenInfo] | None) -> dict[str, Any]:
        logprobs = None
        if tokens is not None:
            logprobs = {"content": logprob_entries(tokens), "refusal": None}
        return self._chunk(
            [
                {
                    "index": index,
                    "finish_reason": None,
                    "delta": {"role": "assistant", "content": text},
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": logprobs,
                }
            ]
        )

    def call_start(self, index: int, call: int, call_id: str, name: str) -> dict[str, Any]:
        """A tool call's first fragment: the only one with its id and name (spec 3.4)."""
        return self._tool_chunk(index, [tool_call_body(call, call_id, name, "")])

    def call_arguments(self, index: int, call: int, text: str) -> dict[str, Any]:
        return self._tool_chunk(index, [{"index": call, "function": {"arguments": text}}])

    def _tool_chunk(self, index: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
        return self._chunk(
            [
                {
                    "index": index,
                    "finish_reason": None,
                    "delta": {"role": "assistant", "content": None, "tool_calls": calls},
                    "message": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                }
            ]
        )

    def closing(self, index: int, finish_reason: str, usage: dict | None) -> dict[str, Any]:
        return self._chunk(
            [
                {
                    "index": index,
                    "finish_reason": finish_reason,
                    "delta": {"role": "assistant", "content": None},
                    "message": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                }
            ],
            usage,
        )


def _opening_choice(index: int, tool_data: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": index,
        "finish_reason": None,
        "delta": {
            "role": "assistant",
            "content": None,
            "tool_calls": None,
            "graph_data": empty_graph_data(),
            "refusal": None,
            **tool_data,
        },
        "message": {"role": "assistant", "content": "", "refusal": None},
        "logprobs": None,
    }

"""Native request and event types that cross the engine seam (never JSON, never wire names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from inkstand.backends.base import SamplingParams

__all__ = [
    "CallEvent",
    "Event",
    "Finish",
    "FinishReason",
    "GenerationRequest",
    "SamplingParams",
    "TokenEvent",
    "TokenInfo",
]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: an already tokenized prompt, how many choices, when to stop."""

    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    n: int = 1  # independent choices; the prompt is computed once and its KV forked
    # What a follow-up prompt puts right after this answer (ChatML: "<|im_end|>\n<|im_start|>
    # user\n"); decoded into the slot's cache ahead of time when the engine is idle.
    turn_tail: tuple[int, ...] = ()
    # Whose prefix cache this request may read and extend (an API key's id): a slot's KV
    # is reused only by requests of the scope that computed it. "" when all share one.
    cache_scope: str = ""


@dataclass(frozen=True)
class TokenInfo:
    """The token just sampled, for callers that asked for log-probabilities."""

    token_id: int
    text: str
    raw: bytes
    logprob: float
    # The most likely tokens at this position, best first (`SamplingParams.top_logprobs`).
    top: tuple[TokenInfo, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """Text released by one step; `text` may be empty while a stop sequence is undecided."""

    text: str
    token: TokenInfo | None = None
    index: int = 0  # which of the request's `n` choices


@dataclass(frozen=True)
class CallEvent:
    """A fragment of a tool call from an engine that parses calls itself (an upstream).

    The first fragment of a call carries its `id` and `name`; later ones only `arguments`
    text. Local engines never send these: their calls are parsed from the text.
    """

    call: int  # which call of the choice, from 0
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    index: int = 0  # which of the request's `n` choices


@dataclass(frozen=True)
class Finish:
    """The last event of each choice; a stream ends after `n` of them."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    index: int = 0


Event = TokenEvent | CallEvent | Finish

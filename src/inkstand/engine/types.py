"""Native request and event types that cross the engine seam (never JSON, never wire names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-6


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate: an already tokenized prompt and when to stop."""

    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenInfo:
    """The token just sampled, for callers that asked for log-probabilities."""

    token_id: int
    text: str
    raw: bytes
    logprob: float


@dataclass(frozen=True)
class TokenEvent:
    """Text released by one step; `text` may be empty while a stop sequence is undecided."""

    text: str
    token: TokenInfo | None = None


@dataclass(frozen=True)
class Finish:
    """The last event of every successful stream."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


Event = TokenEvent | Finish

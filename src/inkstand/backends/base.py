"""The seam between the engine's scheduler and a model runtime.

Only the engine thread calls `begin`, `decode`, `sample`, `logprob` and `end`. The tokenizer
methods are read-only and may be called from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
class BatchEntry:
    """A run of tokens for one sequence, placed at positions `start_pos` onwards."""

    seq_id: int
    tokens: tuple[int, ...] | list[int]
    start_pos: int
    want_logits: bool


@dataclass(frozen=True)
class ModelInfo:
    """What the chat layer needs to know about a loaded model."""

    description: str
    n_ctx: int
    n_ctx_train: int
    chat_template: str | None
    bos_text: str
    eos_text: str


class Backend(Protocol):
    info: ModelInfo
    n_batch: int
    n_seq_max: int

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def begin(self, seq_id: int, sampling: SamplingParams) -> None:
        """Prepare sequence `seq_id` for a new request: empty its KV, build its sampler."""

    def decode(self, batch: list[BatchEntry]) -> list[int]:
        """Run one forward pass; return the logits index of each entry that wanted logits."""
        ...

    def sample(self, seq_id: int, logits_index: int) -> int: ...

    def logprob(self, logits_index: int, token: int) -> float: ...

    def end(self, seq_id: int) -> None:
        """Release sequence `seq_id`'s sampler and KV cells."""

    def close(self) -> None: ...

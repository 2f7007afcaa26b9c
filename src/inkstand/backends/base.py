"""The seam between the engine's scheduler and a model runtime.

Only the engine thread calls `begin`, `fork`, `decode`, `sample`, `logprob`, `truncate` and
`end`. The tokenizer
methods are read-only and may be called from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from inkstand.errors import EngineError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    repeat_penalty: float = 1.0  # 1: off; applies over the last 64 tokens
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0  # with `logprobs`: the most likely tokens listed at each position
    # A GBNF grammar (rule `root`) every sampled token must follow; None: unconstrained.
    grammar: str | None = None
    # Lazy grammar: words; the grammar applies only once the output contains one of them,
    # to the output from that word on. Empty: the grammar applies from the first token.
    grammar_triggers: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-6


@dataclass(frozen=True)
class BatchEntry:
    """A run of tokens for one sequence, placed at positions `start_pos` onwards.

    With `want_logits`, the last `outputs` tokens get logits (a speculative step verifies a
    draft: the logits after every drafted token); `decode` returns the index of the first of
    them, and the others follow it, one index per token.
    """

    seq_id: int
    tokens: tuple[int, ...] | list[int]
    start_pos: int
    want_logits: bool
    outputs: int = 1


@dataclass(frozen=True)
class ModelInfo:
    """What the chat layer needs to know about a loaded model."""

    description: str
    n_ctx: int  # per sequence
    n_ctx_train: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    # The text of every control token (`<|im_start|>` ...): typed by a user, it stays text.
    special_texts: tuple[str, ...] = ()
    # The most bytes of text one token stands for: a prompt of more than n_ctx times this
    # many bytes cannot fit the context, which is known before tokenizing it.
    max_token_bytes: int = 1


class KVFullError(EngineError):
    """The KV cache has no room for the batch; the scheduler sheds load and retries."""


class BackendBrokenError(EngineError):
    """The backend cannot run any more batches (its context is lost); the engine stops
    serving its model, which then reports not ready."""


class Backend(Protocol):
    info: ModelInfo
    n_batch: int
    n_seq_max: int

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        """Token ids of `text`; `add_special` adds the BOS token where the model wants one,
        `parse_special` reads control-token text (`<|im_end|>`) as the control token (only
        for text a chat template wrote). May run on any thread; releases the GIL."""
        ...

    def token_bytes(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def grammar_compiles(self, grammar: str) -> bool:
        """Whether the backend accepts `grammar`; keeps it compiled for the sequences that
        use it next (any thread; releases the GIL while it parses)."""
        ...

    def begin(self, seq_id: int, sampling: SamplingParams, keep: int) -> None:
        """Prepare slot `seq_id` for a new request: keep the first `keep` tokens of its KV
        (a cached prefix), drop the rest, and build its sampler."""

    def fork(self, src: int, dst: int, sampling: SamplingParams) -> None:
        """Copy slot `src`'s KV into slot `dst` (replacing it) and build `dst`'s sampler."""

    def decode(self, batch: list[BatchEntry]) -> list[int]:
        """Run one forward pass; return the logits index of each entry that wanted logits
        (of its first output: the entry's others follow it).

        Raises `KVFullError` when the KV cache has no room for the batch, `BackendBrokenError`
        when no batch can run any more, `EngineError` for any other failure."""
        ...

    def sample(self, seq_id: int, logits_index: int) -> int: ...

    def logprob(self, logits_index: int, token: int) -> float: ...

    def top_logprobs(self, logits_index: int, k: int) -> list[tuple[int, float]]:
        """The `k` most likely tokens and their log-probabilities, best first."""
        ...

    def truncate(self, seq_id: int, keep: int) -> None:
        """Drop slot `seq_id`'s KV from position `keep` on (a rejected draft's tokens)."""

    def end(self, seq_id: int) -> None:
        """Release slot `seq_id`'s sampler; its KV stays, for reuse by a later request."""

    @property
    def kv_bytes(self) -> int:
        """The KV cache's size in bytes, every slot's cells (`/metrics`, the load log)."""
        ...

    def close(self) -> None: ...

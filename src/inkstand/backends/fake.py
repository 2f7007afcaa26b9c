"""A scripted backend for tests of the engine and everything above it.

Tokens are bytes (ids 0-255) plus an end-of-generation token (256). Every sequence answers
with `reply` and then ends, unless `max_tokens` cuts it short. `fail_decodes` makes the next
that many `decode` calls fail, to exercise the engine's recovery.
"""

from __future__ import annotations

from inkstand.backends.base import BatchEntry, ModelInfo, SamplingParams
from inkstand.errors import EngineError

EOG = 256


class FakeBackend:
    def __init__(
        self,
        reply: str = "Hello from the fake model.",
        *,
        n_ctx: int = 512,
        n_seq_max: int = 1,
        n_batch: int = 64,
    ) -> None:
        self.reply = reply.encode("utf-8")
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.info = ModelInfo("fake", n_ctx, n_ctx, None, "", "")
        self.fail_decodes = 0
        self.decode_calls: list[list[BatchEntry]] = []
        self.live: dict[int, int] = {}  # seq_id -> reply bytes already sampled
        self.ended: list[int] = []

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token: int) -> bytes:
        return b"" if token == EOG else bytes([token])

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def begin(self, seq_id: int, sampling: SamplingParams) -> None:
        self.live[seq_id] = 0

    def decode(self, batch: list[BatchEntry]) -> list[int]:
        self.decode_calls.append(batch)
        if self.fail_decodes:
            self.fail_decodes -= 1
            raise EngineError("scripted decode failure")
        at, out = 0, []
        for entry in batch:
            at += len(entry.tokens)
            if entry.want_logits:
                out.append(at - 1)
        return out

    def sample(self, seq_id: int, logits_index: int) -> int:
        done = self.live[seq_id]
        self.live[seq_id] = done + 1
        return self.reply[done] if done < len(self.reply) else EOG

    def logprob(self, logits_index: int, token: int) -> float:
        return -0.5

    def end(self, seq_id: int) -> None:
        if self.live.pop(seq_id, None) is not None:
            self.ended.append(seq_id)

    def close(self) -> None:
        self.live.clear()

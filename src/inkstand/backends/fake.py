"""A scripted backend for tests of the engine and everything above it.

Tokens are bytes (ids 0-255) plus an end-of-generation token (256). Every sequence answers
with `reply` and then ends, unless `max_tokens` cuts it short. The fake keeps each slot's KV
as a token list and checks every batch against it (positions must continue the slot's
cache), so the scheduler's prefix reuse and forks are verified, not assumed. `fail_decodes`
makes the next that many `decode` calls fail; `kv_full_decodes` makes them report a full KV.
Grammars are recorded (in `sampling`), not enforced: the reply is the script. The fake
accepts a grammar when it defines `root`, unless `refuse_grammars` is set.

With `chain` set, the fake is a small random model instead: the next token depends on the
token at the logits' position only (`chain[token]` lists the possible next tokens and their
probabilities), drawn with each slot's own seeded generator. Speculative steps then get
drafts that are sometimes right and sometimes wrong, and the output's distribution is known.
"""

from __future__ import annotations

import random
import re

from inkstand.backends.base import BatchEntry, KVFullError, ModelInfo, SamplingParams
from inkstand.errors import EngineError

EOG = 256
SPECIALS = {"<|im_start|>": 257, "<|im_end|>": 258}  # control tokens, as in ChatML models


class FakeBackend:
    kv_bytes = 0  # its "KV" is a list of token ids per slot: no tensors to count

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
        self.n_vocab = EOG + 1 + len(SPECIALS)
        self.info = ModelInfo(
            "fake", n_ctx, n_ctx, None, "", "", tuple(SPECIALS), max(map(len, SPECIALS))
        )
        self.fail_decodes = 0
        self.kv_full_decodes = 0
        self.decode_calls: list[list[BatchEntry]] = []
        self.kv: dict[int, list[int]] = {i: [] for i in range(n_seq_max)}
        self.sampled: dict[int, int] = {}  # seq_id -> reply bytes sampled so far
        self.sampling: dict[int, SamplingParams] = {}  # seq_id -> what its request asked for
        self.ended: list[int] = []
        self.refuse_grammars = False
        self.chain: dict[int, list[tuple[int, float]]] | None = None
        self._rows: dict[int, int] = {}  # logits index -> the token at it, in the last decode
        self.row_positions: dict[int, int] = {}  # logits index -> that token's position
        self._rngs: dict[int, random.Random] = {}

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        if not parse_special:
            return list(text.encode("utf-8"))
        tokens: list[int] = []
        for part in re.split("(" + "|".join(map(re.escape, SPECIALS)) + ")", text):
            tokens.extend([SPECIALS[part]] if part in SPECIALS else part.encode("utf-8"))
        return tokens

    def text(self, tokens: list[int]) -> str:
        """Tokens back to text, control tokens included (what a prompt said)."""
        names = {token: text.encode() for text, token in SPECIALS.items()}
        data = b"".join(names.get(t) or bytes([t]) for t in tokens if t != EOG)
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < EOG else b""

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def grammar_compiles(self, grammar: str) -> bool:
        return not self.refuse_grammars and "root ::=" in grammar

    def begin(self, seq_id: int, sampling: SamplingParams, keep: int) -> None:
        assert seq_id not in self.sampled, f"slot {seq_id} began twice"
        assert keep <= len(self.kv[seq_id])
        del self.kv[seq_id][keep:]
        self.sampled[seq_id] = 0
        self.sampling[seq_id] = sampling
        self._rngs[seq_id] = random.Random(sampling.seed)

    def fork(self, src: int, dst: int, sampling: SamplingParams) -> None:
        self.kv[dst] = list(self.kv[src])
        self.sampled[dst] = self.sampled[src]
        self.sampling[dst] = sampling
        self._rngs[dst] = random.Random(sampling.seed)

    def decode(self, batch: list[BatchEntry]) -> list[int]:
        self.decode_calls.append(batch)
        if self.fail_decodes:
            self.fail_decodes -= 1
            raise EngineError("scripted decode failure")
        if self.kv_full_decodes:
            self.kv_full_decodes -= 1
            raise KVFullError("scripted full KV cache")
        at, out = 0, []
        self._rows, self.row_positions = {}, {}
        for entry in batch:
            cache = self.kv[entry.seq_id]
            assert entry.start_pos == len(cache), (entry.start_pos, len(cache))
            assert 1 <= entry.outputs <= len(entry.tokens)
            cache.extend(entry.tokens)
            assert len(cache) <= self.info.n_ctx
            at += len(entry.tokens)
            if entry.want_logits:
                out.append(at - entry.outputs)
                for i in range(entry.outputs):
                    row = len(entry.tokens) - entry.outputs + i
                    self._rows[at - entry.outputs + i] = entry.tokens[row]
                    self.row_positions[at - entry.outputs + i] = entry.start_pos + row
        return out

    def truncate(self, seq_id: int, keep: int) -> None:
        assert keep <= len(self.kv[seq_id])
        del self.kv[seq_id][keep:]

    def sample(self, seq_id: int, logits_index: int) -> int:
        assert logits_index in self._rows, f"no logits at {logits_index}"
        done = self.sampled[seq_id]
        self.sampled[seq_id] = done + 1
        if self.chain is not None:
            tokens, weights = zip(*self.chain[self._rows[logits_index]], strict=True)
            return self._rngs[seq_id].choices(tokens, weights)[0]
        return self.reply[done] if done < len(self.reply) else EOG

    def logprob(self, logits_index: int, token: int) -> float:
        return -0.5

    def top_logprobs(self, logits_index: int, k: int) -> list[tuple[int, float]]:
        """Scripted alternatives: the bytes of "abc..." with falling log-probabilities."""
        return [(ord("a") + i, -0.5 - 0.25 * i) for i in range(min(k, 26))]

    def end(self, seq_id: int) -> None:
        if self.sampled.pop(seq_id, None) is not None:
            self.ended.append(seq_id)

    def close(self) -> None:
        self.sampled.clear()

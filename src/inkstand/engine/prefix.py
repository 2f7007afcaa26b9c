"""The prefix cache and slot choice: which slot a new sequence runs in, and what it reuses.

Every slot keeps the KV of the last sequence that ran in it (prompt and generated tokens)
after that request ends. A new request weighs each free slot by the tokens it would reuse
there against what running there costs the decode steps to come:

- With one KV stream per slot, llama.cpp decodes a batch as one ubatch per *run* of
  consecutive sequence ids (`split_equal(sequential=true)`); a batch over slots {0, 1, 2, 3}
  is one graph computation, over {0, 4, 8, 12} four, nearly four times the time
  (`bench/batch_order.py`). So a slot next to running ones is worth more than an isolated one,
  and a slot that bridges two runs more still.
- A cached prefix saves its prefill once; a new run costs every step while it lasts. A run is
  priced at `RUN_COST` prompt tokens, so only a long shared history (a conversation's earlier
  turns) outweighs it, never the chat template's common head.

A slot's KV belongs to the cache scope (an API key) of the request that computed it: a
request of another scope reuses none of it, so neither its `cached_tokens` nor its speed
tells one tenant anything about another's prompts.

Ties go to the least recently used slot, which evicts the coldest cache. At most a few dozen
slots are compared token by token, in C-speed slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

RUN_COST = 256  # prompt tokens a sequence must reuse to be worth one more ubatch per step


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix, found by halving (slice compares run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class SlotCache:
    def __init__(self, n_slots: int) -> None:
        self.tokens: list[list[int]] = [[] for _ in range(n_slots)]
        self.scopes: list[str] = [""] * n_slots  # whose KV each slot holds
        self._last_used = [0] * n_slots
        self._clock = 0

    def best(self, free: Iterable[int], prompt: Sequence[int], scope: str = "") -> tuple[int, int]:
        """The free slot to run `prompt` in, and how many of its tokens are already cached
        there for `scope`."""
        prompt = list(prompt)  # slices of a list and a tuple never compare equal
        free = set(free)
        best: tuple[int, int, int] | None = None  # (value, -last used, -slot)
        shared_at: dict[int, int] = {}
        for slot in free:
            mine = self.scopes[slot] == scope
            shared_at[slot] = common_prefix(self.tokens[slot], prompt) if mine else 0
            value = shared_at[slot] - RUN_COST * self._new_runs(slot, free)
            key = (value, -self._last_used[slot], -slot)
            if best is None or key > best:
                best = key
        if best is None:
            raise ValueError("no free slot")
        return -best[2], shared_at[-best[2]]

    def _new_runs(self, slot: int, free: set[int]) -> int:
        """How the number of runs of busy slots changes if `slot` becomes busy: -1, 0 or 1."""
        busy_neighbours = sum(
            1 for n in (slot - 1, slot + 1) if 0 <= n < len(self.tokens) and n not in free
        )
        return 1 - busy_neighbours

    def use(self, slot: int, keep: int, scope: str = "") -> None:
        """`slot` starts a new sequence of `scope` keeping its first `keep` cached tokens."""
        assert keep == 0 or self.scopes[slot] == scope, "KV reused across cache scopes"
        self.scopes[slot] = scope
        self._clock += 1
        self._last_used[slot] = self._clock
        del self.tokens[slot][keep:]

    def extend(self, slot: int, tokens: Iterable[int]) -> None:
        self.tokens[slot].extend(tokens)

    def copy(self, src: int, dst: int) -> None:
        self.tokens[dst] = list(self.tokens[src])
        self.scopes[dst] = self.scopes[src]

    def forget(self, slot: int) -> None:
        self.tokens[slot] = []

"""The prefix cache: what each slot's KV holds, so a new prompt reuses the longest match.

Every slot keeps the KV of the last sequence that ran in it (prompt and generated tokens)
after that request ends. A new request takes the free slot whose cached tokens share the
longest prefix with its prompt and computes only the rest; with no match it takes the least
recently used free slot, evicting what that slot held. With one KV stream per slot this is
the whole lookup: at most a few dozen slots are compared token by token, in C-speed slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
        self._last_used = [0] * n_slots
        self._clock = 0

    def best(self, free: Iterable[int], prompt: Sequence[int]) -> tuple[int, int]:
        """The free slot to run `prompt` in, and how many of its tokens are already cached."""
        prompt = list(prompt)  # slices of a list and a tuple never compare equal
        best_slot, best_len = -1, -1
        for slot in free:
            shared = common_prefix(self.tokens[slot], prompt)
            if shared > best_len or (
                shared == best_len and self._last_used[slot] < self._last_used[best_slot]
            ):
                best_slot, best_len = slot, shared
        return best_slot, max(best_len, 0)

    def least_recent(self, free: Iterable[int]) -> int:
        return min(free, key=self._last_used.__getitem__)

    def use(self, slot: int, keep: int) -> None:
        """`slot` starts a new sequence keeping its first `keep` cached tokens."""
        self._clock += 1
        self._last_used[slot] = self._clock
        del self.tokens[slot][keep:]

    def extend(self, slot: int, tokens: Iterable[int]) -> None:
        self.tokens[slot].extend(tokens)

    def copy(self, src: int, dst: int) -> None:
        self.tokens[dst] = list(self.tokens[src])

    def forget(self, slot: int) -> None:
        self.tokens[slot] = []

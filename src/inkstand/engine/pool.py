"""Earlier answers, kept per cache scope, for speculative decoding to draft from.

A sequence's own prompt lookup (speculation.py) only sees its prompt and what it has
written so far. A request asked again (a retried call, a benchmark's repeated round, a
template filled with the same document) writes what an earlier one wrote: the pool keeps
each finished answer, with the last `TAIL` tokens of its prompt so that the answer's start
is found too, and proposes what followed the same n-gram there.

Tenant isolation: a pool belongs to one cache scope (GenerationRequest.cache_scope, one
per API key unless shared). Speculation is lossless, but how fast an answer comes would
tell a tenant whether another one had been given the same text, so a scope never drafts
from another scope's answers.

Memory: each scope keeps at most `SCOPE_TOKENS` tokens in two generations; when the newer
one reaches half of that, the older one is dropped. Each token costs 4 bytes in an array
and one index entry (the n-gram's hash, the position, the dict slot) per n-gram size in
`POOL_SIZES`: measured with tracemalloc, 188 bytes a token when every n-gram differs, so
a full scope takes about 6 MB, and `SCOPES` scopes at most (the least recently used dropped
first) about 50 MB in all (tests/unit/test_speculation.py holds a full scope under 8 MB).
"""

from __future__ import annotations

import array
import collections
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

POOL_SIZES = (12, 6)  # n-grams looked up in the pool, the longest first; short ones guess
SCOPE_TOKENS = 32_768  # most tokens one scope keeps
SCOPES = 8  # most scopes kept
MATCH_CAP = 64  # a match is measured back this many tokens at most
# Prompt tokens kept before each answer: a request asked again then matches at its first
# token as far back as a match is measured, and is trusted as a long match from the start.
TAIL = MATCH_CAP


def matched_length(source: Sequence[int], end: int, history: Sequence[int]) -> int:
    """How many tokens before `source[end]` equal the last ones of `history` (at most
    `MATCH_CAP`): the longer, the likelier `source[end:]` is what comes next."""
    length = 0
    limit = min(MATCH_CAP, end, len(history))
    while length < limit and source[end - 1 - length] == history[-1 - length]:
        length += 1
    return length


class _Generation:
    """Answers added one after another, and for each n-gram the position that followed it
    in the latest answer holding it (keyed by the n-gram's hash: a collision is caught by
    `matched_length`).

    Within one answer the first occurrence counts: an answer that ended up looping holds
    its loop's n-grams many times, and only the first is followed by more than a few
    tokens of that answer."""

    def __init__(self) -> None:
        self.tokens = array.array("i")
        self.after: dict[int, int] = {}

    def add(self, tokens: Sequence[int], sizes: Sequence[int]) -> None:
        base = len(self.tokens)
        self.tokens.extend(tokens)
        history = self.tokens
        first: dict[int, int] = {}
        for end in range(base + 1, len(history)):
            for n in sizes:
                if end - base >= n:
                    first.setdefault(hash(tuple(history[end - n : end])), end)
        self.after.update(first)


class NgramPool:
    """One scope's earlier answers."""

    def __init__(self, capacity: int = SCOPE_TOKENS, sizes: Sequence[int] = POOL_SIZES) -> None:
        self.capacity = capacity
        self.sizes = tuple(sorted(sizes, reverse=True))
        self.newer = _Generation()
        self.older = _Generation()

    def __len__(self) -> int:
        return len(self.newer.tokens) + len(self.older.tokens)

    def add(self, tokens: Sequence[int]) -> None:
        """Keep one finished sequence's tokens (its prompt's tail and its answer)."""
        half = self.capacity // 2
        tokens = tokens[-half:]
        if len(self.newer.tokens) + len(tokens) > half:
            self.older, self.newer = self.newer, _Generation()
        self.newer.add(tokens, self.sizes)

    def draft(self, history: Sequence[int], limit: int) -> tuple[tuple[int, ...], int, int]:
        """Up to `limit` tokens that followed the longest n-gram `history` ends with, in
        the newest answer holding it; with that n-gram's length and how far back the
        match goes (`matched_length`). ((), 0, 0) when no answer holds one."""
        for n in self.sizes:
            if len(history) < n:
                continue
            key = hash(tuple(history[-n:]))
            for generation in (self.newer, self.older):
                end = generation.after.get(key)
                if end is None:
                    continue
                length = matched_length(generation.tokens, end, history)
                if length >= n:
                    return tuple(generation.tokens[end : end + limit]), n, length
        return (), 0, 0


class Scoped(Generic[T]):
    """One `T` per cache scope, made by `factory` on first use; past `limit` scopes the least
    recently used is dropped (the answer pools here, a scope's acceptance in speculation.py)."""

    def __init__(self, factory: Callable[[], T], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self._items: collections.OrderedDict[str, T] = collections.OrderedDict()

    def of(self, scope: str) -> T:
        """The scope's `T`, made if it has none."""
        item = self.get(scope)
        if item is None:
            item = self._items[scope] = self.factory()
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return item

    def get(self, scope: str) -> T | None:
        item = self._items.get(scope)
        if item is not None:
            self._items.move_to_end(scope)
        return item


class ScopedPools(Scoped[NgramPool]):
    """A pool per cache scope, the least recently used dropped past `scopes`."""

    def __init__(self, scopes: int = SCOPES, capacity: int = SCOPE_TOKENS) -> None:
        super().__init__(lambda: NgramPool(capacity), scopes)

    def add(self, scope: str, prompt: Sequence[int], answer: Sequence[int]) -> None:
        """Keep a finished answer for later requests of `scope`."""
        self.of(scope).add([*prompt[-TAIL:], *answer])

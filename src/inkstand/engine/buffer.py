"""A request's events between the engine and its reader, held in bounded memory.

The engine never waits for a reader: it hands every step's events over (`Outbox`) whether
or not the last ones were read. A reader that falls behind (its client reads slowly or not
at all: the HTTP write waits, so the chunk generator is not iterated) would otherwise make
its queue grow by one event per token until the answer ends. So past `limit` unread events,
text is coalesced instead of queued: each choice's further text joins one pending piece,
handed out as a single `TokenEvent` once the reader catches up. The reader gets the same
text in fewer, larger events, and the queue holds at most `limit` events plus one piece per
choice. Events that cannot be merged (a `Finish`, an error, a token carrying its log
probability, an upstream `CallEvent`) are still queued in order; a stalled reader is cut by
the HTTP layer after `stream_stall_timeout` (api/protocol.py), which ends the request.

Runs on the event loop only (`put_nowait` from the outbox's hand-off, `get` by the reader).
"""

from __future__ import annotations

import asyncio
from collections import deque

from inkstand.engine.types import Event, TokenEvent
from inkstand.errors import InkstandError

Item = Event | InkstandError

LIMIT = 256  # unread events before text is coalesced


class EventBuffer(asyncio.Queue[Item]):
    """An unbounded-looking queue whose unread events stay within `limit` (plus one text
    piece per choice); order within each choice is kept."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        super().__init__()

    def _init(self, maxsize: int) -> None:
        self._queue: deque[Item] = deque()
        self._pending: dict[int, list[str]] = {}  # choice -> text held back, oldest first

    def _put(self, item: Item) -> None:
        if isinstance(item, TokenEvent) and item.token is None:
            held = self._pending.get(item.index)
            if held is not None:
                held.append(item.text)
                return
            if len(self._queue) >= self.limit:
                self._pending[item.index] = [item.text]
                return
        elif self._pending:
            # Whatever comes after a choice's held text must come after it: release it first.
            index = getattr(item, "index", None)
            self._release(None if isinstance(item, InkstandError) else index)
        self._queue.append(item)

    def _get(self) -> Item:
        item = self._queue.popleft()
        if self._pending and len(self._queue) < self.limit:
            self._release(None)
        return item

    def _release(self, index: int | None) -> None:
        """Queue the held text of choice `index` (None: of every choice) as one event each."""
        chosen = list(self._pending) if index is None else [index]
        for choice in chosen:
            held = self._pending.pop(choice, None)
            if held is not None:
                self._queue.append(TokenEvent("".join(held), None, choice))

    def held(self) -> int:
        """Text pieces merged into pending events (for tests)."""
        return sum(len(parts) for parts in self._pending.values())

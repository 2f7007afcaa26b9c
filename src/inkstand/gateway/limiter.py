"""Per-key rate limits over a sliding minute: requests per minute and tokens per minute.

    ticket = limiter.admit(key_id, rpm)                  # or RateLimitError (429)
    hold = limiter.reserve(key_id, tpm, prompt + max_tokens)
    ...                                                  # generate
    limiter.settle(hold, prompt + completion)            # the answer's real size

Each key keeps a log of what it spent in the last `window` seconds (a request, a number of
tokens), so the limit is exact: a request passes only if the window's total plus its own
amount stays within the limit, checked and recorded under one lock. A refusal says when the
oldest entries leave the window enough for it to pass (`retry_after`, at most the window).
Token reservations stay at their admission time; settling changes their amount in place.
One server process holds the state; it starts empty on restart.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inkstand.errors import RateLimitError, RequestOverLimitError

WINDOW = 60.0


@dataclass(eq=False)
class Entry:
    at: float
    amount: int
    live: bool = True  # False once it left the window


@dataclass
class Window:
    """What one key spent on one limit in the last `span` seconds."""

    span: float
    entries: deque[Entry] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        while self.entries and self.entries[0].at <= now - self.span:
            gone = self.entries.popleft()
            gone.live = False
            self.total -= gone.amount

    def wait(self, now: float, amount: int, limit: int) -> float:
        """Seconds until `amount` more fits under `limit` (0: it fits now)."""
        excess = self.total + amount - limit
        if excess <= 0:
            return 0.0
        for entry in self.entries:
            excess -= entry.amount
            if excess <= 0:
                return max(0.0, entry.at + self.span - now)
        return self.span

    def add(self, now: float, amount: int) -> Entry:
        entry = Entry(now, amount)
        self.entries.append(entry)
        self.total += amount
        return entry


@dataclass(frozen=True, eq=False)
class Hold:
    """An admitted request's share of a window; settle or release it when the answer ends."""

    window: Window
    entry: Entry


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, span: float = WINDOW):
        self._clock = clock
        self._span = span
        self._lock = threading.Lock()
        self._requests: dict[str, Window] = {}
        self._tokens: dict[str, Window] = {}

    def admit(self, key_id: str, rpm: int) -> Hold | None:
        """Count one request against `rpm` (0: no limit) or raise `RateLimitError`."""
        if rpm <= 0:
            return None
        return self._take(self._requests, key_id, rpm, 1, "requests")

    def reserve(self, key_id: str, tpm: int, tokens: int) -> Hold | None:
        """Reserve `tokens` against `tpm` (0: no limit) or raise `RateLimitError`."""
        if tpm <= 0:
            return None
        if tokens > tpm:
            raise RequestOverLimitError(
                f"This request may use {tokens} tokens (prompt plus `max_tokens`), more than "
                f"this key's limit of {tpm} tokens per minute. Lower `max_tokens` or shorten "
                "the prompt.",
                extras={"limit": "tpm", "value": tpm, "tokens": tokens},
            )
        return self._take(self._tokens, key_id, tpm, tokens, "tokens")

    def settle(self, hold: Hold | None, amount: int) -> None:
        """Replace a reservation by what the request really used (if still in the window)."""
        if hold is None:
            return
        with self._lock:
            if hold.entry.live:
                hold.window.total += amount - hold.entry.amount
                hold.entry.amount = amount

    def release(self, hold: Hold | None) -> None:
        """Give back an admission that did not turn into work."""
        self.settle(hold, 0)

    def _take(
        self, windows: dict[str, Window], key_id: str, limit: int, amount: int, unit: str
    ) -> Hold:
        with self._lock:
            now = self._clock()
            window = windows.get(key_id)
            if window is None:
                window = windows[key_id] = Window(self._span)
            window.prune(now)
            wait = window.wait(now, amount, limit)
            if wait <= 0:
                return Hold(window, window.add(now, amount))
        retry = min(self._span, max(1, math.ceil(wait)))
        raise RateLimitError(
            f"Rate limit reached: this key may use {limit} {unit} per minute. Retry in {retry} s.",
            retry_after=retry,
            extras={"limit": "rpm" if unit == "requests" else "tpm", "value": limit},
        )

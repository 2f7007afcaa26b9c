"""The wait line: requests that have no slots yet, in arrival order, and who goes in next.

A request takes `n` slots (its choices) at once. Requests are started in arrival order, each
as soon as enough slots are free, and one that needs more slots than are free is passed over
by smaller ones behind it: a request for 16 choices does not stop a one-choice chat from
starting next to the sequences already running (no head-of-line blocking). So that it is not
starved in turn, a request that has waited `patience` seconds is passed over no more: from
then on the slots that free up are kept for it until it fits. Every request's wait is timed
from its arrival in the engine, however often it was passed over; after `queue_timeout` it
is refused (503 with `Retry-After`).

Engine thread only, like the scheduler that owns it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Waiting(Protocol):
    """What the wait line needs to know of a request (the scheduler's `Job`)."""

    enqueued_at: float
    cancelled: bool

    @property
    def slots(self) -> int: ...


J = TypeVar("J", bound=Waiting)


class WaitLine(Generic[J]):
    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.jobs: deque[J] = deque()  # arrival order

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[J]:
        return iter(self.jobs)

    def add(self, job: J) -> None:
        self.jobs.append(job)

    def clear(self) -> list[J]:
        jobs = list(self.jobs)
        self.jobs.clear()
        return jobs

    def drop_cancelled(self) -> list[J]:
        """Take out the requests whose clients left; they need no slot to go."""
        gone = [job for job in self.jobs if job.cancelled]
        if gone:
            self.jobs = deque(job for job in self.jobs if not job.cancelled)
        return gone

    def expire(self, now: float, limit: float) -> list[J]:
        """Take out the requests that have waited over `limit` seconds since they arrived."""
        old = [job for job in self.jobs if now - job.enqueued_at > limit]
        if old:
            self.jobs = deque(job for job in self.jobs if now - job.enqueued_at <= limit)
        return old

    def next(self, free: int, now: float) -> J | None:
        """Take out the request to start in `free` slots, or None if none may start."""
        for job in self.jobs:
            if job.slots <= free:
                self.jobs.remove(job)
                return job
            if now - job.enqueued_at >= self.patience:
                return None  # its turn: nobody passes it any more
        return None

"""The engine's async face: submit a request, iterate its events, cancel by leaving.

    async with engine.stream(request) as events:
        async for event in events:   # TokenEvent ..., one Finish per choice
            ...

Leaving the block early cancels the request; the engine thread frees its slots at the start
of its next step. The events wait for the reader in an `EventBuffer`, whose memory stays
bounded however far behind the reader falls (the engine never waits for it). A full wait
line refuses the request at once with `OverloadedError`, and so does an engine that gave up
after failing (`Engine.healthy` is then false).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from inkstand.backends.base import Backend, ModelInfo
from inkstand.engine.buffer import EventBuffer
from inkstand.engine.drafter import DraftModel
from inkstand.engine.observer import EngineObserver, NullObserver
from inkstand.engine.scheduler import DRAIN, STOP, Job, Scheduler, SchedulerConfig, model_failed
from inkstand.engine.speculation import SpeculateMode, Speculator
from inkstand.engine.stepcost import StepCost
from inkstand.engine.types import Event, Finish, GenerationRequest
from inkstand.errors import InkstandError, OverloadedError

CALIBRATION_TIMEOUT = 60.0  # seconds `start` waits for the engine thread's calibration


@dataclass(frozen=True)
class EngineConfig:
    max_waiting: int = 64  # requests waiting for a slot before new ones get a 503
    queue_timeout: float = 30.0
    step_tokens: int = 512
    aging: float | None = None  # see SchedulerConfig
    # Speculative decoding (speculation.py): "ngram" drafts by prompt lookup under the
    # adaptive planner; "auto" too, and where lookup finds nothing, by the draft model if
    # there is one (drafter.py), when the planner finds it worth its cost; "draft" always
    # drafts with the draft model, as much as its acceptance says; "off" never drafts (the
    # server's own default is "auto", see config.py). `spec_max_tokens`: most drafted
    # tokens per sequence and step.
    speculate: SpeculateMode = "off"
    spec_max_tokens: int = 64


def speculator(config: EngineConfig, cost: StepCost | None) -> Speculator | None:
    """The engine's speculation planner, or None when speculation is off."""
    if config.speculate == "off" or config.spec_max_tokens <= 0:
        return None
    return Speculator(cost or StepCost(), config.spec_max_tokens, config.speculate)


class EngineStream:
    """The events of one request, as an async iterator; raises the engine's errors."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._open = job.request.n
        self.finished = False

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> Event:
        if self.finished:
            raise StopAsyncIteration
        event = await self._job.events.get()
        if isinstance(event, InkstandError):
            self.finished = True
            raise event
        if isinstance(event, Finish):
            self._open -= 1
            self.finished = self._open == 0
        return event


class Engine:
    """Owns one backend on one thread; thread-safe entry points only."""

    def __init__(
        self,
        backend: Backend,
        *,
        name: str = "engine",
        config: EngineConfig = EngineConfig(),
        observer: EngineObserver | None = None,
        cost: StepCost | None = None,
        draft: Backend | None = None,
    ) -> None:
        """`cost`: what decode steps cost, for the speculation planner (tests give a known
        one); None: timed on the backend when the engine starts. `draft`: a draft model's
        backend (same vocabulary, one slot per slot of `backend`), owned by the engine."""
        self.backend = backend
        self.name = name
        self.drafter = DraftModel(draft) if draft is not None else None
        self.config = config
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._scheduler = Scheduler(
            backend,
            self._inbox,
            SchedulerConfig(config.queue_timeout, config.step_tokens, config.aging),
            observer or NullObserver(),
            speculator(config, cost),
            self.drafter,
        )
        self._thread = threading.Thread(target=self._scheduler.run, name=f"inkstand-{name}")
        self._thread.daemon = True
        self.draining = False

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @property
    def slots(self) -> int:
        return self.backend.n_seq_max

    @property
    def failure(self) -> str | None:
        """Why the engine no longer serves its model (details for the log), or None."""
        if self._scheduler.failure is not None:
            return self._scheduler.failure
        if self._scheduler.stopped or (self._thread.ident and not self._thread.is_alive()):
            return "the engine thread is not running"
        return None

    @property
    def healthy(self) -> bool:
        """The engine serves requests (false once it gave up, or its thread ended)."""
        return self.failure is None

    def load(self) -> tuple[int, int]:
        """(requests running, requests waiting), read without locking (for metrics)."""
        return self._scheduler.running_jobs, self._waiting()

    def _waiting(self) -> int:
        """Requests that will not find their slots free: submitted but unadmitted, less those
        the free slots could take (each takes `n` of them).

        A request the engine thread has not collected yet is not waiting if a slot is free.
        """
        waiting = tuple(self._scheduler.waiting.jobs)  # one copy in C, safe from this thread
        pending = self._inbox.qsize() + len(waiting)
        wanted = self._inbox.qsize() + sum(job.request.n for job in waiting)
        return min(pending, max(0, wanted - len(self._scheduler.free)))

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        return self.backend.tokenize(text, add_special=add_special, parse_special=parse_special)

    def grammar_compiles(self, grammar: str) -> bool:
        return self.backend.grammar_compiles(grammar)

    def start(self) -> None:
        """Start the engine thread; returns once it has timed its steps for speculation (under
        a second), so the first requests do not wait behind that."""
        self._thread.start()
        self._scheduler.calibrated.wait(timeout=CALIBRATION_TIMEOUT)

    def drain(self) -> None:
        """Refuse new requests and end those in flight with a 503: the server is stopping."""
        self.draining = True
        self._inbox.put(DRAIN)

    def close(self) -> None:
        if self._thread.is_alive():
            self._inbox.put(STOP)
            self._thread.join()
        self.backend.close()
        if self.drafter is not None:
            self.drafter.close()

    def kv_bytes(self) -> dict[str, int]:
        """The KV cache's size per role: "model", and "draft" with a draft model."""
        sizes = {"model": self.backend.kv_bytes}
        if self.drafter is not None:
            sizes["draft"] = self.drafter.backend.kv_bytes
        return sizes

    @asynccontextmanager
    async def stream(self, request: GenerationRequest) -> AsyncIterator[EngineStream]:
        if self.draining:
            raise OverloadedError("The server is shutting down; retry shortly.", retry_after=5)
        if self.failure is not None:
            raise model_failed(self.failure)
        if self._waiting() >= self.config.max_waiting:
            self._scheduler.observer.rejected()
            raise OverloadedError(
                f"The server is busy: {self.config.max_waiting} requests are already waiting. "
                "Retry shortly.",
                retry_after=1,
            )
        job = Job(request, asyncio.get_running_loop(), self._scheduler.outbox)
        job.events = EventBuffer()  # before the engine thread can see the job
        self._inbox.put(job)
        if self._scheduler.stopped:  # it ended after the check above: nobody will read the inbox
            raise model_failed(self.failure)
        events = EngineStream(job)
        try:
            yield events
        finally:
            if not events.finished:
                job.cancel()

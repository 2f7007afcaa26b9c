"""The engine's async face: submit a request, iterate its events, cancel by leaving.

    async with engine.stream(request) as events:
        async for event in events:   # TokenEvent ..., then Finish
            ...

Leaving the block before `Finish` cancels the request; the engine thread frees its slot
at the start of its next step.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from inkstand.backends.base import Backend, ModelInfo
from inkstand.engine.scheduler import STOP, Job, Scheduler
from inkstand.engine.types import Event, Finish, GenerationRequest
from inkstand.errors import InkstandError


class EngineStream:
    """The events of one request, as an async iterator; raises the engine's errors."""

    def __init__(self, job: Job) -> None:
        self._job = job
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
            self.finished = True
        return event


class Engine:
    """Owns one backend on one thread; thread-safe entry points only."""

    def __init__(self, backend: Backend, *, name: str = "engine") -> None:
        self.backend = backend
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._scheduler = Scheduler(backend, self._inbox)
        self._thread = threading.Thread(target=self._scheduler.run, name=f"inkstand-{name}")
        self._thread.daemon = True

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    def tokenize(self, text: str) -> list[int]:
        return self.backend.tokenize(text)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._inbox.put(STOP)
            self._thread.join()
        self.backend.close()

    @asynccontextmanager
    async def stream(self, request: GenerationRequest) -> AsyncIterator[EngineStream]:
        job = Job(request, asyncio.get_running_loop())
        self._inbox.put(job)
        events = EngineStream(job)
        try:
            yield events
        finally:
            if not events.finished:
                job.cancel()

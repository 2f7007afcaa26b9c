"""Merge the event streams of a request's `n` choices into one ordered flow of (index, event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inkstand.engine import EngineStream
from inkstand.engine.types import Event

_DONE = object()


async def merge_choices(streams: list[EngineStream]) -> AsyncIterator[tuple[int, Event]]:
    """Yield `(choice index, event)` as events arrive; one stream needs no helper tasks."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(i, s, queue)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pump(index: int, stream: EngineStream, queue: asyncio.Queue) -> None:
    try:
        async for event in stream:
            queue.put_nowait((index, event))
    except Exception as exc:  # handed to the consumer, which re-raises it
        queue.put_nowait(exc)
    finally:
        queue.put_nowait(_DONE)

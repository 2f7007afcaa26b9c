"""Server-sent events from an upstream engine, read incrementally: one `data` payload at a
time, as its lines arrive (nothing waits for the whole answer)."""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = "[DONE]"


async def data_payloads(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Each event's `data` (multi-line data joined with newlines), until `[DONE]` or the end.

    Comments (`:`) and fields other than `data` are skipped; an event ends at a blank line.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                data.clear()
                if payload == DONE:
                    return
                yield payload
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data and "\n".join(data) != DONE:
        yield "\n".join(data)

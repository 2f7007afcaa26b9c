"""The only code that writes server-sent events: frames, keep-alives, `[DONE]`, error frames.

Framing follows what Writer's SDK parser accepts: one `data:` line per event and a blank line,
no `id:` lines, comments (`:`) as keep-alives, `event: error` carrying the error envelope once
the 200 has been sent, and `data: [DONE]` at the end of a good stream. On OpenAI's routes an
error after the 200 is a `data:` frame holding OpenAI's `{"error": ...}`, which its SDK
raises from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.types import Receive, Scope, Send

from inkstand.api.errors import envelope, is_openai, openai_error
from inkstand.api.gate import shutting_down
from inkstand.errors import EngineError, InkstandError

log = logging.getLogger("inkstand.api")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def encode_data(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def encode_error(exc: InkstandError, path: str = "") -> bytes:
    """The error frame for a stream answering a request for `path`."""
    if is_openai(path):
        return b"data: " + orjson.dumps(openai_error(exc)) + b"\n\n"
    return b"event: error\ndata: " + orjson.dumps(envelope(exc)) + b"\n\n"


class SSEResponse:
    """An ASGI response streaming `events` as SSE; a client disconnect cancels the stream.

    `on_close` always runs, whether the stream ended, failed or the client went away.
    A keep-alive is never written while another write waits (for a slow client to read).
    """

    def __init__(
        self,
        events: AsyncIterator[dict],
        on_close: Callable[[], Awaitable[None]],
        *,
        keepalive_seconds: float = 15.0,
    ) -> None:
        self.events = events
        self.on_close = on_close
        self.keepalive_seconds = keepalive_seconds
        self._last_write = time.monotonic()
        self._writing = 0  # writes waiting for the transport
        self._ended = False
        self._path = ""  # the request's, for the shape of an error frame

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._path = scope.get("path", "")
        writer = asyncio.current_task()
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, writer))
        ticker = asyncio.create_task(self._keepalive(send))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await self._write_events(send)
        except OSError:
            pass  # the client went away; nothing more can be written
        except asyncio.CancelledError:
            if not watcher.done():  # cancelled by the server shutting down, not by the client
                await self._end_with(send, shutting_down())
        finally:
            self._ended = True
            watcher.cancel()
            ticker.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
            await self.on_close()

    async def _write_events(self, send: Send) -> None:
        try:
            async for payload in self.events:
                await self._send(send, encode_data(payload))
            tail = DONE
        except InkstandError as exc:
            tail = encode_error(exc, self._path)
        except Exception:
            log.exception("stream failed after the response started")
            failed = EngineError("The server failed while streaming the answer.")
            tail = encode_error(failed, self._path)
        self._ended = True
        await self._send(send, tail, more=False)

    async def _end_with(self, send: Send, exc: InkstandError) -> None:
        if self._ended:
            return
        self._ended = True
        with contextlib.suppress(OSError, RuntimeError):
            await send(
                {
                    "type": "http.response.body",
                    "body": encode_error(exc, self._path),
                    "more_body": False,
                }
            )

    async def _send(self, send: Send, frame: bytes, *, more: bool = True) -> None:
        self._last_write = time.monotonic()
        self._writing += 1
        try:
            await send({"type": "http.response.body", "body": frame, "more_body": more})
        finally:
            self._writing -= 1

    async def _keepalive(self, send: Send) -> None:
        while True:
            await asyncio.sleep(self.keepalive_seconds / 3)
            if self._ended:
                return
            idle = time.monotonic() - self._last_write >= self.keepalive_seconds
            if idle and not self._writing:
                await self._send(send, KEEPALIVE)


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if task is not None:
                task.cancel()
            return


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready; the work was cancelled."""


async def until_disconnect(receive: Receive, work: Awaitable):
    """Await `work`, cancelling it if the client disconnects first (non-streaming answers)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_cancel_on_disconnect(receive, task))
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done():
            raise ClientGoneError() from None
        raise shutting_down() from None  # the server cancelled us: answer 503, not a bare 500
    finally:
        watcher.cancel()
        task.cancel()

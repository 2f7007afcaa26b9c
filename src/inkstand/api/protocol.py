"""Bounded request heads and connections, enforced where the bytes arrive.

uvicorn's httptools protocol takes a request's line and headers without limit (llhttp, the
parser under it, has none): a 60 KB request line with a 5 MB header reaches the app, key or
no key, and a 5 MB request line is held whole (10 MB at peak) before httptools' URL parser
gives up with a plain-text 400. Its `limit_concurrency` answers in plain text too. The app
cannot help: by the time it runs, the head is parsed and held. So `LimitedProtocol` is
uvicorn's protocol with Inkstand's limits:

- the request line's target is counted in `on_url` and the headers in `on_header` as the
  parser hands them over; over `max_request_line_bytes` -> 414, over `max_header_bytes` or
  `max_headers` -> 431, before the rest arrives;
- the parser holds one header until it ends (and trailers until they end), so bytes that
  produce no parser progress are counted per read too: more than a whole head at the limits
  (`Limits.held_bytes`) -> 431 (or, in a body's trailers, the connection closes);
- a connection beyond `max_connections` gets a 503 as soon as it opens, without being read
  (it counts as open until it has closed, so a flood stays refused);
- a request head must arrive whole within `request_head_timeout` seconds of the connection
  opening or of the previous response ending (a client trickling bytes gains nothing: the
  clock is not reset per read) -> 408. A connection that sent no byte of a next request is
  closed without a word instead: it asked nothing (browsers open spare connections they may
  never use), as uvicorn's `timeout_keep_alive` closes an idle kept-alive one; whichever of
  the two is shorter ends such a connection. The clock stops while a response is under way
  and for the body, so slow uploads and long generations are untouched.
- a client that stops reading its answer is cut: when the connection's write buffer stays
  above its high-water mark (uvicorn's flow control: the app's `send()` waits, so nothing
  more is made) for `stream_stall_timeout` seconds, no send could complete in that time; the
  connection is aborted (one log line), which the app sees as the client leaving: a stream
  is cancelled in its engine, its slot freed, its usage recorded as 499. What the stalled
  client had not read is dropped with the connection.

Refusals are Writer's envelope with `connection: close`, written in order after any response
still under way on the connection (pipelining), then the connection closes *lingering*: the
write side shuts, and what the client still sends is read and dropped for LINGER_SECONDS, so
a client still writing a long request reads the answer instead of a reset.

This leans on uvicorn internals (the parser callbacks, `parser`, `cycle`, `pipeline`, `flow`,
`connections`, `on_response_complete`, `_unset_keepalive_if_required`);
tests/unit/test_protocol.py drives the class through uvicorn's own machinery, so an upgrade
that moves any of them fails there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from dataclasses import dataclass, fields
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inkstand.api.errors import envelope, error_headers
from inkstand.config import ConfigError, Settings
from inkstand.errors import (
    HeadersTooLargeError,
    InkstandError,
    OverloadedError,
    RequestLineTooLongError,
    RequestTimeoutError,
)

log = logging.getLogger("inkstand.access")

LINGER_SECONDS = 2.0  # how long a refused connection drains what its client still sends


@dataclass(frozen=True)
class Limits:
    """The HTTP-level limits, from the settings of the same names (`max_...`) and
    `request_head_timeout`."""

    request_line_bytes: int
    header_bytes: int
    headers: int
    connections: int
    head_timeout: float = 10.0  # seconds
    stall_timeout: float = 30.0  # seconds a paused write may wait for the client to read

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        limits = cls(
            settings.max_request_line_bytes,
            settings.max_header_bytes,
            settings.max_headers,
            settings.max_connections,
            settings.request_head_timeout,
            settings.stream_stall_timeout,
        )
        for item in fields(limits):
            if item.name.endswith("_timeout"):
                continue
            if getattr(limits, item.name) < 1:
                raise ConfigError(f"setting `max_{item.name}` must be at least 1")
        # No "0: off": without a deadline, `max_connections` idle sockets lock everyone out.
        if not 0 < limits.head_timeout < math.inf:
            raise ConfigError(
                "setting `request_head_timeout` must be a number of seconds above 0, "
                f"got {limits.head_timeout}"
            )
        if not 0 < limits.stall_timeout < math.inf:  # a stalled client would keep its slot
            raise ConfigError(
                "setting `stream_stall_timeout` must be a number of seconds above 0, "
                f"got {limits.stall_timeout}"
            )
        return limits

    @property
    def held_bytes(self) -> int:
        """Bytes a whole head at the limits takes on the wire: line, headers, framing."""
        return self.request_line_bytes + self.header_bytes + 4 * self.headers + 64


def protocol_class(limits: Limits) -> type[LimitedProtocol]:
    """The class to pass as `uvicorn.Config(http=...)`; uvicorn builds one per connection."""
    return type("LimitedProtocol", (LimitedProtocol,), {"limits": limits})


def fit_file_limit(connections: int) -> None:
    """Raise this process's open-file limit towards `connections` plus room for the rest
    (models, the store, logs): Linux's usual soft limit of 1024 would fail accept() first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        log.warning("open-file limit %d is too low for max_connections %d", raised, connections)


class _Stop(Exception):
    """Raised in a parser callback to stop parsing a refused request."""


class _StoppableParser:
    """httptools' parser, except that a callback raising `_Stop` ends `feed_data` quietly;
    uvicorn would answer the callback error with its own plain-text 400."""

    # what uvicorn asks on every request, bound here to skip `__getattr__` (3 µs a request)
    _HOT = ("get_http_version", "get_method", "should_keep_alive", "should_upgrade")

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        for name in self._HOT:
            if hasattr(parser, name):
                setattr(self, name, getattr(parser, name))

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Inkstand's limits on request heads and connections."""

    limits: ClassVar[Limits]
    linger_seconds: ClassVar[float] = LINGER_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parser = _StoppableParser(self.parser)  # type: ignore[assignment]
        self._refusal: InkstandError | None = None
        self._in_head = True  # between requests or in a request's line and headers
        self._progress = 0  # parser events past the head: headers done, body, message done
        self._unseen = 0  # bytes fed since the last of them
        self._line_bytes = self._header_bytes = self._header_count = 0
        self._linger: asyncio.TimerHandle | None = None
        self._head_clock: asyncio.TimerHandle | None = None
        self._head_begun = False  # a byte of the next request's head has been parsed
        self._stall_clock: asyncio.TimerHandle | None = None  # runs while writing is paused

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.limits.connections
        super().connection_made(transport)
        if crowded:
            self._refuse(
                OverloadedError(
                    f"The server has {self.limits.connections} connections open, its limit "
                    "(`max_connections`); retry shortly.",
                    retry_after=1,
                    extras={"limit": "max_connections", "value": self.limits.connections},
                )
            )
        else:
            self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        self._stop_head_clock()
        self._stop_stall_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # lingering: drop what the client still sends
        progress = self._progress
        super().data_received(data)
        self._unseen = self._unseen + len(data) if self._progress == progress else 0
        if self._unseen > self.limits.held_bytes and self._refusal is None:
            self._refuse(self._headers_too_large("max_header_bytes", self.limits.header_bytes))

    # parser callbacks

    def on_message_begin(self) -> None:
        self._line_bytes = self._header_bytes = self._header_count = 0
        self._head_begun = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._line_bytes += len(url)
        limit = self.limits.request_line_bytes
        if self._line_bytes > limit:
            self._refuse(
                RequestLineTooLongError(
                    f"The request line is longer than {limit} bytes, this server's limit "
                    "(`max_request_line_bytes`); send long values in the request body.",
                    extras={"limit": "max_request_line_bytes", "value": limit},
                )
            )
            raise _Stop
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        if self._header_bytes > self.limits.header_bytes:
            self._refuse(self._headers_too_large("max_header_bytes", self.limits.header_bytes))
            raise _Stop
        if self._header_count > self.limits.headers:
            self._refuse(self._headers_too_large("max_headers", self.limits.headers))
            raise _Stop
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = self._head_begun = False
        self._stop_head_clock()
        self._progress += 1
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._progress += 1
        super().on_message_complete()
        if not self._answering():  # answered before its body had all arrived
            self._start_head_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._answering():
            self._answer_refusal()
        elif self._in_head and not self._answering():
            self._start_head_clock()
            if self._head_begun:
                # Part of the next head came during the response: not idle, so uvicorn's
                # keep-alive timeout (just armed) must not end it silently; this clock rules.
                self._unset_keepalive_if_required()

    # the stall clock

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_clock is None:
            timeout = self.limits.stall_timeout
            self._stall_clock = self.loop.call_later(timeout, self._stalled)

    def resume_writing(self) -> None:
        self._stop_stall_clock()
        super().resume_writing()

    def _stop_stall_clock(self) -> None:
        if self._stall_clock is not None:
            self._stall_clock.cancel()
            self._stall_clock = None

    def _stalled(self) -> None:
        """The client read too little to let any write through for `stall_timeout` seconds:
        cut it (the app sees a disconnect and cancels the request)."""
        self._stall_clock = None
        if self.transport.is_closing():
            return
        scope = self.cycle.scope if self.cycle is not None else {}
        log.info(
            "%s %s: the client read nothing for %g s (`stream_stall_timeout`); its connection "
            "is closed and its request cancelled",
            scope.get("method", "-"),
            scope.get("path", "-"),
            self.limits.stall_timeout,
        )
        self.transport.abort()

    # the head clock

    def _start_head_clock(self) -> None:
        """Give the next request head `head_timeout` seconds from now to arrive whole."""
        self._stop_head_clock()
        if self._refusal is None and not self.transport.is_closing():
            self._head_clock = self.loop.call_later(self.limits.head_timeout, self._head_late)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _head_late(self) -> None:
        self._head_clock = None
        if self.transport.is_closing():
            return
        if not self._head_begun:
            self.transport.close()  # nothing asked, so nothing to answer
            return
        timeout = self.limits.head_timeout
        value = int(timeout) if timeout == int(timeout) else timeout
        self._refuse(
            RequestTimeoutError(
                f"The request line and headers did not arrive within {value} s, this server's "
                "limit (`request_head_timeout`); send each request's head at once, then retry.",
                extras={"limit": "request_head_timeout", "value": value},
            )
        )

    # refusals

    def _headers_too_large(self, limit: str, value: int) -> HeadersTooLargeError:
        what = f"{value} header fields" if limit == "max_headers" else f"{value} bytes of headers"
        return HeadersTooLargeError(
            f"The request has more than {what}, this server's limit (`{limit}`); "
            "send fewer or shorter headers.",
            extras={"limit": limit, "value": value},
        )

    def _refuse(self, error: InkstandError) -> None:
        self._refusal = error
        self._stop_head_clock()
        log.info("- - %d refused: over `%s`", error.status, error.extras["limit"])
        if not self._in_head:
            # Trailers over the limit: this request's own answer may be under way.
            self.transport.close()
        elif not self._answering():
            self._answer_refusal()
        # else on_response_complete answers once the responses before it are out

    def _answering(self) -> bool:
        """Whether a response to an earlier request on this connection is not yet complete."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _answer_refusal(self) -> None:
        assert self._refusal is not None
        if self.transport.is_closing():
            return
        self.transport.write(render(self._refusal, self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._linger = self.loop.call_later(self.linger_seconds, self.transport.close)


def render(error: InkstandError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response carrying `error` in Writer's envelope; the connection closes."""
    body = orjson.dumps(envelope(error))
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((name.lower().encode(), value.encode()) for name, value in error_headers(error).items()),
    ]
    status = b"HTTP/1.1 %d %s\r\n" % (error.status, HTTPStatus(error.status).phrase.encode())
    return status + b"".join(b"%s: %s\r\n" % header for header in headers) + b"\r\n" + body

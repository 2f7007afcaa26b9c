"""The HTTP protocol's limits, driven through uvicorn's own machinery on a fake transport.

`LimitedProtocol` subclasses uvicorn internals; these tests build it the way uvicorn's server
does (`Config`, `ServerState`, one protocol per connection), so an upgrade that moves a hook it
relies on fails here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from inkstand.api.protocol import LimitedProtocol, Limits, protocol_class
from inkstand.config import ConfigError, Settings

LIMITS = Limits(request_line_bytes=64, header_bytes=256, headers=8, connections=2)


class Transport(asyncio.Transport):
    """Records what the protocol writes and how it closes; closing tells the protocol soon
    after, as asyncio's transports do."""

    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.Protocol | None = None
        self.written = b""
        self.eof = False
        self.closed = False
        self.aborted = False
        self.reading = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def write(self, data) -> None:
        assert not self.eof and not self.closed, "written after the write side was shut"
        self.written += bytes(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        if not self.closed and self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class App:
    """Answers `<path> <header count> <body bytes>`; `/slow` waits for `release`."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await self.release.wait()
        text = f"{scope['path']} {len(scope['headers'])} {size}".encode()
        headers = [(b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})


class Server:
    """The parts of uvicorn's server a protocol sees: its config and shared state."""

    def __init__(
        self, limits: Limits = LIMITS, linger: float = 60.0, keep_alive: float = 5
    ) -> None:
        self.app = App()
        cls = type("Limited", (protocol_class(limits),), {"linger_seconds": linger})
        self.config = uvicorn.Config(
            self.app,
            http=cls,
            ws="none",
            lifespan="off",
            log_config=None,
            timeout_keep_alive=keep_alive,
        )
        self.config.load()
        self.state = ServerState()

    def connect(self) -> tuple[LimitedProtocol, Transport]:
        protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.state,
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        transport = Transport()
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport


def request(path: str = "/", headers: int = 0, value: str = "v") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: t"]
    lines += [f"x-h{i}: {value}" for i in range(headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what was written into (status, headers, body) by content-length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        size = int(headers["content-length"])
        out.append((int(status_line.split()[1]), headers, rest[:size]))
        raw = rest[size:]
    return out


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def assert_refused(transport: Transport, status: int, limit: str, value: int) -> dict:
    ((got, headers, body),) = responses(transport.written)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = orjson.loads(body)
    assert set(error) == {"tpe", "errors", "extras"}
    assert error["errors"][0]["extras"] == {"limit": limit, "value": value}
    assert f"`{limit}`" in error["errors"][0]["description"]
    assert transport.eof, "the write side shuts after the refusal"
    return headers


async def test_a_request_line_over_the_limit_gets_414_before_the_rest_arrives():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(b"GET /" + b"a" * 64)  # 65 bytes of target
    headers = assert_refused(transport, 414, "max_request_line_bytes", 64)
    assert headers["x-should-retry"] == "false"
    protocol.data_received(b"a" * 100_000 + b" HTTP/1.1\r\nhost: t\r\n\r\n")  # dropped
    await settle()
    assert server.app.paths == [] and len(responses(transport.written)) == 1


async def test_a_request_line_at_the_limit_is_served():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(request("/" + "a" * 63))
    await settle()
    ((status, _, body),) = responses(transport.written)
    assert status == 200 and body.startswith(b"/aaa")


async def test_headers_over_the_byte_limit_get_431():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(request(headers=3, value="v" * 100))
    assert_refused(transport, 431, "max_header_bytes", 256)
    await settle()
    assert server.app.paths == []


async def test_more_headers_than_the_limit_get_431():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(request(headers=8))  # and `host`: 9
    assert_refused(transport, 431, "max_headers", 8)


async def test_headers_up_to_both_limits_are_served():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(request(headers=7, value="v" * 30))  # 8 headers, 249 bytes
    await settle()
    ((status, _, body),) = responses(transport.written)
    assert (status, body) == (200, b"/ 8 0")


async def test_one_endless_header_is_refused_within_a_read_of_the_limit():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nx-long: ")
    fed = 0
    while not transport.written:
        protocol.data_received(b"v" * 100)
        fed += 100
        assert fed <= LIMITS.held_bytes + 100, "the parser kept buffering one header"
    assert_refused(transport, 431, "max_header_bytes", 256)


async def test_each_request_on_a_kept_alive_connection_gets_the_whole_limits():
    server = Server()
    protocol, transport = server.connect()
    for _ in range(3):
        protocol.data_received(request("/" + "a" * 63, headers=7, value="v" * 30))
        await settle()
    assert [status for status, _, _ in responses(transport.written)] == [200, 200, 200]
    assert not transport.closed and not transport.eof


async def test_a_pipelined_refusal_comes_after_the_answer_before_it():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(request("/slow") + request("/fine") + request("/" + "a" * 99))
    await settle()
    assert transport.written == b""
    server.app.release.set()
    await settle()
    answers = responses(transport.written)
    assert [(status, body) for status, _, body in answers[:2]] == [
        (200, b"/slow 1 0"),
        (200, b"/fine 1 0"),
    ]
    assert answers[2][0] == 414 and transport.eof
    assert server.app.paths == ["/slow", "/fine"]


async def test_a_connection_over_the_limit_gets_503_at_once():
    server = Server()
    first, _ = server.connect()
    server.connect()
    refused, crowded = server.connect()
    headers = assert_refused(crowded, 503, "max_connections", 2)
    assert headers["retry-after"] == "1"
    refused.connection_lost(None)  # a refused connection counts until it has closed
    first.connection_lost(None)
    protocol, transport = server.connect()
    protocol.data_received(request())
    await settle()
    assert responses(transport.written)[0][0] == 200


async def test_a_refused_connection_drains_then_closes():
    server = Server(linger=0.01)
    protocol, transport = server.connect()
    protocol.data_received(b"GET /" + b"a" * 200)
    assert transport.eof and transport.reading and not transport.closed
    await asyncio.sleep(0.05)
    assert transport.closed


async def test_trailers_over_the_limit_close_the_connection():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(
        b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
    )
    for _ in range(LIMITS.held_bytes // 100 + 2):
        protocol.data_received(b"x-trailer: " + b"v" * 89)
        if transport.closed:
            break
    assert transport.closed
    await settle()
    assert server.app.paths == ["/up"]  # it was told the client left


async def test_malformed_requests_still_get_uvicorns_400():
    server = Server()
    protocol, transport = server.connect()
    protocol.data_received(b"NOT HTTP\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400 ") and transport.closed


@pytest.mark.parametrize("name", ["request_line_bytes", "header_bytes", "headers", "connections"])
def test_limits_below_one_are_refused(name):
    with pytest.raises(ConfigError, match=f"max_{name}"):
        Limits.from_settings(replace(Settings(), **{f"max_{name}": 0}))


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_a_head_timeout_that_is_not_a_positive_number_is_refused(seconds):
    with pytest.raises(ConfigError, match="request_head_timeout"):
        Limits.from_settings(replace(Settings(), request_head_timeout=seconds))


def test_the_head_timeout_comes_from_its_setting():
    limits = Limits.from_settings(replace(Settings(), request_head_timeout=2.5))
    assert limits.head_timeout == 2.5
    assert Limits.from_settings(Settings()).head_timeout == 10


# the request head's deadline

TIMED = replace(LIMITS, head_timeout=0.2)
HALF = b"GET / HTTP/1.1\r\nhost: t\r\n"  # a head without its blank line


def assert_timed_out(transport: Transport) -> None:
    headers = assert_refused(transport, 408, "request_head_timeout", 0.2)
    assert headers["x-should-retry"] == "true"


async def test_a_head_not_whole_in_time_gets_408():
    server = Server(TIMED)
    protocol, transport = server.connect()
    protocol.data_received(HALF)
    await asyncio.sleep(0.1)
    assert transport.written == b""
    await asyncio.sleep(0.2)
    assert_timed_out(transport)
    protocol.data_received(b"\r\n")  # too late: dropped while lingering
    await settle()
    assert server.app.paths == []


async def test_a_head_trickled_a_byte_at_a_time_gets_408_at_the_deadline():
    server = Server(TIMED)
    protocol, transport = server.connect()
    started = asyncio.get_running_loop().time()
    for byte in request(headers=8):
        if transport.written:
            break
        protocol.data_received(bytes([byte]))
        await asyncio.sleep(0.02)
    assert_timed_out(transport)
    assert asyncio.get_running_loop().time() - started < 0.35


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer():
    server = Server(TIMED)
    _, transport = server.connect()
    await asyncio.sleep(0.1)
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert transport.closed and transport.written == b""


async def test_the_deadline_counts_from_the_end_of_the_previous_response():
    server = Server(TIMED)
    protocol, transport = server.connect()
    for _ in range(3):  # 0.45 s on one connection, each head within 0.15 s
        await asyncio.sleep(0.15)
        protocol.data_received(request())
        await settle()
    assert [status for status, _, _ in responses(transport.written)] == [200, 200, 200]
    protocol.data_received(HALF)
    await asyncio.sleep(0.3)
    assert [status for status, _, _ in responses(transport.written)] == [200, 200, 200, 408]


async def test_a_long_response_is_not_timed():
    server = Server(TIMED)
    protocol, transport = server.connect()
    protocol.data_received(request("/slow") + HALF)  # part of the next head comes early
    await asyncio.sleep(0.5)
    assert transport.written == b"" and not transport.closed
    server.app.release.set()
    await settle()
    assert [status for status, _, _ in responses(transport.written)] == [200]
    await asyncio.sleep(0.1)  # the next head's clock started when the response ended
    assert len(responses(transport.written)) == 1
    await asyncio.sleep(0.2)
    assert [status for status, _, _ in responses(transport.written)] == [200, 408]


async def test_a_slow_body_is_not_timed_but_the_next_head_is():
    server = Server(TIMED)
    protocol, transport = server.connect()
    protocol.data_received(b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\n")
    for byte in b"abc":
        await asyncio.sleep(0.15)
        protocol.data_received(bytes([byte]))
    await settle()
    assert [(status, body) for status, _, body in responses(transport.written)] == [
        (200, b"/up 2 3")
    ]
    protocol.data_received(HALF)
    await asyncio.sleep(0.3)
    assert [status for status, _, _ in responses(transport.written)] == [200, 408]


async def test_a_head_begun_during_a_response_is_not_ended_by_the_keep_alive_timeout():
    server = Server(TIMED, keep_alive=0.05)
    protocol, transport = server.connect()
    protocol.data_received(request("/slow") + HALF)
    await settle()
    server.app.release.set()
    await asyncio.sleep(0.1)  # past uvicorn's keep-alive timeout, within the head's
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert [status for status, _, _ in responses(transport.written)] == [200, 408]


@pytest.mark.parametrize("keep_alive", [0.05, 5])
async def test_an_idle_kept_alive_connection_closes_silently_at_the_earlier_timeout(keep_alive):
    server = Server(TIMED, keep_alive=keep_alive)
    protocol, transport = server.connect()
    protocol.data_received(request())
    await asyncio.sleep(0.1)
    assert transport.closed == (keep_alive < TIMED.head_timeout)
    await asyncio.sleep(0.2)
    assert transport.closed and len(responses(transport.written)) == 1


# the stall clock

STALLING = replace(LIMITS, stall_timeout=0.2)


async def test_a_client_that_reads_nothing_for_the_stall_timeout_is_cut(caplog):
    caplog.set_level(logging.INFO, logger="inkstand.access")
    server = Server(STALLING)
    protocol, transport = server.connect()
    protocol.data_received(request("/slow"))
    await settle()
    protocol.pause_writing()  # the client stopped reading: the write buffer is full
    await asyncio.sleep(0.1)
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert transport.aborted
    await settle()
    assert protocol.cycle is not None and protocol.cycle.disconnected  # the app is told
    (line,) = [r.getMessage() for r in caplog.records if "stream_stall_timeout" in r.getMessage()]
    assert line.startswith("GET /slow: the client read nothing for 0.2 s")
    server.app.release.set()  # its answer goes nowhere
    await settle()
    assert transport.written == b""


async def test_a_client_that_reads_now_and_then_is_not_cut():
    server = Server(STALLING)
    protocol, transport = server.connect()
    protocol.data_received(request("/slow"))
    await settle()
    for _ in range(4):  # 0.6 s paused in all, never 0.2 s in a row
        protocol.pause_writing()
        await asyncio.sleep(0.15)
        protocol.resume_writing()
    assert not transport.closed
    server.app.release.set()
    await settle()
    assert [status for status, _, _ in responses(transport.written)] == [200]


async def test_a_closed_connection_stops_its_stall_clock():
    server = Server(STALLING)
    protocol, transport = server.connect()
    protocol.pause_writing()
    protocol.connection_lost(None)
    await asyncio.sleep(0.3)
    assert not transport.aborted


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_a_stall_timeout_that_is_not_a_positive_number_is_refused(seconds):
    with pytest.raises(ConfigError, match="stream_stall_timeout"):
        Limits.from_settings(replace(Settings(), stream_stall_timeout=seconds))


def test_the_stall_timeout_comes_from_its_setting():
    assert Limits.from_settings(replace(Settings(), stream_stall_timeout=2)).stall_timeout == 2
    assert Limits.from_settings(Settings()).stall_timeout == 30

"""Limits on request heads and connections, enforced by the HTTP protocol before the app runs.

One server with small limits and one with a 1 s request-head deadline, spoken to over raw
sockets so that the bytes on the wire (and the connection closing) are exactly what the test
says.
"""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from .support import ESSAY, KEY, Server, assert_envelope, greedy, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

LINE, HEADER_BYTES, HEADERS, CONNECTIONS = 256, 2048, 20, 6
HEAD_TIMEOUT = 1  # seconds
MARGIN = 1.5  # seconds a busy machine may add to the deadline


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Server:
    folder = tmp_path_factory.mktemp("limited")
    flags = (
        *("--max-request-line-bytes", str(LINE), "--max-header-bytes", str(HEADER_BYTES)),
        *("--max-headers", str(HEADERS), "--max-connections", str(CONNECTIONS)),
        *("--ctx-size", "512", "--threads", "1"),
    )
    with running_server(folder, *flags, key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> Server:
    folder = tmp_path_factory.mktemp("timed")
    flags = ("--request-head-timeout", str(HEAD_TIMEOUT), "--ctx-size", "1024", "--threads", "1")
    with running_server(folder, *flags, key=KEY) as server:
        yield server


def head(path: str = "/v1/models", headers: dict[str, str] | None = None) -> bytes:
    """A GET with the key; `headers` are added after `host` and `authorization`."""
    fields = {"host": "inkstand", "authorization": f"Bearer {KEY}", **(headers or {})}
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body) read by its content-length, and not a byte more."""
    raw = b""
    while not raw.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the connection closed before a response: {raw!r}"
        raw += byte
    status_line, *lines = raw.decode().strip().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    body = b""
    while len(body) < int(headers["content-length"]):
        body += sock.recv(int(headers["content-length"]) - len(body))
    return int(status_line.split()[1]), headers, body


def refused(sock: socket.socket, status: int, limit: str, value: int) -> dict[str, str]:
    """Read a refusal: `status` in Writer's envelope naming `limit`; then the server closes."""
    got, headers, body = read_response(sock)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    envelope = json.loads(body)
    assert_envelope(envelope)
    (error,) = envelope["errors"]
    assert error["extras"] == {"limit": limit, "value": value}
    assert f"`{limit}`" in error["description"] and str(value) in error["description"]
    assert sock.recv(1) == b"", "the server keeps the connection open"
    return headers


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_a_request_line_over_the_limit_gets_414(limited):
    with connect(limited) as sock:
        sock.sendall(head("/v1/models?q=" + "a" * LINE))
        headers = refused(sock, 414, "max_request_line_bytes", LINE)
    assert headers["x-should-retry"] == "false"


def test_a_5_mb_request_line_is_answered_while_the_client_still_sends(limited):
    with connect(limited) as sock:
        sock.sendall(head("/v1/models?q=" + "a" * 5_000_000))
        refused(sock, 414, "max_request_line_bytes", LINE)


def test_header_bytes_over_the_limit_get_431(limited):
    with connect(limited) as sock:
        sock.sendall(head(headers={"x-big": "v" * HEADER_BYTES}))
        headers = refused(sock, 431, "max_header_bytes", HEADER_BYTES)
    assert headers["x-should-retry"] == "false"


def test_more_headers_than_the_limit_get_431(limited):
    with connect(limited) as sock:
        sock.sendall(head(headers={f"x-h{i}": "v" for i in range(HEADERS - 1)}))
        refused(sock, 431, "max_headers", HEADERS)


def test_a_request_with_many_headers_within_the_limits_is_served(limited):
    fill = HEADER_BYTES // HEADERS  # the key and host take less than one share
    many = {f"x-h{i:02}": "v" * (fill - 5) for i in range(HEADERS - 2)}
    with connect(limited) as sock:
        sock.sendall(head("/v1/models?q=" + "a" * (LINE - 14), headers=many) * 2)
        for _ in range(2):  # pipelined on one connection
            status, _, body = read_response(sock)
            assert status == 200, body
            assert json.loads(body)["models"]


def test_connections_over_the_limit_get_503_and_later_ones_are_served(limited):
    crowd = [connect(limited) for _ in range(CONNECTIONS)]
    try:
        time.sleep(0.5)  # the server has accepted them all
        with connect(limited) as extra:
            extra.sendall(head())
            headers = refused(extra, 503, "max_connections", CONNECTIONS)
        assert headers["retry-after"] == "1"
    finally:
        for sock in crowd:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the crowd has left
        with connect(limited) as sock:
            sock.sendall(head())
            status, _, body = read_response(sock)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200, body


# the request head's deadline


def assert_timed_out(sock: socket.socket, since: float) -> None:
    """A 408 naming `request_head_timeout`, about HEAD_TIMEOUT after `since`; then EOF."""
    headers = refused(sock, 408, "request_head_timeout", HEAD_TIMEOUT)
    assert headers["x-should-retry"] == "true"
    assert HEAD_TIMEOUT - 0.1 < time.monotonic() - since < HEAD_TIMEOUT + MARGIN


def assert_closed_silently(sock: socket.socket, since: float) -> None:
    sock.settimeout(HEAD_TIMEOUT + MARGIN)
    assert sock.recv(1) == b"", "the server answered a connection that asked nothing"
    assert HEAD_TIMEOUT - 0.1 < time.monotonic() - since < HEAD_TIMEOUT + MARGIN


def test_a_half_sent_head_gets_408_then_the_connection_closes(timed):
    with connect(timed) as sock:
        started = time.monotonic()
        sock.sendall(head().removesuffix(b"\r\n"))  # all but the blank line
        assert_timed_out(sock, started)


def test_a_head_trickled_a_byte_at_a_time_gets_408_at_the_deadline(timed):
    with connect(timed) as sock:
        started = time.monotonic()
        for byte in head():
            sock.sendall(bytes([byte]))
            if select.select([sock], [], [], 0.2)[0]:
                break
        assert_timed_out(sock, started)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(timed):
    with connect(timed) as sock:
        assert_closed_silently(sock, time.monotonic())


def test_a_kept_alive_connection_has_the_deadline_for_each_request(timed):
    with connect(timed) as sock:
        for _ in range(3):  # 1.8 s on one connection, each head within 0.6 s
            time.sleep(0.6)
            sock.sendall(head())
            status, _, body = read_response(sock)
            assert status == 200, body
        # idle: closed at the head deadline, before uvicorn's keep-alive timeout (5 s)
        assert_closed_silently(sock, time.monotonic())


def read_stream(sock: socket.socket) -> tuple[int, bytes]:
    """One chunked response (status, body), read to its last chunk and not a byte more."""
    raw = b""
    while not raw.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the connection closed before a response: {raw!r}"
        raw += byte
    assert b"transfer-encoding: chunked" in raw.lower(), raw
    status, body = int(raw.split()[1]), b""
    while True:
        size_line = b""
        while not size_line.endswith(b"\r\n"):
            byte = sock.recv(1)
            assert byte, f"the stream was cut after {body[-300:]!r}"
            size_line += byte
        size = int(size_line, 16)
        chunk = b""
        while len(chunk) < size + 2:  # the chunk and its CRLF
            received = sock.recv(size + 2 - len(chunk))
            assert received, f"the stream was cut after {body[-300:]!r}"
            chunk += received
        if size == 0:
            return status, body
        body += chunk[:-2]


def test_a_long_stream_is_not_cut_and_the_next_head_is_timed_from_its_end(timed):
    payload = json.dumps(greedy(messages=ESSAY, max_tokens=300, stream=True)).encode()
    post = (
        "POST /v1/chat HTTP/1.1\r\nhost: inkstand\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    with connect(timed) as sock:
        started = time.monotonic()
        sock.sendall(post + payload)
        status, body = read_stream(sock)
        ended = time.monotonic()
        assert status == 200, body
        assert body.rstrip().endswith(b"data: [DONE]")
        assert b'"finish_reason":"length"' in body
        assert ended - started > 1.5 * HEAD_TIMEOUT, "the stream is too short to show anything"
        sock.sendall(head().removesuffix(b"\r\n"))
        assert_timed_out(sock, ended)

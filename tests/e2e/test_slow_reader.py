"""A client that stops reading its stream is cut after `stream_stall_timeout`; others go on.

The stalled client is a raw socket that sends a long streaming request and never reads. On
loopback the kernel would buffer megabytes of the answer first (its send buffer grows with
the 64 KiB MSS), so the socket asks for a small receive buffer and MSS: the server's write
buffer then fills after some 100 KB, its writes wait, and `stream_stall_timeout` (2 s here)
later the connection is cut. Meanwhile another client streams normally, and afterwards
both slots serve a new request at once.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from .support import (
    AUTH,
    CANCELLATIONS,
    ESSAY,
    KEY,
    RUNNING,
    greedy,
    post,
    running_server,
    scrape,
    stream_chunks,
    wait_for_metric,
    wait_until_idle,
)
from .test_backpressure import raw_chat_request

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

STALL_SECONDS = 2


@pytest.fixture(scope="module")
def stalling_server(tmp_path_factory):
    """Two slots; a request may wait 5 s for one; a client may stall its stream for 2 s."""
    flags = ("--slots", "2", "--ctx-size", "4096", "--threads", "1", "--queue-timeout", "5")
    flags += ("--stream-stall-timeout", str(STALL_SECONDS))
    with running_server(tmp_path_factory.mktemp("stalling"), *flags, key=KEY) as server:
        yield server


@contextlib.contextmanager
def stalled_client(server, body: dict) -> Iterator[socket.socket]:
    """A connection that sends `body` as a chat request and never reads a byte."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(raw_chat_request(server, body))
        yield sock


def statuses(server) -> list[int]:
    with contextlib.closing(sqlite3.connect(server.data_dir / "inkstand.sqlite3")) as db:
        rows = db.execute("SELECT status FROM usage WHERE endpoint = '/v1/chat' ORDER BY id")
        return [status for (status,) in rows]


def test_a_client_that_stops_reading_is_cut_and_others_go_on(stalling_server):
    server = stalling_server
    before = wait_until_idle(server)
    start = server.log_size()
    recorded = len(statuses(server))
    with stalled_client(server, greedy(messages=ESSAY, max_tokens=4000, stream=True)):
        wait_for_metric(server, RUNNING, 1)
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http:
            began = time.monotonic()
            chunks = stream_chunks(http, greedy(max_tokens=100))
            took = time.monotonic() - began
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert took < 60, f"a stream beside a stalled one took {took:.0f} s"
        cut = rf"POST /v1/chat: the client read nothing for {STALL_SECONDS} s"
        server.wait_for_log(cut, since=start, timeout=90)
        wait_for_metric(server, RUNNING, 0)
    assert scrape(server)[CANCELLATIONS] - before[CANCELLATIONS] == 1
    both = post(server, greedy(max_tokens=2, n=2))  # needs both slots: none is held
    assert both.status_code == 200, both.text
    assert len(both.json()["choices"]) == 2
    assert sorted(statuses(server)[recorded:]) == [200, 200, 499]  # the stalled one: 499

"""SIGTERM stops the server gracefully: answers in flight finish, new requests get 503.

The server stops taking requests (503 with `Retry-After` while the answers in flight run),
lets them finish, commits their usage records, closes its worker processes and exits 0; a
second signal cuts what still runs (an `event: error` frame in a stream) and exits 0 at
once. Each test stops a server of its own.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .support import (
    AUTH,
    ESSAY,
    KEY,
    assert_envelope,
    greedy,
    post,
    running_server,
    sse_events,
    usage_report,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

STREAMS = 8
TOKENS = 150  # each stream's answer: several seconds for eight together on one thread
STOPPING = r"stopping: new requests get 503"


@pytest.fixture
def stopping(tmp_path):
    flags = ("--ctx-size", "1024", "--threads", "1", "--shutdown-grace", "120")
    with running_server(tmp_path, *flags, key=KEY) as server:
        yield server


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # ended, waiting to be reaped by whoever adopted it


def stream_raw(server, body: dict, started: threading.Barrier) -> str:
    """Stream `body`; wait at `started` once its first bytes are in; the whole SSE body."""
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        pieces = response.iter_raw()
        received = next(pieces)
        started.wait(timeout=60)
        for piece in pieces:
            received += piece
    return received.decode()


def test_sigterm_lets_every_stream_in_flight_finish(stopping):
    workers = children(stopping.process.pid)
    assert workers, "the planner's worker process should be running"
    started = threading.Barrier(STREAMS + 1)
    bodies = [
        greedy(messages=[{"role": "user", "content": f"Tell story {i}."}], max_tokens=TOKENS)
        for i in range(STREAMS)
    ]
    with ThreadPoolExecutor(STREAMS) as pool:
        answers = [
            pool.submit(stream_raw, stopping, {**body, "stream": True}, started) for body in bodies
        ]
        started.wait(timeout=60)  # every stream is under way
        stopping.process.send_signal(signal.SIGTERM)
        stopping.wait_for_log(STOPPING)
        late = post(stopping, greedy(max_tokens=2))
        bodies_out = [answer.result(timeout=120) for answer in answers]
    assert late.status_code == 503, late.text
    assert int(late.headers["retry-after"]) >= 1
    assert_envelope(late.json())
    for raw in bodies_out:
        chunks = [json.loads(data) for data in sse_events(raw)[:-1]]  # ends with [DONE]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert stopping.process.wait(timeout=60) == 0
    (total,) = usage_report(stopping.data_dir)
    assert (total["requests"], total["succeeded"]) == (STREAMS, STREAMS)
    assert total["completion_tokens"] == STREAMS * TOKENS
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in workers), "a worker process outlived the server"


def test_a_second_sigterm_cuts_the_answers_and_exits_at_once(stopping):
    body = greedy(messages=ESSAY, max_tokens=900, stream=True)
    with (
        httpx.Client(base_url=stopping.url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        pieces = response.iter_raw()
        received = next(pieces)
        stopping.process.send_signal(signal.SIGTERM)
        stopping.wait_for_log(STOPPING)
        assert stopping.process.poll() is None  # the answer is still being written
        stopping.process.send_signal(signal.SIGTERM)
        cut = time.monotonic()
        for piece in pieces:
            received += piece
    assert stopping.process.wait(timeout=15) == 0
    assert time.monotonic() - cut < 15
    tail = received.decode().rstrip("\n").rsplit("\n\n", 1)[-1]
    assert tail.startswith("event: error\ndata: "), tail
    envelope = json.loads(tail.split("data: ", 1)[1])
    assert_envelope(envelope)
    assert envelope["tpe"] == "ServiceUnavailable"
    assert "cutting 1 answer(s)" in stopping.log()
    (total,) = usage_report(stopping.data_dir)  # its record was committed all the same
    assert total["requests"] == 1

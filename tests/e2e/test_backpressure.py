"""Backpressure: a bounded wait line, refused with 503 and `Retry-After` when full or too slow.

A greedy essay stream (`occupying`) holds the only slot of a one-slot server while the test
queues requests behind it; `/metrics` says when a request is in the wait line, so nothing
here depends on how fast the model is. Leaving `occupying` cancels the essay, which lets
whatever still waits through. The last test checks the other side of the bound: a request
that finds a free slot never counts as waiting.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import writerai

from .support import (
    AUTH,
    CANCELLATIONS,
    KEY,
    REJECTIONS,
    WAITING,
    assert_envelope,
    greedy,
    occupying,
    post,
    running_server,
    scrape,
    wait_for_metric,
    wait_until_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

SHORT = greedy(max_tokens=2)


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory):
    """One slot, and a request may wait at most one second for it."""
    flags = ("--slots", "1", "--queue-timeout", "1", "--ctx-size", "4096", "--threads", "1")
    with running_server(tmp_path_factory.mktemp("impatient"), *flags, key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def shallow_server(tmp_path_factory):
    """Sixteen slots (the default) and room for one request in the wait line."""
    flags = ("--max-waiting", "1", "--ctx-size", "1024", "--threads", "1")
    with running_server(tmp_path_factory.mktemp("shallow"), *flags, key=KEY) as server:
        yield server


def assert_overloaded(response: httpx.Response) -> None:
    """A 503 in Writer's envelope that tells the client when to retry."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_envelope(response.json())
    assert int(response.headers["retry-after"]) >= 1


def test_full_wait_line_refuses_with_retry_after(narrow_server):
    before = wait_until_idle(narrow_server)
    with ThreadPoolExecutor(1) as pool, occupying(narrow_server):
        waiter = pool.submit(post, narrow_server, SHORT)
        wait_for_metric(narrow_server, WAITING, 1)
        assert_overloaded(post(narrow_server, {**SHORT, "stream": True}))
        with (
            writerai.Writer(api_key=KEY, base_url=narrow_server.url, max_retries=0) as client,
            pytest.raises(writerai.InternalServerError) as caught,
        ):
            client.chat.chat(**SHORT)
        assert caught.value.status_code == 503
        assert_envelope(caught.value.body)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert scrape(narrow_server)[REJECTIONS] - before[REJECTIONS] == 2
    served = waiter.result(timeout=60)
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["finish_reason"] == "length"


def raw_chat_request(server, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
def test_client_leaving_the_wait_line_frees_its_place(narrow_server, stream):
    before = wait_until_idle(narrow_server)
    with occupying(narrow_server):
        # A raw socket, so the client leaves exactly when the request is known to wait.
        with socket.create_connection(("127.0.0.1", narrow_server.port)) as leaving:
            leaving.sendall(raw_chat_request(narrow_server, {**SHORT, "stream": stream}))
            wait_for_metric(narrow_server, WAITING, 1)
        wait_for_metric(narrow_server, WAITING, 0, timeout=10)
        wait_for_metric(narrow_server, CANCELLATIONS, before[CANCELLATIONS] + 1)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
def test_request_waiting_too_long_gets_503(impatient_server, stream):
    before = wait_until_idle(impatient_server)
    with occupying(impatient_server):
        assert_overloaded(post(impatient_server, {**SHORT, "stream": stream}))
        assert scrape(impatient_server)[REJECTIONS] - before[REJECTIONS] == 1


async def statuses_at_once(server, bodies: list[dict]) -> list[int]:
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http:
        responses = await asyncio.gather(*(http.post("/v1/chat", json=b) for b in bodies))
    return [response.status_code for response in responses]


def test_requests_that_find_a_free_slot_are_never_refused(shallow_server):
    """Sixteen requests at once fit sixteen slots: none of them has to wait, so none is
    turned away, however short the wait line is."""
    before = wait_until_idle(shallow_server)
    bodies = [
        greedy(max_tokens=2, messages=[{"role": "user", "content": f"Count to {i}."}])
        for i in range(16)
    ]
    statuses = asyncio.run(statuses_at_once(shallow_server, bodies))
    assert Counter(statuses) == {200: 16}
    assert scrape(shallow_server)[REJECTIONS] == before[REJECTIONS]

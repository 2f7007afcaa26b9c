"""Stopping the server (SIGTERM) while requests are in flight ends them in Writer's terms.

When the grace period ends (`--shutdown-grace`, 0 here: at once) the answers still in
flight are cut (test_shutdown.py: within it they finish). A client still waiting must
get an answer its SDK understands: a non-streaming request a retryable 503 with the error
envelope (spec 6.2: "model down"), a stream an `event: error` frame carrying the envelope
before the connection closes (spec 3.7). Each test stops a server of its own.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from .support import AUTH, ESSAY, KEY, RUNNING, greedy, running_server, wait_for_metric

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]


@pytest.fixture
def doomed(tmp_path):
    # No grace: what is in flight is cut at once (the request below would outlast any).
    flags = ("--ctx-size", "4096", "--threads", "1", "--shutdown-grace", "0")
    with running_server(tmp_path, *flags, key=KEY) as server:
        yield server


def stopped(server) -> str:
    server.process.wait(timeout=30)
    return server.log()


def test_stream_in_flight_ends_with_an_error_frame(doomed):
    body = greedy(messages=ESSAY, max_tokens=4000, stream=True)
    with (
        httpx.Client(base_url=doomed.url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        events = response.iter_raw()
        received = next(events)
        doomed.process.terminate()
        try:
            for piece in events:
                received += piece
        except httpx.TransportError as exc:
            pytest.fail(f"the stream was cut without an error frame: {exc!r}")
    tail = received.decode().rstrip("\n").rsplit("\n\n", 1)[-1]
    assert tail.startswith("event: error\ndata: "), tail
    envelope = json.loads(tail.split("data: ", 1)[1])
    assert envelope["errors"][0]["description"]
    assert "returned without completing response" not in stopped(doomed)


def test_request_in_flight_gets_a_retryable_envelope(doomed):
    answers: list[httpx.Response | Exception] = []

    def ask() -> None:
        with httpx.Client(base_url=doomed.url, headers=AUTH, timeout=60) as http:
            try:
                answers.append(http.post("/v1/chat", json=greedy(messages=ESSAY, max_tokens=4000)))
            except httpx.TransportError as exc:
                answers.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for_metric(doomed, RUNNING, 1)  # the request has reached the engine
    doomed.process.terminate()
    asker.join(timeout=60)
    (response,) = answers
    assert isinstance(response, httpx.Response), repr(response)
    assert response.status_code == 503, response.text
    assert response.json()["errors"][0]["description"]
    assert "Traceback" not in stopped(doomed)

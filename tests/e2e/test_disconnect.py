"""A client that goes away frees its slots: the request is cancelled, the next one is served.

Most tests here use the one-slot server (`narrow_server`), so a request that kept generating
after its client left would hold the next one back. They ask for 4000 tokens of a greedy essay
(which this model never ends by itself): most of a minute of work. Within seconds of the
client leaving, `/metrics` must show no request running and one more cancellation, and a
follow-up request must be served.
"""

from __future__ import annotations

import httpx
import pytest

from .support import (
    AUTH,
    CANCELLATIONS,
    ESSAY,
    RUNNING,
    greedy,
    post,
    scrape,
    wait_for_metric,
    wait_until_idle,
)

pytestmark = pytest.mark.e2e

ENDLESS = greedy(messages=ESSAY, max_tokens=4000)


def served_after(server, before: dict) -> None:
    """The abandoned request was cancelled and the slot serves a normal request again."""
    wait_for_metric(server, RUNNING, 0)
    assert server.process.poll() is None
    response = post(server, greedy(max_tokens=2))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"
    after = scrape(server)
    assert after[CANCELLATIONS] - before[CANCELLATIONS] == 1
    assert after[RUNNING] == 0


def test_closed_stream_is_cancelled(narrow_server):
    before = wait_until_idle(narrow_server)
    start = narrow_server.log_size()
    with (
        httpx.Client(base_url=narrow_server.url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat", json={**ENDLESS, "stream": True}) as response,
    ):
        chunks = (line for line in response.iter_lines() if line.startswith("data: {"))
        assert len([next(chunks) for _ in range(3)]) == 3
    served_after(narrow_server, before)
    narrow_server.wait_for_log(r"POST /v1/chat 200 ", since=start, count=2)


def test_timed_out_request_is_cancelled(narrow_server):
    before = wait_until_idle(narrow_server)
    start = narrow_server.log_size()
    with (
        httpx.Client(base_url=narrow_server.url, headers=AUTH, timeout=0.3) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post("/v1/chat", json=ENDLESS)
    served_after(narrow_server, before)
    narrow_server.wait_for_log(r"POST /v1/chat 499 ", since=start)


@pytest.mark.embedded_only  # the engine's slots and metrics
def test_closed_stream_frees_the_slot_of_every_choice(server):
    before = wait_until_idle(server)
    body = greedy(messages=ESSAY, max_tokens=900, n=4, stream=True)
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        chunks = (line for line in response.iter_lines() if line.startswith("data: {"))
        assert len([next(chunks) for _ in range(3)]) == 3
    wait_for_metric(server, RUNNING, 0)
    # Sixteen choices need every slot of the session server: none may still be held.
    response = post(server, greedy(max_tokens=2, n=16))
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 16
    assert scrape(server)[CANCELLATIONS] - before[CANCELLATIONS] == 1

"""A client that goes away frees its slot: the request is cancelled, the next one is served.

The embedded engine has one sequence slot, so a request that kept generating after its client
left would hold the next one back. These tests use a server of their own with the default
8192-token context and ask for 8000 tokens of a greedy essay (which this model never ends by
itself): minutes of work. The follow-up request then only completes within its client
timeout if the abandoned request was really cancelled.
"""

from __future__ import annotations

import httpx
import pytest

from .support import KEY, greedy, running_server

pytestmark = pytest.mark.e2e

ESSAY = [{"role": "user", "content": "Write a very long essay about the history of printing."}]
HEADERS = {"Authorization": f"Bearer {KEY}"}
ENDLESS = greedy(messages=ESSAY, max_tokens=8000)


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("roomy"), "--threads", "1", key=KEY) as server:
        yield server


def served_after(server) -> None:
    """The server is alive and answers a normal request within a short client timeout."""
    assert server.process.poll() is None
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
        response = http.post("/v1/chat", json=greedy(max_tokens=2))
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "length"
        assert http.get("/health").status_code == 200


def test_closed_stream_is_cancelled(roomy_server):
    start = roomy_server.log_size()
    with (
        httpx.Client(base_url=roomy_server.url, headers=HEADERS, timeout=30) as http,
        http.stream("POST", "/v1/chat", json={**ENDLESS, "stream": True}) as response,
    ):
        chunks = (line for line in response.iter_lines() if line.startswith("data: {"))
        assert len([next(chunks) for _ in range(3)]) == 3
    served_after(roomy_server)
    roomy_server.wait_for_log(r"POST /v1/chat 200 ", since=start, count=2)


def test_timed_out_request_is_cancelled(roomy_server):
    start = roomy_server.log_size()
    with (
        httpx.Client(base_url=roomy_server.url, headers=HEADERS, timeout=0.3) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post("/v1/chat", json=ENDLESS)
    served_after(roomy_server)
    roomy_server.wait_for_log(r"POST /v1/chat 499 ", since=start)

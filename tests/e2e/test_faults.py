"""An engine fault on the real server: the stream it struck ends with one error event, the
fault is logged with its traceback, and the server goes on serving.

How the fault is made: the server runs with `--fault-injection sample@3`, so the third call to
llama.cpp's sampler on the engine thread raises `InjectedFault`, a plain `RuntimeError` like a
bug or a ctypes error would raise. A real input that makes the engine thread raise would be a
bug, and bugs get fixed (the fuzzing of the contract tests hunts exactly those 5xx), taking
such a test's trigger with them; the one failure llama.cpp reported there for an input, a
grammar it refuses, is now found when the request is planned, before it reaches the engine.
The setting is off by default, named and documented as being for tests, announced in the
log, and without it the server never wraps its backend.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .support import AUTH, KEY, Server, assert_envelope, greedy, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory) -> Server:
    flags = ("--fault-injection", "sample@3", "--slots", "2", "--ctx-size", "1024")
    with running_server(tmp_path_factory.mktemp("faulty"), *flags, "--threads", "1", key=KEY) as s:
        yield s


@pytest.mark.server_failures(r"^Traceback \(most recent call last\):$")
def test_a_fault_ends_its_stream_with_an_error_event_and_the_server_carries_on(faulty_server):
    start = faulty_server.log_size()
    with httpx.Client(base_url=faulty_server.url, headers=AUTH, timeout=60) as http:
        with http.stream("POST", "/v1/chat", json=greedy(stream=True)) as response:
            assert response.status_code == 200
            body = read_within(response, seconds=60)
        frames = body.removesuffix("\n\n").split("\n\n")
        *chunks, last = frames
        assert chunks and all(chunk.startswith("data: {") for chunk in chunks)
        assert last.startswith("event: error\ndata: ")
        error = json.loads(last.split("data: ", 1)[1])
        assert_envelope(error)
        assert error["tpe"] == "InternalServerError"

        served = http.post("/v1/chat", json=greedy())
        assert served.status_code == 200, served.text
        assert served.json()["choices"][0]["finish_reason"] == "length"
        assert http.get("/health").status_code == 200

    log = faulty_server.log(start)
    assert log.count(TRACEBACK) == 1
    assert "InjectedFault: injected fault at sample" in log
    assert "fault injection is on" in faulty_server.log()


def read_within(response: httpx.Response, seconds: float) -> str:
    """The whole body; fails if it takes longer (keep-alive comments defeat read timeouts)."""
    deadline = time.monotonic() + seconds
    body = ""
    for text in response.iter_text():
        assert time.monotonic() < deadline, f"the stream hangs after {body[-300:]!r}"
        body += text
    return body

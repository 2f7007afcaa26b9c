"""kill -9 under load loses no usage record of a request whose response completed.

Clients keep a server busy with whole and streamed generations, and others with a stream of
requests refused by a rate limit (fast answers, so records are written hundreds of times a
second). Once the load runs, a raw-socket client sends SIGKILL the instant it has read one
more response in full — the moment a record written after the response would most likely
still be in flight. `inkstand usage` on the data dir must then count at least every response
a client received completely (and at most one more per client: a request whose record was
committed just before the kill, but whose last bytes never left).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import writerai

from .support import MODEL, TALKATIVE, create_key, running_server, usage_report

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

GENERATORS = 4
REFUSED = 4


def generate(client: writerai.Writer, turn: int) -> None:
    if turn % 2:
        client.completions.create(model=MODEL, prompt="Ink", max_tokens=3)
    else:
        for _ in client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=3, stream=True):
            pass


def keep_busy(url: str, secret: str, request: Callable, completed: list[int]) -> None:
    with writerai.Writer(api_key=secret, base_url=url, max_retries=0, timeout=30) as client:
        turn = 0
        while True:
            turn += 1
            try:
                request(client, turn)
            except writerai.RateLimitError:
                pass  # a complete response all the same
            except (writerai.APIError, httpx.HTTPError):
                return  # the server is gone
            completed.append(1)


def refused(client: writerai.Writer, turn: int) -> None:
    client.models.list()


def kill_after_next_response(server, secret: str) -> None:
    """Read one complete response on a raw keep-alive socket, then SIGKILL the server."""
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += conn.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(next(
            line.split(b":")[1] for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ))  # fmt: skip
        while len(body) < length:
            body += conn.recv(65536)
        os.kill(server.process.pid, signal.SIGKILL)
    assert head.startswith(b"HTTP/1.1 429")


def test_completed_responses_survive_kill_9(tmp_path):
    with running_server(tmp_path, "--ctx-size", "512", "--threads", "1", key="unused") as server:
        busy, limited = create_key(server, "load"), create_key(server, "limited", "--rpm", "1")
        generated: list[int] = []
        rejected: list[int] = []
        plan = [(busy, generate, generated)] * GENERATORS + [(limited, refused, rejected)] * REFUSED
        clients = [
            threading.Thread(target=keep_busy, args=(server.url, key["secret"], fn, done))
            for key, fn, done in plan
        ]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 20
        while (len(generated) < 30 or len(rejected) < 300) and time.monotonic() < deadline:
            time.sleep(0.02)
        kill_after_next_response(server, limited["secret"])
        rejected.append(1)  # that response was complete too
        server.process.wait()
        for thread in clients:
            thread.join(timeout=30)
        assert len(generated) >= 30 and len(rejected) >= 300, "the load did not get going"
        for key, done, clients_of_key in (
            (busy, generated, GENERATORS),
            (limited, rejected, REFUSED),
        ):
            (total,) = usage_report(server.data_dir, "--key", key["id"])
            assert len(done) <= total["requests"] <= len(done) + clients_of_key, key["id"]

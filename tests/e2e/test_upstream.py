"""An upstream-backed model when its replicas fail: requests move, 503 when none is left,
a replica that comes back is used again; `inkstand status` shows replicas, never URLs to
clients.

One server in front of two real llama-server replicas (one thread each) of the embedded
model. The other scenarios run against such a server too (`server` fixture, "upstream").
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ..support.llama_servers import replicas
from .conftest import upstream_config
from .support import KEY, admin, assert_envelope, greedy, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    with replicas(2, ctx_size=1024, slots=2, log_dir=folder) as engines:
        config = folder / "upstream.toml"
        config.write_text(upstream_config([engine.url for engine in engines]))
        with running_server(folder, "--config", str(config), key=KEY) as server:
            server.upstreams = engines
            yield server, engines, config


# Conversations hash to replicas at random (the ports are): with 16, the chance that all
# land on one of two replicas is 2 in 65,536.
TOPICS = [
    "cats",
    "rain",
    "jazz",
    "maps",
    "salt",
    "owls",
    "figs",
    "moss",
    "tea",
    "ink",
    "wool",
    "clay",
    "reef",
    "kites",
    "bees",
    "dunes",
]


def ask(server, topic: str, **fields) -> httpx.Response:
    body = greedy(messages=[{"role": "user", "content": f"One word about {topic}."}], **fields)
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.url}/v1/chat", json=body, headers=headers, timeout=60)


def tasks(engine) -> int:
    """Requests the replica has started (its log says so for each)."""
    return engine.log().count("processing task")


def replica_states(server) -> list[dict]:
    headers = {"Authorization": f"Bearer {KEY}"}
    report = httpx.get(f"{server.url}/health", headers=headers, timeout=5).json()
    return report["upstreams"]["palmyra-x5"]


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_conversations_spread_over_both_replicas_and_stay_on_theirs(fleet):
    server, engines, _ = fleet
    before = [tasks(e) for e in engines]
    for topic in TOPICS:
        assert ask(server, topic).status_code == 200
    grown = [tasks(e) - b for e, b in zip(engines, before, strict=True)]
    assert all(g > 0 for g in grown), grown
    again = [tasks(e) for e in engines]
    for _ in range(3):
        assert ask(server, "cats").status_code == 200
    moved = [tasks(e) - a for e, a in zip(engines, again, strict=True)]
    assert sorted(moved) == [0, 3], moved  # one conversation, one replica


def test_a_killed_replica_fails_no_request_and_is_used_again_when_back(fleet):
    server, (first, second), _ = fleet
    first.kill()
    try:
        for topic in TOPICS:
            response = ask(server, topic)
            assert response.status_code == 200, response.text
        assert [r["up"] for r in replica_states(server)] == [False, True]
    finally:
        first.start()
    wait_for(lambda: all(r["up"] for r in replica_states(server)))
    before = tasks(first)
    for topic in TOPICS:
        assert ask(server, topic).status_code == 200
    assert tasks(first) > before


def test_with_every_replica_down_a_503_in_writers_envelope_comes_at_once(fleet):
    server, engines, _ = fleet
    for engine in engines:
        engine.kill()
    try:
        started = time.monotonic()
        response = ask(server, "cats")
        assert response.status_code == 503
        assert time.monotonic() - started < 10
        assert_envelope(response.json())
        assert response.headers.get("retry-after")
        assert "127.0.0.1" not in response.text
        wait_for(lambda: httpx.get(f"{server.url}/health", timeout=5).status_code == 503, 5)
        health = httpx.get(f"{server.url}/health", timeout=5)
        assert health.json()["models"]["palmyra-x5"] == "unavailable"
        assert "upstreams" not in health.json()  # no key: no replica detail
    finally:
        for engine in engines:
            engine.start()
    wait_for(lambda: all(r["up"] for r in replica_states(server)))
    assert ask(server, "cats").status_code == 200


def test_status_shows_each_replica_and_its_url_from_the_config(fleet):
    server, engines, config = fleet
    done = admin("status", "--url", server.url, "--api-key", KEY, "--config", str(config))
    report = json.loads(done.stdout)
    assert [r["url"] for r in report["upstreams"]["palmyra-x5"]] == [e.url for e in engines]
    assert report["models"] == {"palmyra-x5": "ready", "palmyra-x4": "ready"}


def test_a_client_leaving_cancels_the_engines_work(fleet):
    server, engines, _ = fleet
    essay = [{"role": "user", "content": "Write a very long essay about the history of the sea."}]
    body = greedy(messages=essay, max_tokens=900, stream=True)
    released = [releases(e) for e in engines]
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        chunks = (line for line in response.iter_lines() if line.startswith("data: {"))
        assert len([next(chunks) for _ in range(5)]) == 5
    wait_for(lambda: sum(map(len, map(releases, engines))) > sum(map(len, released)), 10)
    (line,) = [n for e, old in zip(engines, released, strict=True) for n in releases(e)[len(old) :]]
    held = int(line.split("n_tokens = ")[1].split(",")[0])
    assert held < 300, line  # the prompt and a second's tokens, not 900


def releases(engine) -> list[str]:
    """The replica's log lines for a slot that stopped work (`n_tokens` it held)."""
    return [line for line in engine.log().splitlines() if "stop processing" in line]


def test_cached_tokens_of_a_shared_engine_cache_are_not_told_to_keys(fleet):
    server, _, _ = fleet
    first = ask(server, "the same long question about lighthouses").json()
    again = ask(server, "the same long question about lighthouses").json()
    assert first["usage"]["prompt_tokens"] == again["usage"]["prompt_tokens"] > 0
    # llama-server reused the prefix, but its cache is every key's: nothing is reported.
    assert again["usage"]["prompt_token_details"]["cached_tokens"] == 0


def test_a_replica_dying_mid_answer_ends_the_stream_with_one_error_frame(fleet):
    server, engines, _ = fleet
    essay = [{"role": "user", "content": "Write a very long essay about the history of rivers."}]
    body = greedy(messages=essay, max_tokens=900, stream=True)
    busy = [len(e.log()) for e in engines]
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with (
            httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
            http.stream("POST", "/v1/chat", json=body) as response,
        ):
            lines = response.iter_lines()
            data = [line for line in (next(lines) for _ in range(12)) if line.startswith("data:")]
            assert data
            serving = max(engines, key=lambda e: len(e.log()) - busy[engines.index(e)])
            serving.kill()
            rest = list(lines)
        assert response.status_code == 200
        errors = [i for i, line in enumerate(rest) if line == "event: error"]
        assert len(errors) == 1, rest[-5:]
        payload = json.loads(rest[errors[0] + 1].removeprefix("data: "))
        assert_envelope(payload)
        assert "127.0.0.1" not in rest[errors[0] + 1]
    finally:
        for engine in engines:
            engine.start()
    wait_for(lambda: all(r["up"] for r in replica_states(server)))

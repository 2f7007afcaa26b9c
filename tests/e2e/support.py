"""Plain helpers for the end-to-end suite: run `inkstand serve`, read SSE, run programs.

Fixtures live in `conftest.py`; this module holds the code they (and a few tests) call.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INKSTAND = Path(sys.executable).parent / "inkstand"
READY_TIMEOUT = 60.0

KEY = "e2e-test-key"
CTX_SIZE = 1024
MODEL = "palmyra-x5"
AUTH = {"Authorization": f"Bearer {KEY}"}
# A prompt the model answers at length, so a small `max_tokens` ends it with `length`.
TALKATIVE = [{"role": "user", "content": "Write a long essay about the ocean."}]
# A prompt the model never stops answering at temperature 0: with a large `max_tokens` the
# request keeps a slot busy for most of a minute (or until its client leaves).
ESSAY = [{"role": "user", "content": "Write a very long essay about the history of printing."}]


def greedy(**fields) -> dict:
    """A small deterministic (temperature 0) chat request body; `fields` override."""
    return {"model": MODEL, "messages": TALKATIVE, "max_tokens": 8, "temperature": 0, **fields}


def stop_inside(text: str) -> str:
    """A word of `text` that first occurs after other text: a stop sequence it will meet."""
    for word in text.split()[1:]:
        if text.find(word) > 0:
            return word
    raise AssertionError(f"no usable stop sequence in {text!r}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Writer or Inkstand settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WRITER_", "INKSTAND_"))}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running `inkstand serve`; its stderr (the log) and stdout go to files in `folder`."""

    port: int
    data_dir: Path
    folder: Path
    process: subprocess.Popen
    upstreams: list = field(default_factory=list)  # llama-server replicas behind it, if any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr_path(self) -> Path:
        return self.folder / "stderr.log"

    @property
    def stdout_path(self) -> Path:
        return self.folder / "stdout.log"

    def log(self, since: int = 0) -> str:
        return self.stderr_path.read_text(errors="replace")[since:]

    def log_size(self) -> int:
        return len(self.log())

    def wait_for_log(
        self, pattern: str, since: int = 0, count: int = 1, timeout: float = 15.0
    ) -> list[re.Match]:
        """The matches of `pattern` in the log after `since`, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log(since), re.MULTILINE))
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"{pattern!r} is not logged:\n{self.log(since)}"
                return found
            time.sleep(0.1)

    def dump(self, lines: int = 150) -> str:
        tail = "\n".join(self.log().splitlines()[-lines:])
        out = self.stdout_path.read_text(errors="replace")
        return f"--- stderr (last {lines} lines) ---\n{tail}\n--- stdout ---\n{out}"


@contextmanager
def running_server(
    folder: Path, *flags: str, key: str | None = None, data_dir: Path | None = None
) -> Iterator[Server]:
    """Start `inkstand serve` on a free port, wait for `/health`, stop it afterwards.

    Logs go to `folder`; the data dir is `folder/data` unless given.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or folder / "data"
    port = free_port()
    argv = [str(INKSTAND), "serve", "--port", str(port), "--data-dir", str(data_dir), *flags]
    if key is not None:
        argv += ["--api-key", key]
    with open(folder / "stdout.log", "wb") as out, open(folder / "stderr.log", "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=clean_env())
        server = Server(port, data_dir, folder, process)
        try:
            wait_until_healthy(server)
            yield server
        finally:
            stop(process)


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"inkstand serve exited early:\n{server.dump()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"inkstand serve was not healthy after {READY_TIMEOUT} s:\n{server.dump()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- requests -----------------------------------------------------------------------------


def post(server: Server, body: dict, timeout: float = 60) -> httpx.Response:
    """POST a chat request to `server` with a client of its own (safe from any thread)."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=timeout) as http:
        return http.post("/v1/chat", json=body)


@contextmanager
def occupying(server: Server) -> Iterator[None]:
    """Hold a slot of `server` with a greedy essay stream; leaving closes it, which cancels it.

    The stream has sent its first chunk when this enters, so the request is generating. It
    asks for 4000 tokens, so the server needs a context (per sequence) of 4096.
    """
    body = greedy(messages=ESSAY, max_tokens=4000, stream=True)
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http,
        http.stream("POST", "/v1/chat", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        received = response.iter_raw()  # dropping this iterator would close the stream
        next(received)
        yield


def assert_envelope(payload: object) -> None:
    """`payload` is Writer's error envelope with at least one described error."""
    assert isinstance(payload, dict) and set(payload) == {"tpe", "errors", "extras"}
    assert isinstance(payload["tpe"], str) and payload["tpe"]
    assert isinstance(payload["extras"], dict)
    assert isinstance(payload["errors"], list) and payload["errors"]
    for error in payload["errors"]:
        assert set(error) == {"description", "key", "extras"}
        assert isinstance(error["description"], str) and error["description"].strip()
        assert isinstance(error["key"], str) and error["key"]
        assert isinstance(error["extras"], dict)


# -- server-sent events -------------------------------------------------------------------


def sse_events(raw: str) -> list[str]:
    """Split a complete SSE body into events, checking the framing Writer's SDK relies on.

    Every event is exactly one `data: ` line followed by a blank line; there are no `id:` or
    `event:` lines; the last event is `data: [DONE]`. Returns the data of every event.
    """
    assert raw.endswith("\n\n"), f"the stream does not end with a blank line: {raw[-80:]!r}"
    events = raw[:-2].split("\n\n")
    for event in events:
        lines = event.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), f"bad SSE event: {event!r}"
    assert events[-1] == "data: [DONE]"
    return [event.removeprefix("data: ") for event in events]


def stream_chunks(http: httpx.Client, body: dict) -> list[dict]:
    """POST a streaming chat request and return its parsed chunks (without `[DONE]`)."""
    with http.stream("POST", "/v1/chat", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    return [json.loads(data) for data in sse_events(raw)[:-1]]


def streamed_text(chunks: list[dict], index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


# -- /metrics -----------------------------------------------------------------------------

RUNNING = "inkstand:num_requests_running"
WAITING = "inkstand:num_requests_waiting"
PROMPT_TOKENS = "inkstand:prompt_tokens_total"
CACHED_TOKENS = "inkstand:prompt_tokens_cached_total"
GENERATED_TOKENS = "inkstand:generation_tokens_total"
REJECTIONS = "inkstand:queue_rejections_total"
CANCELLATIONS = "inkstand:cancellations_total"
AHEAD_TOKENS = "inkstand:prompt_tokens_decoded_ahead_total"


def scrape(server: Server) -> dict[str, float]:
    """The server's unlabelled Prometheus samples by name (a histogram gives `_count`, `_sum`)."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


def wait_for_metric(server: Server, name: str, value: float, timeout: float = 15.0) -> dict:
    """Scrape until `name` reads `value` (at most `timeout` seconds); return that scrape."""
    deadline = time.monotonic() + timeout
    while True:
        sample = scrape(server)
        if sample[name] == value or time.monotonic() > deadline:
            assert sample[name] == value, (
                f"{name} is {sample[name]}, not {value}, after {timeout} s"
            )
            return sample
        time.sleep(0.1)


def wait_until_idle(server: Server) -> dict:
    """Wait until `server` runs and queues nothing; return the last scrape."""
    wait_for_metric(server, RUNNING, 0)
    return wait_for_metric(server, WAITING, 0)


# -- programs run against the server ------------------------------------------------------

# Writer's examples send no `max_tokens` and sample at temperature 1. The embedded model used
# to talk until the context was full about 2 runs in 5 (examples/stream.py); with the server's
# sampling defaults (top_k, min_p, repeat_penalty) no run did in 100 (25 each of stream.py,
# chatbot.py, chat.py and `inkstand chat`), and 1 raw request in 160 with those prompts did.
# Such a run makes the SDK's stream helper raise LengthFinishReasonError, or the next turn of
# a chat no longer fit the context; only that outcome earns one more run.
RAMBLED = ("LengthFinishReasonError", "context window")


def run_program(
    argv: list[str], *, env: dict[str, str], stdin: str = "", attempts: int = 2
) -> subprocess.CompletedProcess:
    for _ in range(attempts):
        done = subprocess.run(
            argv, input=stdin, env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        if not any(marker in done.stderr for marker in RAMBLED):
            break
    return done


# -- the admin commands ---------------------------------------------------------------------


def admin(*argv: str) -> subprocess.CompletedProcess:
    """Run `inkstand <argv>` (keys, usage) to completion; fails the test on a non-zero exit."""
    done = subprocess.run(
        [str(INKSTAND), *argv], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"inkstand {' '.join(argv)}:\n{done.stderr}"
    return done


def create_key(server: Server, name: str, *flags: str) -> dict:
    """A new key in `server`'s data dir, made by `inkstand keys create --json`: id, secret."""
    done = admin(
        "keys", "create", "--data-dir", str(server.data_dir), "--name", name, "--json", *flags
    )
    return json.loads(done.stdout)


def usage_report(data_dir: Path, *flags: str) -> list[dict]:
    done = admin("usage", "--data-dir", str(data_dir), "--json", *flags)
    return json.loads(done.stdout)

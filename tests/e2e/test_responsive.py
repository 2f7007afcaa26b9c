"""A running stream keeps its pace while heavy requests arrive (issue 10, "Bounded work").

The house rule is to assert on structure, never on timing; this test is the exception the
issue asks for: "a running stream's inter-token p99 stays within 1.2x of its baseline while
such requests arrive". What it guards is where work runs (off the event loop and the engine
thread, or refused before it starts), which no structural assertion can see. On main, the
grammar attack below froze the loop for 0.6-0.8 s, 100,000 stop strings cost the engine
thread 92 ms a token and an 8 MB prompt was tokenized on the loop (2.1 s): this test's
attacked p99 there is ~33x the baseline; with tools planned on the loop again
(`--planner-processes 0`) it is ~5x.

How: a dedicated server (one llama.cpp thread, two slots) streams a greedy essay of
`MAX_TOKENS` tokens; the client timestamps every SSE `data:` frame as it arrives and takes
the gaps between them. In an attacked run a client thread sends, at fixed points of the
stream (counted in frames, so the machine's speed does not move them), prebuilt requests
over raw sockets: the grammar attack (20 tools of 20 strings of `maxLength` 1000, a 23 KB
body) twelve times, 100,000 `stop` strings once (refused by `max_json_values` before
they are parsed) and an 8 MB prompt once. Each must be refused with a 400 in Writer's
envelope naming its limit before the stream ends. The
attacked p99 must be within `RATIO` of the baseline p99.

Why those counts: p99 over the ~1,800 gaps of two runs ignores the 18 largest. The grammar
attack costs the loop nothing now (it is planned in a worker process), so sending it 24
times makes a stall per request blow p99. The two big bodies are sent once a run: reading
and parsing 8 MB of text, and counting the values of 1 MB of stop strings, is work the loop
cannot avoid (2-10 ms, one gap each), and four such gaps stay inside what p99 ignores.

Keeping it stable on a shared 2-core machine whose speed drifts:
- every run is the same work: a first (unmeasured) attacked run fills the prefix cache and
  warms the planner's worker, so every measured stream reuses the cached prompt;
- runs go baseline, attacked, attacked, baseline, so a drift in speed cancels out, and each
  side's gaps are pooled before taking p99 (one run's p99 alone moves by +-15 %);
- the client's own work is small: bodies are built before a run, sent from one thread with
  `sendall` (which releases the GIL), and the stream is read raw;
- other processes (another test session, a benchmark) take the second core the planner's
  worker needs: each run waits for them to go quiet (`QUIET_BUDGET_S` in all), and a run
  during which they used more than `FOREIGN_LIMIT` CPUs is done again, up to `ATTEMPTS`
  times. If one still is, the comparison is inconclusive (a disturbed baseline would make
  passing easy, a disturbed attacked run failing) and the test skips, saying how busy the
  machine was.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .support import AUTH, ESSAY, KEY, Server, assert_envelope, greedy, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

MAX_TOKENS = 900  # about 12 s a run; the prompt is 41 tokens of the 1024
STREAM = greedy(messages=ESSAY, max_tokens=MAX_TOKENS, stream=True)
RATIO = 1.2
FOREIGN_LIMIT = 0.25  # CPUs' worth of other processes' work that makes a run disturbed
ATTEMPTS = 3
QUIET_BUDGET_S = 120.0  # how long the test may wait in all for other processes to finish
TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory) -> Server:
    # Speculation off: the gaps measured are one token's each, and the streamed answer (the
    # same each run) must outlast the attacks, not come from the answer pool in bursts.
    flags = ("--slots", "2", "--ctx-size", "1024", "--threads", "1", "--speculate", "off")
    with running_server(tmp_path_factory.mktemp("responsive"), *flags, key=KEY) as server:
        yield server


# -- the heavy requests ---------------------------------------------------------------------


def grammar_attack(seed: str) -> dict:
    """20 tools of 20 strings of `maxLength` 1000: a 23 KB body, a multi-megabyte grammar."""
    strings = {f"p{j}": {"type": "string", "maxLength": 1000} for j in range(20)}
    parameters = {"type": "object", "properties": strings, "required": list(strings)}
    tools = [
        {"type": "function", "function": {"name": f"f{seed}_{i}", "parameters": parameters}}
        for i in range(20)
    ]
    return greedy(tools=tools, tool_choice="required", max_tokens=50)


def stops_attack(seed: str) -> dict:
    return greedy(stop=[f"s{seed}-{i}" for i in range(100_000)], max_tokens=50)


def prompt_attack(seed: str) -> dict:
    text = " ".join(f"w{seed}x{i}" for i in range(1_000_000))[:8_000_000]
    return greedy(messages=[{"role": "user", "content": text}], max_tokens=50)


def names_limit(limit: str) -> Callable[[dict], None]:
    def check(error: dict) -> None:
        assert error["extras"]["limit"] == limit, error
        assert f"`{limit}`" in error["description"]

    return check


def names_context(error: dict) -> None:
    assert error["key"] == "fail.badRequest.contextLengthExceeded", error
    assert "context window" in error["description"]


GRAMMAR = (grammar_attack, names_limit("max_grammar_bytes"))
STOPS = (stops_attack, names_limit("max_json_values"))
PROMPT = (prompt_attack, names_context)
# In the order they arrive, spread evenly over the stream (one every ~60 tokens).
ATTACKS = (*[GRAMMAR] * 4, STOPS, *[GRAMMAR] * 4, PROMPT, *[GRAMMAR] * 4)


@dataclass
class Attack:
    request: bytes
    check: Callable[[dict], None]
    answer: tuple[int, bytes] | None = None
    answered_at: float = 0.0


def attacks(server: Server, run: str) -> list[Attack]:
    return [
        Attack(request_bytes(server, make(f"{run}{i}")), check)
        for i, (make, check) in enumerate(ATTACKS)
    ]


def request_bytes(server: Server, body: dict) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST /v1/chat HTTP/1.1\r\nhost: 127.0.0.1:{server.port}\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + payload


def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send `request` whole and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        received = []
        while chunk := sock.recv(1 << 16):
            received.append(chunk)
    head, _, body = b"".join(received).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class Attacker:
    """Sends each attack from its own thread when the stream reaches its frame."""

    def __init__(self, port: int, planned: list[Attack]) -> None:
        self.port = port
        self.planned = planned
        step = MAX_TOKENS // (len(planned) + 1)
        self.marks = {step * (i + 1): i for i in range(len(planned))}
        self.due = [threading.Event() for _ in planned]
        self.thread = threading.Thread(target=self._send_all, daemon=True)

    def frame(self, count: int) -> None:
        if count in self.marks:
            self.due[self.marks[count]].set()

    def _send_all(self) -> None:
        for attack, due in zip(self.planned, self.due, strict=True):
            if not due.wait(120):
                return
            attack.answer = exchange(self.port, attack.request)
            attack.answered_at = time.perf_counter()


# -- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    kind: str  # "baseline" or "attacked"
    frames: list[float] = field(default_factory=list)  # arrival of every `data:` frame
    foreign_cpus: float = 0.0

    @property
    def gaps_ms(self) -> list[float]:
        """Inter-token gaps: without the opening chunk, the first token (TTFT), the closing
        chunk and `[DONE]`."""
        tokens = self.frames[2:-2]
        return [1000 * (b - a) for a, b in zip(tokens, tokens[1:], strict=False)]

    def describe(self) -> str:
        gaps = self.gaps_ms
        top = ", ".join(f"{gap:.0f}" for gap in sorted(gaps)[-6:])
        return (
            f"{self.kind}: {len(gaps)} gaps, median {statistics.median(gaps):.1f} ms, "
            f"p99 {p99(gaps):.1f} ms, largest {top}; other processes {self.foreign_cpus:.2f} CPUs"
        )


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def stream(server: Server, attacker: Attacker | None = None) -> list[float]:
    """Stream the essay; the arrival time of every `data:` frame."""
    frames: list[float] = []
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as http,
        http.stream("POST", "/v1/chat", json=STREAM) as response,
    ):
        assert response.status_code == 200, response.read()
        pending, closing = b"", b""
        for chunk in response.iter_raw():
            now = time.perf_counter()
            *events, pending = (pending + chunk).split(b"\n\n")
            for event in events:
                if event.startswith(b"data: "):
                    frames.append(now)
                    if attacker is not None:
                        attacker.frame(len(frames))
                    closing = event if event != b"data: [DONE]" else closing
    assert b'"finish_reason":"length"' in closing.replace(b" ", b""), closing
    return frames


def measure(server: Server, kind: str, planned: list[Attack] | None = None) -> Run:
    attacker = Attacker(server.port, planned) if planned is not None else None
    meter = CpuMeter(server)
    if attacker is not None:
        attacker.thread.start()
    run = Run(kind, stream(server, attacker))
    run.foreign_cpus = meter.foreign_cpus()
    if attacker is not None:
        attacker.thread.join(120)
        for attack in attacker.planned:
            check_refused(attack)
            assert attack.answered_at < run.frames[-1], "an attack was answered after the stream"
    return run


def check_refused(attack: Attack) -> None:
    assert attack.answer is not None, "an attack got no answer"
    status, body = attack.answer
    assert status == 400, body[:500]
    payload = json.loads(body)
    assert_envelope(payload)
    attack.check(payload["errors"][0])


def steady(server: Server, kind: str, quiet: Quiet) -> Run:
    """A run that other processes did not disturb, or the least disturbed of `ATTEMPTS`."""
    runs = []
    for _ in range(ATTEMPTS):
        planned = attacks(server, f"{time.monotonic_ns()}") if kind == "attacked" else None
        quiet.wait(server)
        run = measure(server, kind, planned)
        if run.foreign_cpus <= FOREIGN_LIMIT:
            return run
        runs.append(run)
    return min(runs, key=lambda r: r.foreign_cpus)


# -- other processes' CPU use ---------------------------------------------------------------


class CpuMeter:
    """CPUs' worth of work done by processes other than this one, the server and its
    children (the planner's worker) while the meter runs."""

    def __init__(self, server: Server) -> None:
        self.pids = [os.getpid(), server.process.pid]
        self.start = self._read()

    def _read(self) -> tuple[float, int, int]:
        with open("/proc/stat") as f:  # cpu user nice system idle iowait irq softirq steal
            times = [int(v) for v in f.readline().split()[1:9]]
        own = sum(_ticks(pid) for pid in self._tree())
        return time.monotonic(), sum(times) - times[3] - times[4], own

    def _tree(self) -> set[int]:
        tree = set(self.pids)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in self.pids:
                tree.add(int(stat.parent.name))
        return tree

    def foreign_cpus(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._read()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / TICKS / (t1 - t0))


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


@dataclass
class Quiet:
    """Waits, before a run, until other processes leave the CPUs alone; `budget_s` in all."""

    budget_s: float = QUIET_BUDGET_S

    def wait(self, server: Server) -> None:
        start = time.monotonic()
        while time.monotonic() - start < self.budget_s:
            meter = CpuMeter(server)
            time.sleep(0.5)
            if meter.foreign_cpus() <= FOREIGN_LIMIT:
                break
        self.budget_s = max(0.0, self.budget_s - (time.monotonic() - start))


# -- the test -------------------------------------------------------------------------------


def test_stream_keeps_its_pace_while_heavy_requests_arrive(paced_server):
    measure(paced_server, "warm-up", attacks(paced_server, "warm"))
    quiet = Quiet()
    kinds = ("baseline", "attacked", "attacked", "baseline")
    runs = [steady(paced_server, kind, quiet) for kind in kinds]
    pooled = {
        kind: [gap for run in runs if run.kind == kind for gap in run.gaps_ms]
        for kind in ("baseline", "attacked")
    }
    baseline, attacked = p99(pooled["baseline"]), p99(pooled["attacked"])
    report = "\n".join(run.describe() for run in runs)
    print(f"{report}\nattacked / baseline p99: {attacked / baseline:.2f}")  # shown with -s
    if any(run.foreign_cpus > FOREIGN_LIMIT for run in runs):
        pytest.skip(f"inconclusive: other processes kept the CPUs busy during a run\n{report}")
    assert attacked <= RATIO * baseline, (
        f"inter-token p99 {attacked:.1f} ms under attack vs {baseline:.1f} ms "
        f"(x{attacked / baseline:.2f}, limit x{RATIO}):\n{report}"
    )

"""Soak (issue 14): one real `inkstand serve`, 64 clients, a mixed workload, for minutes.

    .venv/bin/python bench/soak.py                            # 60 s warm-up, then 10 minutes
    .venv/bin/python bench/soak.py --minutes 2 --warmup 20    # a trial

One server on the embedded model (data dir in a temporary directory, one API key, every
other setting at its default), one small text file uploaded into a graph, then `--clients`
coroutines in one asyncio process, each sending one request after another until the time is
up (requests under way then finish). Each request is drawn from a seeded mix (`KINDS`):
whole and streamed chats, forced (`required` or named) and `auto` function tools, JSON
output (`response_format` `json_schema`), `/v1/completions`, `n` > 1 (and `best_of` 2), the
`graph` tool on the uploaded file, the `llm` tool delegating to `palmyra-x4`, and a few
requests that provoke a 400 or 401 on purpose. 20 % of the streams are closed after 2-4
events (the client disconnects mid-stream), 5 % of the whole requests are abandoned after
0.2-2 s, and `--slow-readers` of the clients stream short answers reading one event a second.
After a 503 a client waits for its `Retry-After` (at most 5 s).

Every answer is checked as it is read: status, SSE framing (only `data:`, `event:`, comment
and blank lines; JSON payloads; one response id; nothing after `[DONE]`), every choice's
closing chunk with a known finish reason, usage when asked for, `completion_tokens` within
`n * max_tokens`, JSON answers valid against their schema and tool calls naming an offered
function with JSON arguments (whenever the answer was not cut by `max_tokens`). An
unintended error is any failure of those checks, any 5xx, any 4xx not provoked on purpose,
an `event: error` frame, a transport error or timeout, or a stream without its `[DONE]` that
the client did not close. A 503 is intended only when the engine's wait line was full or the
request waited past `queue_timeout`, and only with a `Retry-After` header.

The server process's VmRSS, open descriptors and threads (and its worker processes' RSS) are
sampled every 10 s; start and end figures are taken with the server idle and no client
connection open: after the warm-up (the same mix for `--warmup` seconds) and after the last
request, once `/metrics` shows nothing running or waiting. At the end the server log is
searched for tracebacks and ERROR lines, and its access log's statuses are counted.

Before the server starts the run waits (within `--quiet-budget`) for idle CPUs; the CPUs the
server, this client and other processes used during the soak are reported, since on two cores
one busy neighbour slows everything many times over (docs/benchmarks.md, "Soak").

Pass: 0 unintended errors, RSS growth under 50 MB, descriptors within `FD_SLACK` of the start,
no traceback or ERROR line in the log, nothing running or waiting at the end. Results go to
`bench/results/soak-<UTC time>.json` (the server log beside it as `.log`) and a summary to
stdout; the exit status is 1 when a check failed.

The file is long for one entry point (what is sent, what comes back and its checks, the run,
the report) because each part is only used here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import host
import httpx
import jsonschema
import load
import uvloop
from servers import free_port, rss_mb, serving
from tool_cases import CHAT, FUNCTIONS, JSON_PROMPTS, NEEDS, SCHEMAS
from workload import TOPICS, Prompts

INKSTAND = str(Path(sys.executable).with_name("inkstand"))
RESULTS = Path(__file__).resolve().parent / "results"
MODEL, DELEGATE = "palmyra-x5", "palmyra-x4"
RSS_LIMIT_MB = 50.0
FD_SLACK = 4  # descriptors the end may hold beyond the start (a log rotation, a lazy import)
SAMPLE_EVERY_S = 10.0
FINISHES = {"stop", "length", "tool_calls"}
# The only 503s a client should get from the engine (engine.py, scheduler.py).
INTENDED_503 = {"requests are already waiting": "wait line full", "waited over": "queue_timeout"}
KINDS = {  # relative weights of each kind of request
    "chat": 18,
    "completions": 12,
    "tools-forced": 12,
    "tools-auto": 8,
    "json": 12,
    "n>1": 10,
    "graph": 6,
    "llm": 4,
    "provoked": 3,
}
DOCUMENT = """The Varnel Bridge

The Varnel Bridge crosses the river Ost at the town of Kell. It was built between 1871 and
1874 by the engineer Marta Lindqvist, who chose iron trusses because the river floods every
spring. The bridge is 212 metres long and has five spans.

In 1923 a flood damaged the second span. The town repaired it with steel from the Harro
works, and the repair is still visible as a darker section of the railing.

Today the bridge carries pedestrians and bicycles only. A small museum at its northern end
shows Lindqvist's drawings and a model of the original trusses.
"""
GRAPH_QUESTIONS = (
    "Who built the Varnel Bridge?",
    "When was the Varnel Bridge damaged?",
    "How long is the Varnel Bridge?",
    "What is at the northern end of the Varnel Bridge?",
    "What crosses the Varnel Bridge today?",
)


class Unintended(Exception):
    """An answer the soak did not ask for: the request counts as an unintended error."""


# ---- what is sent ------------------------------------------------------------------------


@dataclass
class Job:
    kind: str
    path: str
    body: dict
    n: int = 1
    expect: int = 200  # the status a provoked refusal must get
    headers: dict | None = None  # instead of the key's (a provoked 401)
    disconnect_after: int = 0  # close the connection after this many data events (0: never)
    abandon_after: float = 0.0  # give up a whole request after this many seconds (0: never)
    slow: bool = False  # read one event a second
    schema: dict | None = None  # the JSON answer's schema
    offered: tuple[str, ...] = ()  # function names offered
    forced: bool = False  # a tool call was required

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass
class Plan:
    """Draws jobs for one client from its own seeded generator."""

    rng: random.Random
    prompts: Prompts
    graph_id: str
    slow: bool
    disconnect_share: float

    def next(self) -> Job:
        if self.slow:
            job = self._slow()
        else:
            kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            job = getattr(self, "_" + kind.replace("-", "_").replace(">", "_"))()
            job.kind = kind
        if job.expect != 200:
            return job
        if job.stream and not job.slow and self.rng.random() < self.disconnect_share:
            job.disconnect_after = self.rng.randint(2, 4)
        elif not job.stream and self.rng.random() < 0.05:
            job.abandon_after = self.rng.uniform(0.2, 2.0)
        return job

    def _chat_body(self, messages: list[dict], lo: int, hi: int, **more) -> dict:
        body = {"model": MODEL, "messages": messages, "max_tokens": self.rng.randint(lo, hi)}
        body["temperature"] = self.rng.choice((0.0, 0.7))
        body["stream"] = self.rng.random() < 0.5
        if body["stream"]:
            body["stream_options"] = {"include_usage": True}
        return body | more

    def _question(self) -> list[dict]:
        return self.prompts.question(self.rng.randrange(len(TOPICS)))

    def _chat(self) -> Job:
        if self.rng.random() < 0.3:  # a long answer, cut by max_tokens
            messages = self.prompts.essay(self.rng.choice(TOPICS))
            return Job("chat", "/v1/chat", self._chat_body(messages, 64, 128))
        return Job("chat", "/v1/chat", self._chat_body(self._question(), 16, 96))

    def _completions(self, lo: int = 16, hi: int = 96, stream: bool | None = None) -> Job:
        topic = self.rng.choice(TOPICS)
        body = {
            "model": MODEL,
            "prompt": f"A short history of {topic}. It began when",
            "max_tokens": self.rng.randint(lo, hi),
            "temperature": self.rng.choice((0.0, 0.7)),
            "stream": self.rng.random() < 0.5 if stream is None else stream,
        }
        return Job("completions", "/v1/completions", body)

    def _tools(self, needed: str | None) -> tuple[list[dict], tuple[str, ...]]:
        names = [n for n in FUNCTIONS if n != needed]
        offered = self.rng.sample(names, 3 if needed is None else 2) + ([needed] if needed else [])
        self.rng.shuffle(offered)
        return [FUNCTIONS[n] for n in offered], tuple(offered)

    def _tools_forced(self) -> Job:
        prompt, needed = self.rng.choice(NEEDS)
        tools, offered = self._tools(needed)
        choice: object = "required"
        if self.rng.random() < 0.5:
            choice = {"type": "function", "function": {"name": needed}}
        messages = [{"role": "user", "content": prompt}]
        body = self._chat_body(messages, 128, 128, tools=tools, tool_choice=choice)
        return Job("tools-forced", "/v1/chat", body, offered=offered, forced=True)

    def _tools_auto(self) -> Job:
        if self.rng.random() < 0.5:
            prompt, needed = self.rng.choice(NEEDS)
        else:
            prompt, needed = self.rng.choice(CHAT), None
        tools, offered = self._tools(needed)
        messages = [{"role": "user", "content": prompt}]
        body = self._chat_body(messages, 64, 96, tools=tools, tool_choice="auto")
        return Job("tools-auto", "/v1/chat", body, offered=offered)

    def _json(self) -> Job:
        prompt, name = self.rng.choice(JSON_PROMPTS)
        schema = SCHEMAS[name]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
        messages = [{"role": "user", "content": prompt}]
        body = self._chat_body(messages, 128, 128, response_format=response_format)
        return Job("json", "/v1/chat", body, schema=schema)

    def _n_1(self) -> Job:
        if self.rng.random() < 0.3:  # best_of cannot be streamed
            job = self._completions(16, 48, stream=False)
            job.body["best_of"] = 2
            return job
        n = self.rng.randint(2, 4)
        body = self._chat_body(self._question(), 16, 48, n=n, temperature=0.8)
        return Job("n>1", "/v1/chat", body, n=n)

    def _graph(self) -> Job:
        tool = {
            "type": "graph",
            "function": {
                "graph_ids": [self.graph_id],
                "subqueries": False,
                "query_config": {"max_snippets": 3},
            },
        }
        messages = [{"role": "user", "content": self.rng.choice(GRAPH_QUESTIONS)}]
        return Job("graph", "/v1/chat", self._chat_body(messages, 32, 64, tools=[tool]))

    def _llm(self) -> Job:
        tool = {
            "type": "llm",
            "function": {"description": "Answers general questions briefly.", "model": DELEGATE},
        }
        return Job("llm", "/v1/chat", self._chat_body(self._question(), 32, 64, tools=[tool]))

    def _provoked(self) -> Job:
        body = self._chat_body(self._question(), 16, 16)
        case = self.rng.randrange(4)
        if case == 0:
            return Job("", "/v1/chat", body, expect=401, headers={"Authorization": "Bearer nope"})
        more = ({"max_tokens": 0}, {"n": 17}, {"model": "palmyra-nonesuch"})[case - 1]
        return Job("", "/v1/chat", body | more, expect=400)

    def _slow(self) -> Job:
        if self.rng.random() < 0.5:
            job = self._completions(16, 32, stream=True)
        else:
            job = Job("chat", "/v1/chat", self._chat_body(self._question(), 16, 32))
            job.body["stream"], job.body["stream_options"] = True, {"include_usage": True}
        job.kind, job.slow = "slow-reader", True
        return job


# ---- what comes back ---------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    stream: bool
    sent: float
    end: float = 0.0
    status: int = 0
    outcome: str = "ok"  # ok | disconnected | abandoned | provoked | overloaded | error
    error: str | None = None
    arrivals: list[float] = field(default_factory=list)  # non-empty deltas, n == 1 only
    first: float | None = None  # the first non-empty delta of any choice
    tokens: int | None = None
    finishes: list[str] = field(default_factory=list)
    retry_after: float = 0.0
    n: int = 1
    slow: bool = False
    events: int = 0  # data events read

    def record(self) -> dict:
        return {
            "kind": self.kind,
            "stream": self.stream,
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
            "ttft_s": self.ttft,
            "total_s": round(self.end - self.sent, 4),
            "tokens": self.tokens,
            "finishes": self.finishes,
        }

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else round(self.first - self.sent, 4)


class StreamCheck:
    """One SSE stream's framing and chunks, checked line by line as they are read."""

    def __init__(self, job: Job, result: Result) -> None:
        self.job, self.result = job, result
        self.chat = job.path == "/v1/chat"
        self.event, self.done, self.events = "message", False, 0
        self.response_id: str | None = None
        self.finish: dict[int, str] = {}
        self.text: dict[int, list[str]] = {}
        self.calls: dict[tuple[int, int], list[str]] = {}  # (choice, call) -> [name, args]
        self.usage: dict | None = None

    def feed(self, line: str) -> bool:
        """Check one line; True if it was a data event."""
        if self.done and line:
            raise Unintended(f"malformed SSE: {line[:80]!r} after [DONE]")
        if not line:
            self.event = "message"
        elif line.startswith(":"):
            pass  # a keep-alive
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self._data(line[5:].strip())
            return True
        else:
            raise Unintended(f"malformed SSE line {line[:80]!r}")
        return False

    def _data(self, data: str) -> None:
        self.events += 1
        self.result.events = self.events
        if data == "[DONE]":
            self.done = True
            return
        if self.event == "error":
            raise Unintended(f"event: error {data[:300]}")
        try:
            payload = json.loads(data)
        except ValueError:
            raise Unintended(f"malformed SSE data {data[:80]!r}") from None
        if self.chat:
            self._chunk(payload)
        elif set(payload) != {"value"} or not isinstance(payload["value"], str):
            raise Unintended(f"completion event is not {{'value': str}}: {data[:200]}")
        elif self.events == 1 and payload["value"]:
            raise Unintended("the first completion event is not empty")
        elif payload["value"]:
            self._arrived(0)

    def _chunk(self, chunk: dict) -> None:
        if chunk.get("object") != "chat.completion.chunk":
            raise Unintended(f"not a chunk: {json.dumps(chunk)[:200]}")
        if self.response_id is None:
            self.response_id = chunk["id"]
        elif chunk["id"] != self.response_id:
            raise Unintended("chunks of one stream with different ids")
        for choice in chunk["choices"]:
            index = choice["index"]
            if not 0 <= index < self.job.n or index in self.finish:
                raise Unintended(f"chunk for choice {index} (n={self.job.n}, after its finish?)")
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text.setdefault(index, []).append(delta["content"])
                self._arrived(index)
            for call in delta.get("tool_calls") or ():
                entry = self.calls.setdefault((index, call["index"]), ["", ""])
                function = call.get("function") or {}
                entry[0] += function.get("name") or ""
                entry[1] += function.get("arguments") or ""
                if function.get("arguments"):
                    self._arrived(index)
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]
        self.usage = chunk.get("usage") or self.usage

    def _arrived(self, index: int) -> None:
        now = time.perf_counter()
        if self.result.first is None:
            self.result.first = now
        if self.job.n == 1 and not self.job.slow:
            self.result.arrivals.append(now)

    def close(self) -> None:
        """The stream ended without the client closing it: was it complete?"""
        if not self.done:
            raise Unintended(f"stream ended without [DONE] after {self.events} events")
        if not self.chat:
            return
        for index in range(self.job.n):
            if index not in self.finish:
                raise Unintended(f"choice {index} has no closing chunk")
            calls = [v for (i, _), v in sorted(self.calls.items()) if i == index]
            check_answer(self.job, self.finish[index], "".join(self.text.get(index, [])), calls)
        self.result.finishes = [self.finish[i] for i in range(self.job.n)]
        check_usage(self.job, self.usage, self.result)


def check_answer(job: Job, finish: str, content: str, calls: list[list[str]]) -> None:
    """What an answer that was not cut short must hold, whatever its words."""
    if finish not in FINISHES:
        raise Unintended(f"finish_reason {finish!r}")
    if job.forced and finish == "stop":
        raise Unintended("a forced tool call ended with `stop`")
    if finish == "tool_calls" and job.offered:
        if not calls:
            raise Unintended("finish_reason tool_calls without a tool call")
        for name, arguments in calls:
            if name not in job.offered:
                raise Unintended(f"a call to {name!r}, which was not offered")
            try:
                json.loads(arguments)
            except ValueError:
                raise Unintended(f"tool call arguments are not JSON: {arguments[:200]}") from None
    if job.schema is not None and finish == "stop":
        try:
            jsonschema.validate(json.loads(content), job.schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            raise Unintended(f"JSON answer off its schema: {str(exc)[:200]}") from None


def check_usage(job: Job, usage: dict | None, result: Result) -> None:
    if usage is None:
        raise Unintended("no usage although it was asked for")
    result.tokens = usage["completion_tokens"]
    # The llm tool's usage adds the prompt-writing generation's tokens.
    if job.kind != "llm" and result.tokens > job.n * job.body["max_tokens"]:
        raise Unintended(f"completion_tokens {result.tokens} > n * max_tokens")


def check_whole(job: Job, answer: dict, result: Result) -> None:
    if job.path == "/v1/completions":
        if not isinstance(answer["choices"][0]["text"], str):
            raise Unintended("a completion without text")
        return
    if answer.get("object") != "chat.completion" or len(answer["choices"]) != job.n:
        raise Unintended(f"not a chat.completion of {job.n} choices: {json.dumps(answer)[:200]}")
    for index, choice in enumerate(answer["choices"]):
        message = choice["message"]
        calls = [
            [c["function"]["name"], c["function"]["arguments"]]
            for c in message.get("tool_calls") or ()
        ]
        if choice["index"] != index:
            raise Unintended("choices out of order")
        check_answer(job, choice["finish_reason"], message.get("content") or "", calls)
        result.finishes.append(choice["finish_reason"])
    check_usage(job, answer.get("usage"), result)


def check_refusal(job: Job, response: httpx.Response, result: Result) -> None:
    """A non-200 answer: provoked, an intended 503, or an unintended error."""
    result.status = response.status_code
    try:
        description = response.json()["errors"][0]["description"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise Unintended(f"HTTP {response.status_code} without the error envelope") from None
    if response.status_code == job.expect:
        result.outcome = "provoked"
        return
    if response.status_code == 503:
        reason = next((v for k, v in INTENDED_503.items() if k in description), None)
        retry_after = response.headers.get("retry-after", "")
        if not retry_after.isdigit():
            raise Unintended(f"503 without a Retry-After header: {description[:200]}")
        if reason is not None:
            result.outcome, result.error = "overloaded", reason
            result.retry_after = float(retry_after)
            return
    raise Unintended(f"HTTP {response.status_code}: {description[:300]}")


async def execute(
    client: httpx.AsyncClient, base_url: str, key: str, job: Job, result: Result
) -> None:
    """Send one job and check its answer into `result`; never raises for the server."""
    result.slow = job.slow
    headers = job.headers or {"Authorization": f"Bearer {key}"}
    try:
        if job.stream:
            await _stream(client, base_url + job.path, headers, job, result)
        elif job.abandon_after:
            try:
                await asyncio.wait_for(
                    _whole(client, base_url, headers, job, result), job.abandon_after
                )
            except TimeoutError:
                result.outcome = "abandoned"
        else:
            await _whole(client, base_url, headers, job, result)
    except Unintended as exc:
        result.outcome, result.error = "error", str(exc)
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        result.outcome, result.error = "error", f"{type(exc).__name__}: {exc}"[:300]
    result.end = time.perf_counter()


async def _whole(client, base_url: str, headers: dict, job: Job, result: Result) -> None:
    response = await client.post(base_url + job.path, json=job.body, headers=headers)
    if response.status_code != 200:
        check_refusal(job, response, result)
        return
    result.status = 200
    if job.expect != 200:
        raise Unintended(f"200 where {job.expect} was provoked")
    check_whole(job, response.json(), result)


async def _stream(client, url: str, headers: dict, job: Job, result: Result) -> None:
    async with client.stream("POST", url, json=job.body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            check_refusal(job, response, result)
            return
        result.status = 200
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise Unintended(f"a stream of {response.headers.get('content-type')}")
        check = StreamCheck(job, result)
        async for line in response.aiter_lines():
            if not check.feed(line):
                continue
            if job.slow:
                await asyncio.sleep(1.0)
            if job.disconnect_after and check.events >= job.disconnect_after and not check.done:
                result.outcome = "disconnected"
                return  # leaving the block closes the connection mid-stream
        check.close()


# ---- the run -----------------------------------------------------------------------------


def workers(pid: int) -> list[int]:
    """The server's child processes (planner, ingestion, multiprocessing's tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):  # gone meanwhile
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


def descriptors(pid: int) -> Counter:
    """The server's open descriptors by kind: socket, pipe, anon_inode:[eventfd], a path."""
    kinds: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds[re.sub(r":\[\d+\]$", "", target)] += 1
    return kinds


def process_figures(pid: int) -> dict:
    """RSS, descriptors and threads of the server, and its worker processes' RSS."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    children = []
    for child in workers(pid):
        with contextlib.suppress(OSError, RuntimeError):  # gone, or a zombie without VmRSS
            children.append(rss_mb(child))
    fds = descriptors(pid)
    return {
        "rss_mb": round(rss_mb(pid), 1),
        "fds": sum(fds.values()),
        "fds_not_sockets": sum(n for kind, n in fds.items() if kind != "socket"),
        "threads": threads,
        "workers_rss_mb": round(sum(children), 1),
        "workers": len(children),
        "fd_kinds": dict(sorted(fds.items())),
    }


async def sample(pid: int, start: float, timeline: list[dict]) -> None:
    while True:
        figures = process_figures(pid)
        del figures["fd_kinds"]
        timeline.append({"t_s": round(time.monotonic() - start)} | figures)
        await asyncio.sleep(SAMPLE_EVERY_S)


async def phase(args, base_url: str, key: str, graph_id: str, seconds: float, seed: int) -> list:
    """Every client sends requests until `seconds` are over; the results of all of them."""
    deadline = time.monotonic() + seconds
    results: list[Result] = []
    prompts = Prompts(start=seed * 1_000_000)

    async def client_loop(i: int, client: httpx.AsyncClient) -> None:
        plan = Plan(
            random.Random(seed * 1000 + i),
            prompts,
            graph_id,
            i < args.slow_readers,
            args.disconnect_share,
        )
        while time.monotonic() < deadline:
            job = plan.next()
            result = running[i] = Result(job.kind, job.stream, time.perf_counter(), n=job.n)
            await execute(client, base_url, key, job, result)
            results.append(running.pop(i))
            if result.outcome == "overloaded":
                await asyncio.sleep(min(result.retry_after, 5.0))

    running: dict[int, Result] = {}
    async with load.open_client(args.clients) as client:
        loops = [client_loop(i, client) for i in range(args.clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*loops), seconds + args.grace)
        except TimeoutError:  # hung or crawling: say which, rather than wait forever
            for result in running.values():
                age = time.perf_counter() - result.sent
                result.outcome = "error"
                result.error = f"unfinished {age:.0f} s after it was sent ({result.events} events)"
                results.append(result)
    return results


async def settle(client: httpx.AsyncClient, base_url: str, key: str) -> dict:
    """Wait until nothing runs or waits in the engine; the gauges and counters then."""
    metrics: dict = {}
    for _ in range(60):
        text = (
            await client.get(base_url + "/metrics", headers={"Authorization": f"Bearer {key}"})
        ).text
        metrics = {
            name: float(value)
            for name, value in re.findall(r"^inkstand:(\w+?)(?:_total)? ([\d.e+-]+)$", text, re.M)
        }
        if not metrics.get("num_requests_running") and not metrics.get("num_requests_waiting"):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3.0)  # closed connections and finished requests let go of their memory
    return metrics


async def soak(args, server, key: str, graph_id: str) -> dict:
    start = time.monotonic()
    timeline: list[dict] = []
    sampler = asyncio.create_task(sample(server.pid, start, timeline))
    async with httpx.AsyncClient(trust_env=False, timeout=30) as admin:
        warm = await phase(args, server.base_url, key, graph_id, args.warmup, args.seed)
        metrics_before = await settle(admin, server.base_url, key)
        before = process_figures(server.pid)
        cpu = CpuUse(server.pid)
        main = await phase(args, server.base_url, key, graph_id, args.minutes * 60, args.seed + 1)
        cpu_used = cpu.stop()
        metrics = await settle(admin, server.base_url, key)
        after = process_figures(server.pid)
    sampler.cancel()
    generated = metrics.get("generation_tokens", 0) - metrics_before.get("generation_tokens", 0)
    return {
        "warmup": warm,
        "soak": main,
        "soak_s": cpu_used["seconds"],
        "cpu": cpu_used,
        "generated_tokens": generated,
        "before": before,
        "after": after,
        "metrics": metrics,
        "timeline": timeline,
    }


class CpuUse:
    """CPU seconds of the server (and its workers), of this client, and of everything else."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = time.monotonic()
        self.pids = [pid, *workers(pid), os.getpid()]
        self.meter = host.CpuMeter(self.pids)
        self.server = self._server()
        self.client = time.process_time()

    def _server(self) -> float:
        total = 0.0
        for pid in self.pids[:-1]:
            with contextlib.suppress(OSError):
                total += host.cpu_seconds(pid)
        return total

    def stop(self) -> dict:
        seconds = time.monotonic() - self.start
        return {
            "seconds": round(seconds, 1),
            "server_cpus": round((self._server() - self.server) / seconds, 2),
            "client_cpus": round((time.process_time() - self.client) / seconds, 3),
            "other_cpus": round(self.meter.foreign_cpus(), 2),
        }


def upload(base_url: str, key: str) -> str:
    """The small document into a new graph; the graph's id once it is ingested."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60, trust_env=False) as http:
        created = http.post("/v1/graphs", json={"name": "soak"})
        created.raise_for_status()
        graph_id = created.json()["id"]
        http.post(
            "/v1/files",
            params={"graphId": graph_id},
            content=DOCUMENT.encode(),
            headers={"Content-Disposition": "attachment; filename=varnel.txt"},
        ).raise_for_status()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/graphs/{graph_id}").json()["file_status"]["in_progress"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the file was not ingested in 60 s")
            time.sleep(0.2)
        if http.get(f"/v1/graphs/{graph_id}").json()["file_status"]["completed"] != 1:
            raise RuntimeError("the file failed to ingest")
    return graph_id


def read_log(log: Path) -> dict:
    """Tracebacks, ERROR lines, WARNING lines and the access log's statuses."""
    lines = log.read_text(errors="replace").splitlines()
    errors = [x for x in lines if re.match(r"\S+ \S+ (ERROR|CRITICAL) ", x)]
    warnings = Counter(" ".join(x.split()[3:8]) for x in lines if re.match(r"\S+ \S+ WARNING ", x))
    statuses = Counter(
        m.group(1) for x in lines if (m := re.search(r"inkstand\.access: \S+ \S+ (\d{3}) ", x))
    )
    return {
        "tracebacks": sum("Traceback (most recent call last)" in x for x in lines),
        "error_lines": errors[:50],
        "errors": len(errors),
        "warnings": dict(warnings.most_common(10)),
        "access_statuses": dict(sorted(statuses.items())),
    }


# ---- the report --------------------------------------------------------------------------


def tally(results: list[Result]) -> dict:
    kinds: dict[str, Counter] = {}
    for r in results:
        kinds.setdefault(r.kind, Counter())[r.outcome] += 1
    return {k: dict(v) | {"sent": sum(v.values())} for k, v in sorted(kinds.items())}


def latency(results: list[Result]) -> dict:
    """TTFT of every stream read at full speed that got a token; gaps of n == 1 ones."""
    streams = [r for r in results if r.stream and not r.slow and r.first is not None]
    ttft = [r.first - r.sent for r in streams if r.first is not None]
    gaps = [b - a for r in streams for a, b in zip(r.arrivals, r.arrivals[1:], strict=False)]
    by_kind: dict[str, list[float]] = {}
    for r in streams:
        by_kind.setdefault(r.kind, []).append((r.first or 0.0) - r.sent)
    ms = lambda values, q: round(load.percentile(values, q) * 1000, 1)  # noqa: E731
    return {
        "streams": len(streams),
        "ttft_p50_ms": ms(ttft, 50),
        "ttft_p99_ms": ms(ttft, 99),
        "itl_p50_ms": ms(gaps, 50),
        "itl_p99_ms": ms(gaps, 99),
        "gaps": len(gaps),
        "ttft_p50_ms_by_kind": {k: ms(v, 50) for k, v in sorted(by_kind.items())},
    }


def memory(run: dict) -> dict:
    before, after = run["before"], run["after"]
    kinds = set(before["fd_kinds"]) | set(after["fd_kinds"])
    fd_diff = {
        k: after["fd_kinds"].get(k, 0) - before["fd_kinds"].get(k, 0)
        for k in sorted(kinds)
        if after["fd_kinds"].get(k, 0) != before["fd_kinds"].get(k, 0)
    }
    return {
        "start": before,
        "end": after,
        "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 1),
        "fd_growth": after["fds"] - before["fds"],
        "fd_growth_by_kind": fd_diff,
        "rss_peak_mb": max(s["rss_mb"] for s in run["timeline"]),
        "fds_peak": max(s["fds"] for s in run["timeline"]),
    }


def summarize(run: dict, logged: dict) -> dict:
    everything = run["warmup"] + run["soak"]
    errors = [r for r in everything if r.outcome == "error"]
    mem, metrics = memory(run), run["metrics"]
    server_5xx = sum(n for s, n in logged["access_statuses"].items() if s >= "500" and s != "503")
    checks = {
        "unintended errors = 0": len(errors) == 0,
        "server 5xx other than 503 = 0 (access log)": server_5xx == 0,
        f"RSS growth < {RSS_LIMIT_MB:g} MB": mem["rss_growth_mb"] < RSS_LIMIT_MB,
        f"descriptors flat (growth <= {FD_SLACK})": mem["fd_growth"] <= FD_SLACK,
        "no traceback or ERROR line in the log": not logged["tracebacks"] and not logged["errors"],
        "nothing running or waiting at the end": not metrics.get("num_requests_running")
        and not metrics.get("num_requests_waiting"),
    }
    soak_results, seconds = run["soak"], run["soak_s"]
    return {
        "minutes": round(seconds / 60, 2),
        "requests": len(soak_results),
        "warmup_requests": len(run["warmup"]),
        "requests_per_s": round(len(soak_results) / seconds, 2),
        "generated_tokens_per_s": round(run["generated_tokens"] / seconds, 1),
        "cpu": run["cpu"],
        "kinds": tally(soak_results),
        "unintended_errors": len(errors),
        "error_samples": Counter(f"{r.kind}: {r.error}" for r in errors).most_common(20),
        "overloaded_503": dict(Counter(r.error for r in everything if r.outcome == "overloaded")),
        "memory": mem,
        "latency": latency(soak_results),
        "metrics_end": {k: v for k, v in metrics.items() if not k.endswith("_created")},
        "log": logged,
        "checks": checks,
        "passed": all(checks.values()),
    }


def show(s: dict) -> None:
    cpu = s["cpu"]
    print(
        f"\nsoak: {s['minutes']} min until the last answer, {s['requests']} requests "
        f"({s['requests_per_s']}/s, "
        f"{s['generated_tokens_per_s']} generated tokens/s) after {s['warmup_requests']} in "
        f"the warm-up; CPUs used: server {cpu['server_cpus']}, client {cpu['client_cpus']}, "
        f"other processes {cpu['other_cpus']}"
    )
    outcomes = ("ok", "disconnected", "abandoned", "provoked", "overloaded", "error")
    print(f"{'kind':<14}{'sent':>6}" + "".join(f"{o:>13}" for o in outcomes))
    for kind, counts in s["kinds"].items():
        row = "".join(f"{counts.get(o, 0):>13}" for o in outcomes)
        print(f"{kind:<14}{counts['sent']:>6}{row}")
    print(f"unintended errors: {s['unintended_errors']}")
    for text, count in s["error_samples"]:
        print(f"  {count} x {text}")
    print(f"503 (intended, with Retry-After): {s['overloaded_503'] or 0}")
    m, start, end = s["memory"], s["memory"]["start"], s["memory"]["end"]
    print(
        f"RSS {start['rss_mb']} -> {end['rss_mb']} MB ({m['rss_growth_mb']:+}), peak "
        f"{m['rss_peak_mb']}; descriptors {start['fds']} -> {end['fds']} "
        f"{m['fd_growth_by_kind'] or ''} (peak {m['fds_peak']}); threads {start['threads']} -> "
        f"{end['threads']}; workers' RSS {start['workers_rss_mb']} -> {end['workers_rss_mb']} MB"
    )
    lat = s["latency"]
    print(
        f"streams: TTFT p50 {lat['ttft_p50_ms']} ms, p99 {lat['ttft_p99_ms']} ms; "
        f"inter-token p50 {lat['itl_p50_ms']} ms, p99 {lat['itl_p99_ms']} ms "
        f"({lat['streams']} streams, {lat['gaps']} gaps)"
    )
    print(f"TTFT p50 by kind (ms): {lat['ttft_p50_ms_by_kind']}")
    log = s["log"]
    print(
        f"server log: {log['tracebacks']} tracebacks, {log['errors']} ERROR lines, "
        f"warnings {log['warnings']}, access statuses {log['access_statuses']}"
    )
    for line in log["error_lines"][:10]:
        print(f"  {line[:200]}")
    for name, ok in s["checks"].items():
        print(f"  [{'pass' if ok else 'FAIL'}] {name}")


def commit() -> str:
    """The checked-out commit, read from .git without running git."""
    git = Path(__file__).resolve().parents[1] / ".git"
    with contextlib.suppress(OSError):
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return "unknown"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the soak, after warm-up")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of the same mix")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--slow-readers", type=int, default=4, help="of the clients")
    parser.add_argument("--disconnect-share", type=float, default=0.2, help="of the streams")
    parser.add_argument(
        "--grace",
        type=float,
        default=180.0,
        help="seconds past the end for requests under way to finish",
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--quiet-budget", type=float, default=300.0, help="max seconds to wait for idle CPUs"
    )
    return parser.parse_args()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server still stops
    args = parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    busy_at_start = host.Quiet(args.quiet_budget).wait()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        key, port = secrets.token_urlsafe(24), free_port()
        cmd = [INKSTAND, "serve", "--port", str(port), "--data-dir", f"{tmp}/data"]
        log = Path(tmp) / "inkstand.log"
        started = datetime.now(UTC).isoformat(timespec="seconds")
        load_before = os.getloadavg()
        with serving(
            "inkstand", [*cmd, f"--api-key={key}"], port, ready_path="/health", log=log
        ) as server:
            graph_id = upload(server.base_url, key)
            run = uvloop.run(soak(args, server, key, graph_id))
        shutil.copy(log, RESULTS / f"soak-{stamp}.log")
        logged = read_log(log)
    summary = summarize(run, logged)
    summary["load_avg_before"] = load_before
    summary["busy_cpus_at_start"] = round(busy_at_start, 2)
    summary["load_avg_after"] = os.getloadavg()
    show(summary)
    result = {
        "config": vars(args)
        | {
            "command": cmd + ["--api-key", "..."],
            "started": started,
            "commit": commit(),
            "host": host.describe(),
        },
        "summary": summary,
        "timeline": run["timeline"],
        "requests": [r.record() for r in run["warmup"] + run["soak"]],
    }
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""How long each kind of heavy request holds the server's event loop (issue 10, "Bounded work").

    .venv/bin/python bench/loop_hold.py                  # ~4 minutes; a Markdown table
    .venv/bin/python bench/loop_hold.py --repeats 9 --only "10 MiB"

The app is built as `inkstand serve` builds it: default settings (`max_body_bytes` 10 MiB,
`ctx_size` 4096, `max_tools` 128 ...), the embedded model loaded in the background, the
planner's worker process; uvicorn serves it with Inkstand's HTTP protocol (`api/protocol.py`)
on this process's uvloop, on 127.0.0.1. A heartbeat task on the same loop sleeps 1 ms at a
time and records the gaps between its wake-ups. While one request is handled, the longest
gap is how long the loop was held at a stretch: no other client got a byte meanwhile, and a
running stream's next token waited that long. The sum of the gaps over 2 ms is the loop's
time lost to the request in all (the engine thread holding the GIL between its C calls
counts too). The `idle` row is the floor: timer granularity and scheduling.

Requests come from a client thread over a raw socket (`Connection: close`, the bytes built
before the clock starts), so the client costs this process next to nothing: socket calls
release the GIL. Each kind is sent once unmeasured, then `--repeats` times, one at a time,
each after the CPUs are idle (`host.Quiet`); a request during which other processes used
more than `FOREIGN_LIMIT` CPUs is done again with a fresh body (twice at most). The table
shows the median and the worst longest hold, the median sum, the client's latency, the
status (with the limit a 400 names, or its error key) and this process's RSS afterwards.

Results go to stdout and bench/results/loop_hold-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import host
import report
import uvicorn
import uvloop

from inkstand.api.protocol import Limits, protocol_class
from inkstand.app import create_app
from inkstand.config import Settings, default_models
from inkstand.store import open_store

HOST = "127.0.0.1"
KEY = "bench-loop-hold"
MODEL = "palmyra-x5"
BEAT_S = 0.001
FOREIGN_LIMIT = 0.2  # CPUs of other processes' work above which a request is redone
DEFAULTS = Settings()


# -- request bodies -------------------------------------------------------------------------


def chat(**fields) -> dict:
    """A greedy one-token chat request; `fields` override."""
    messages = [{"role": "user", "content": "Say hello."}]
    return {"model": MODEL, "messages": messages, "max_tokens": 1, "temperature": 0, **fields}


def text_of(size: int, seed: int) -> str:
    """`size` ASCII characters of varied words (a repeated word would tokenize unusually),
    after `seed`, so that no two seeds share a cached prefix and all tokenize alike."""
    words = [f"{seed:08d}", *(f"w{i % 997}" for i in range(size // 3 + 1))]
    return " ".join(words)[:size]


def messages_body(seed: int) -> dict:
    """`max_messages` messages whose text fills the body to just under `max_body_bytes`."""
    count = DEFAULTS.max_messages
    each = (DEFAULTS.max_body_bytes - 4096) // count - 40
    messages = [{"role": "user", "content": text_of(each, seed + i)} for i in range(count)]
    return chat(messages=messages)


def ignored_body(seed: int) -> dict:
    """A small chat padded to just under `max_body_bytes` with a key the server ignores."""
    return chat(padding=text_of(DEFAULTS.max_body_bytes - 4096, seed))


# Placeholders for `small_values(...)` in a body until it is sent (json.dumps of millions of
# dicts would take longer than the run): as many as fill the body, or as many as
# `max_json_values` allows in a small chat (`{"a":[]}` counts 3: `:`, `[`, `,`).
SMALL_VALUES = "@small-values@"
VALUES_AT_CAP = "@values-at-cap@"
PLACEHOLDERS = {
    SMALL_VALUES: (DEFAULTS.max_body_bytes - 4096) // 9,
    VALUES_AT_CAP: (DEFAULTS.max_json_values - 500) // 3,
}


def small_values(count: int) -> str:
    """A JSON array of `count` tiny objects: the most values per byte."""
    return "[" + ",".join(['{"a":[]}'] * count) + "]"


def ignored_values_body(seed: int, values: str = SMALL_VALUES) -> dict:
    """A small chat with a key the server ignores holding small values."""
    return chat(padding=values)


def schema_default_body(seed: int, values: str = SMALL_VALUES) -> dict:
    """One tool whose schema's `default` (an annotation: no grammar) holds small values."""
    body = tools_body(seed)
    body["tools"] = body["tools"][:1]
    body["tools"][0]["function"]["parameters"]["default"] = values
    return body


def format_default_body(seed: int, values: str = SMALL_VALUES) -> dict:
    """A JSON response format whose schema's `default` holds small values."""
    schema = {"type": "object", "properties": MODERATE, "default": values, "title": str(seed)}
    return chat(response_format={"type": "json_schema", "json_schema": {"schema": schema}})


def graph_data_body(seed: int) -> dict:
    """A replayed assistant message whose `graph_data` (Writer's, ignored on input) holds
    small values."""
    messages = [
        {"role": "user", "content": "What do the files say?"},
        {"role": "assistant", "content": "They say hello.", "graph_data": SMALL_VALUES},
        {"role": "user", "content": "Thanks."},
    ]
    return chat(messages=messages)


def prompt_body(seed: int, chars: int) -> dict:
    """One user message of `chars` characters."""
    return chat(messages=[{"role": "user", "content": text_of(chars, seed)}])


def stops_body(seed: int) -> dict:
    return chat(stop=[f"s{seed}-{i}" for i in range(100_000)])


def tool(name: str, properties: dict) -> dict:
    parameters = {"type": "object", "properties": properties, "required": list(properties)}
    return {
        "type": "function",
        "function": {"name": name, "description": f"Tool {name}.", "parameters": parameters},
    }


MODERATE = {
    "city": {"type": "string", "description": "A city name."},
    "days": {"type": "integer", "minimum": 1, "maximum": 14},
    "units": {"type": "string", "enum": ["metric", "imperial"]},
    "detailed": {"type": "boolean"},
    "fields": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
}


def tools_body(seed: int) -> dict:
    """`max_tools` tools of five moderate properties each (names differ by `seed`)."""
    tools = [tool(f"tool_{seed}_{i}", MODERATE) for i in range(DEFAULTS.max_tools)]
    return chat(tools=tools, tool_choice="auto")


def grammar_attack_body(seed: int) -> dict:
    """20 tools of 20 strings of `maxLength` 1000: a 23 KB body, a multi-megabyte grammar."""
    strings = {f"p{j}": {"type": "string", "maxLength": 1000} for j in range(20)}
    return chat(tools=[tool(f"attack_{seed}_{i}", strings) for i in range(20)])


def described_tools_body(seed: int) -> dict:
    """`max_tools` small tools whose descriptions fill the body (they are not grammar)."""
    each = (DEFAULTS.max_body_bytes - 65536) // DEFAULTS.max_tools
    tools = [tool(f"tool_{seed}_{i}", {"q": {"type": "string"}}) for i in range(DEFAULTS.max_tools)]
    for i, entry in enumerate(tools):
        entry["function"]["description"] = text_of(each, seed + i)
    return chat(tools=tools)


def arguments_body(seed: int) -> dict:
    """A replayed tool call whose `arguments` (a JSON array of numbers) fill the body; the
    prompt re-encodes them."""
    count = (DEFAULTS.max_body_bytes - 4096) // 7  # "123456," is 7 bytes
    arguments = json.dumps({"values": [100_000 + i % 800_000 for i in range(count)]},
                           separators=(",", ":"))  # fmt: skip
    call = {"id": f"call_{seed}", "type": "function",
            "function": {"name": "lookup", "arguments": arguments}}  # fmt: skip
    messages = [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{seed}", "name": "lookup", "content": "done"},
    ]
    return chat(messages=messages)


# -- requests on the wire -------------------------------------------------------------------


def post(port: int, body: dict) -> bytes:
    text = json.dumps(body, separators=(",", ":"))
    for placeholder, count in PLACEHOLDERS.items():
        text = text.replace(f'"{placeholder}"', small_values(count))
    payload = text.encode()
    head = (
        f"POST /v1/chat HTTP/1.1\r\nhost: {HOST}:{port}\r\nauthorization: Bearer {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + payload


def maximal_head(port: int, seed: int) -> bytes:
    """GET /v1/models with a target of `max_request_line_bytes` and headers filling
    `max_header_bytes` in `max_headers` fields: the largest head the defaults accept."""
    prefix = f"/v1/models?seed={seed}&q="
    target = prefix + "a" * (DEFAULTS.max_request_line_bytes - len(prefix))
    fields = {"host": f"{HOST}:{port}", "authorization": f"Bearer {KEY}", "connection": "close"}
    used = sum(len(k) + len(v) for k, v in fields.items())
    pads = DEFAULTS.max_headers - len(fields)
    each = (DEFAULTS.max_header_bytes - used) // pads - len("x-pad-00")
    fields |= {f"x-pad-{i:02d}": "v" * each for i in range(pads)}
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Answer:
    status: int
    limit: str | None  # what a refusal names (`extras.limit`, or its error key)
    seconds: float


def exchange(port: int, request: bytes) -> Answer:
    """Send `request` whole, read until the server closes; blocking (a client thread)."""
    start = time.perf_counter()
    with socket.create_connection((HOST, port)) as sock:
        # refused before the body ended (413): the answer may still be readable
        with contextlib.suppress(ConnectionResetError):
            sock.sendall(request)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    seconds = time.perf_counter() - start
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Answer(status, refusal_limit(body) if status >= 400 else None, seconds)


def refusal_limit(body: bytes) -> str | None:
    try:
        error = json.loads(body)["errors"][0]
    except (ValueError, KeyError, IndexError):
        return None
    return error["extras"].get("limit") or error["key"]


# -- the heartbeat --------------------------------------------------------------------------


@dataclass
class Heartbeat:
    """Wakes every `BEAT_S` on the loop; `gaps` are the times between wake-ups since `reset`."""

    gaps: list[float] = field(default_factory=list)

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(BEAT_S)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def reset(self) -> None:
        self.gaps = []

    def holds(self) -> tuple[float, float]:
        """The longest gap and the sum of the gaps over 2 ms, in ms (the 1 ms asked for
        is not subtracted)."""
        longest = max(self.gaps, default=0.0)
        held = sum(gap for gap in self.gaps if gap > 0.002)
        return 1000 * longest, 1000 * held


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """What sizes the bodies: the context, the longest token, how `text_of` tokenizes."""

    n_ctx: int
    max_token_bytes: int
    chars_per_token: float


@dataclass(frozen=True)
class Kind:
    label: str
    build: Callable[[int, int], bytes]  # (port, seed) -> the request's bytes
    repeats: int | None = None  # fewer than `--repeats`, for a slow kind; no warm-up then


def kinds(model: Model) -> list[Kind]:
    def chat_kind(label: str, make: Callable[[int], dict], repeats: int | None = None) -> Kind:
        return Kind(label, lambda port, seed: post(port, make(seed)), repeats)

    checked = model.n_ctx * model.max_token_bytes
    filling = int((model.n_ctx - 64) * model.chars_per_token)
    return [
        chat_kind("small chat (1 token)", lambda seed: chat()),
        chat_kind("10 MiB body: 1,000 messages", messages_body),
        chat_kind("10 MiB body: a string in a key the server ignores", ignored_body),
        chat_kind("10 MiB body: small values in a key the server ignores", ignored_values_body),
        chat_kind("10 MiB body: small values in a message's graph_data", graph_data_body),
        chat_kind("10 MiB body: small values in a tool schema's `default`", schema_default_body),
        chat_kind(
            "values at the cap in a key the server ignores",
            lambda seed: ignored_values_body(seed, VALUES_AT_CAP),
        ),
        chat_kind(
            "values at the cap in a tool schema's `default`",
            lambda seed: schema_default_body(seed, VALUES_AT_CAP),
        ),
        chat_kind(
            "values at the cap in a response format's schema",
            lambda seed: format_default_body(seed, VALUES_AT_CAP),
        ),
        chat_kind(
            f"prompt filling the context, {filling:,} chars (1 token)",
            lambda seed: prompt_body(seed, filling),
            repeats=1,  # its prefill takes the engine ~30 s on one thread
        ),
        chat_kind(
            f"prompt just under the size check, {checked - 512:,} chars",
            lambda seed: prompt_body(seed, checked - 512),  # rendered, tokenized, refused
        ),
        chat_kind("8 MB prompt", lambda seed: prompt_body(seed, 8_000_000)),
        chat_kind("100,000 stops", stops_body),
        chat_kind("128 tools, first time", tools_body),
        chat_kind("128 tools, remembered", lambda seed: tools_body(0)),
        chat_kind("grammar cap: 20 tools x 20 strings of maxLength 1000", grammar_attack_body),
        chat_kind("10 MiB body: 128 tool descriptions", described_tools_body),
        chat_kind("10 MiB body: one replayed call's arguments", arguments_body),
        Kind("largest request head (GET /v1/models)", maximal_head),
    ]


@dataclass
class Sample:
    longest_ms: float
    held_ms: float
    answer: Answer
    foreign_cpus: float


@dataclass
class Row:
    label: str
    size: int
    samples: list[Sample] = field(default_factory=list)
    rss_growth_mb: float = 0.0  # this process's resident memory added per request sent

    def summary(self) -> dict:
        longest = [s.longest_ms for s in self.samples]
        statuses = {f"{s.answer.status} {s.answer.limit or ''}".strip() for s in self.samples}
        return {
            "label": self.label,
            "request_bytes": self.size,
            "longest_ms_median": statistics.median(longest),
            "longest_ms_max": max(longest),
            "held_ms_median": statistics.median(s.held_ms for s in self.samples),
            "latency_ms_median": 1000 * statistics.median(s.answer.seconds for s in self.samples),
            "status": ", ".join(sorted(statuses)),
            "rss_growth_mb_per_request": self.rss_growth_mb,
            "samples": [asdict(s) for s in self.samples],
        }


class Bench:
    def __init__(self, args: argparse.Namespace, data_dir: str) -> None:
        self.args = args
        self.port = free_port()
        self.settings = Settings(
            api_key=(KEY,),
            data_dir=data_dir,
            threads=args.threads,
            models=default_models(DEFAULTS.ctx_size),
            log_level="warning",
        )
        self.app = create_app(self.settings, store=open_store(None))
        self.heart = Heartbeat()
        self.quiet = host.Quiet(args.quiet_budget)
        self.pids = [os.getpid()]
        self.sent = 0  # requests of the current kind sent so far, warm-up and redos included

    async def run(self) -> dict:
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=self.port,
            log_config=None,
            log_level="warning",
            access_log=False,
            http=protocol_class(Limits.from_settings(self.settings)),
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        beating = asyncio.create_task(self.heart.run())
        try:
            model = await self._until_ready(server)
            self.pids += children(os.getpid())  # the planner's worker works for the server
            rows = [await self._idle()]
            for kind in kinds(model):
                if self.args.only in kind.label:
                    rows.append(await self._kind(kind))
            return {"model": asdict(model), "rows": [row.summary() for row in rows]}
        finally:
            beating.cancel()
            server.should_exit = True
            await serving

    async def _until_ready(self, server: uvicorn.Server) -> Model:
        runtime = self.app.state.runtime
        deadline = time.monotonic() + 120
        while not (server.started and runtime.ready):
            if runtime.failure or time.monotonic() > deadline:
                raise RuntimeError(f"the model did not load: {runtime.failure}")
            await asyncio.sleep(0.1)
        engine = runtime.catalog().resolve(MODEL).engine
        sample = text_of(20_000, 0)
        per_token = len(sample) / len(engine.tokenize(sample, add_special=False))
        return Model(engine.info.n_ctx, engine.info.max_token_bytes, per_token)

    async def _idle(self) -> Row:
        row = Row("idle (1 s, no request)", 0)
        for _ in range(self.args.repeats):
            await asyncio.to_thread(self.quiet.wait)
            meter = host.CpuMeter(self.pids)
            self.heart.reset()
            await asyncio.sleep(1.0)
            answer = Answer(0, None, 1.0)
            row.samples.append(Sample(*self.heart.holds(), answer, meter.foreign_cpus()))
        return row

    async def _kind(self, kind: Kind) -> Row:
        count = kind.repeats or self.args.repeats
        first = kind.build(self.port, 0)
        before, self.sent = rss_mb(), 0
        if kind.repeats is None:
            self.sent += 1
            await asyncio.to_thread(exchange, self.port, first)  # a warm-up
        row = Row(kind.label, len(first))
        for i in range(1, count + 1):
            row.samples.append(await self._take(kind, i))
        row.rss_growth_mb = (rss_mb() - before) / self.sent
        print(f"  {kind.label}: done", file=sys.stderr)
        return row

    async def _take(self, kind: Kind, seed: int) -> Sample:
        """One request; done again (up to twice) if other processes used the CPUs meanwhile,
        with a body of a new seed (the same body again might be answered from memory)."""
        for attempt in range(3):
            request = kind.build(self.port, seed + 1000 * attempt)  # before the clock starts
            self.sent += 1
            await asyncio.to_thread(self.quiet.wait)
            meter = host.CpuMeter(self.pids)
            self.heart.reset()
            answer = await asyncio.to_thread(exchange, self.port, request)
            sample = Sample(*self.heart.holds(), answer, meter.foreign_cpus())
            if sample.foreign_cpus <= FOREIGN_LIMIT or attempt == 2:
                return sample
            print(f"  redo: other processes used {sample.foreign_cpus:.2f} CPUs", file=sys.stderr)
        raise AssertionError("unreachable")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (the planner's worker, its resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def show(result: dict) -> None:
    m, c, model = result["machine"], result["config"], result["model"]
    print(f"\n{m['cpu']}, {m['nproc']} CPUs; embedded model, {c['threads']} llama.cpp "
          f"thread(s), default limits (n_ctx {model['n_ctx']}, longest token "
          f"{model['max_token_bytes']} bytes); medians of {c['repeats']} requests\n")  # fmt: skip
    print("| request | bytes | longest loop hold ms (median / max) | loop held in gaps > 2 ms, "
          "ms | latency ms | status | RSS growth per request, MB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in result["rows"]:
        hold = f"{r['longest_ms_median']:.1f} / {r['longest_ms_max']:.1f}"
        cells = [
            *(r["label"], f"{r['request_bytes']:,}", hold, f"{r['held_ms_median']:.1f}"),
            *(
                f"{r['latency_ms_median']:.0f}",
                r["status"],
                f"{max(0.0, r['rss_growth_mb_per_request']):.0f}",
            ),
        ]
        print("| " + " | ".join(cells) + " |")
    disturbed = max(s["foreign_cpus"] for r in result["rows"] for s in r["samples"])
    if disturbed > FOREIGN_LIMIT:
        print(f"\nother processes used up to {disturbed:.2f} CPUs during a request")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured requests per kind")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--quiet-budget", type=float, default=60.0,
                        help="seconds the run may wait in all for idle CPUs")  # fmt: skip
    parser.add_argument("--only", default="", help="run the kinds whose label has this text")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inkstand-loop-") as data_dir:
        measured = uvloop.run(Bench(args, data_dir).run())
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": vars(args),
    } | measured
    show(result)
    report.save(result, "loop_hold-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

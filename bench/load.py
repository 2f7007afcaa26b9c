"""Concurrent streaming clients: N requests at once from one asyncio process, and their timings.

    async with open_client() as client:
        traces = await wave(client, [lambda: send(client, dialect, url, body) ...])

One `Trace` per request records when it was sent and when each non-empty content delta
arrived (`perf_counter`), the token count the server reports, its finish reason and usage,
or the error that ended it. Errors are recorded, never raised, so one bad stream cannot stop
a run and every error is counted. The client is kept cheap because it shares the two cores
with the servers: one connection pool, `aiter_lines`, `json.loads` on `data:` lines only.

Dialects:
- `writer`  Inkstand, `POST /v1/chat` with `stream_options.include_usage`;
- `openai`  llama-server, `POST /v1/chat/completions` with `stream_options.include_usage`
            (its last chunk also carries llama.cpp's `timings`, kept as reported);
- `legacy`  llama_cpp.server, `POST /v1/chat/completions` without usage in the stream: a
            stream ending with `finish_reason: "length"` generated `max_tokens` tokens,
            one ending otherwise is counted by content chunks.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx
from clients import SSEReader

PATHS = {"writer": "/v1/chat", "openai": "/v1/chat/completions", "legacy": "/v1/chat/completions"}


@dataclass
class Trace:
    sent: float
    arrivals: list[float] = field(default_factory=list)  # one per non-empty content delta
    end: float = 0.0
    tokens: int = 0
    finish: str = "?"
    usage: dict | None = None
    timings: dict | None = None  # llama-server's own account of the request
    text: str = ""
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.arrivals[0] - self.sent if self.arrivals else None

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def cached_tokens(self) -> int | None:
        """Prompt tokens the server says it reused (Writer spells it prompt_token_details)."""
        usage = self.usage or {}
        details = usage.get("prompt_token_details") or usage.get("prompt_tokens_details") or {}
        return details.get("cached_tokens")

    def record(self) -> dict:
        return {
            "ttft_s": self.ttft,
            "total_s": self.end - self.sent,
            "tokens": self.tokens,
            "chunks": len(self.arrivals),
            "finish": self.finish,
            "usage": self.usage,
            "timings": self.timings,
            "error": self.error,
        }


def open_client(connections: int = 32) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(300.0, connect=10.0)
    return httpx.AsyncClient(trust_env=False, limits=limits, timeout=timeout)


async def send(
    client: httpx.AsyncClient, dialect: str, base_url: str, body: dict, headers: dict
) -> Trace:
    """One request; streamed unless `body["stream"]` is False. Never raises for the server."""
    body = _dialect_body(dialect, body)
    trace = Trace(sent=time.perf_counter())
    try:
        if body["stream"]:
            await _stream(client, base_url + PATHS[dialect], body, headers, trace)
        else:
            await _whole(client, base_url + PATHS[dialect], body, headers, trace)
        _count_tokens(dialect, body, trace)
    except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:  # StreamError included
        trace.error = f"{type(exc).__name__}: {exc}"[:500]
    trace.end = time.perf_counter()
    return trace


def _dialect_body(dialect: str, body: dict) -> dict:
    body = {"stream": True} | body
    if body["stream"] and dialect != "legacy":
        body["stream_options"] = {"include_usage": True}
    return body


async def _stream(client, url: str, body: dict, headers: dict, trace: Trace) -> None:
    parts: list[str] = []
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        reader = SSEReader()
        async for line in response.aiter_lines():
            payload = reader.feed(line)
            if reader.done:
                break
            if payload is not None:
                _chunk(payload, trace, parts)
    trace.text = "".join(parts)


def _chunk(chunk: dict, trace: Trace, parts: list[str]) -> None:
    if "error" in chunk:
        raise RuntimeError(f"error in stream: {json.dumps(chunk)[:300]}")
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content")
        if text:
            trace.arrivals.append(time.perf_counter())
            parts.append(text)
        trace.finish = choice.get("finish_reason") or trace.finish
    trace.usage = chunk.get("usage") or trace.usage
    trace.timings = chunk.get("timings") or trace.timings


async def _whole(client, url: str, body: dict, headers: dict, trace: Trace) -> None:
    response = await client.post(url, json=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    trace.arrivals.append(time.perf_counter())
    trace.text = answer["choices"][0]["message"]["content"] or ""
    trace.finish = answer["choices"][0]["finish_reason"]
    trace.usage = answer.get("usage")


def _count_tokens(dialect: str, body: dict, trace: Trace) -> None:
    if trace.usage is not None:
        trace.tokens = trace.usage["completion_tokens"]
    elif dialect != "legacy":
        raise RuntimeError("no usage although include_usage was set")
    elif trace.finish == "length":
        trace.tokens = body["max_tokens"]
    else:
        trace.tokens = len(trace.arrivals)
    if not trace.arrivals and trace.tokens:
        raise RuntimeError("tokens reported but no content arrived")


async def wave(jobs: Iterable[Callable[[], Awaitable[Trace]]]) -> tuple[list[Trace], float]:
    """Start every job at once; their traces and the wall time from first send to last end."""
    start = time.perf_counter()
    traces = await asyncio.gather(*(job() for job in jobs))
    return list(traces), time.perf_counter() - start


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1-99) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

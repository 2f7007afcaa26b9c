"""Streaming HTTP clients: one SSE reader, and one function per wire dialect.

Both dialects are read by the same code path (`httpx` line iteration, `json.loads`, a
`Clock`), so the client's own cost is the same for Inkstand and for llama_cpp.server.

- Writer (`POST /v1/chat`, Inkstand): `stream_options.include_usage` makes the last chunk
  carry `usage.completion_tokens`, which is the token count.
- OpenAI (`POST /v1/chat/completions`, llama_cpp.server): its stream carries no usage, so
  a run that ends with `finish_reason: "length"` generated exactly `max_tokens` tokens; a
  run that ends early falls back to counting content chunks (reported, never silent).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
from stats import Clock, Sample


class StreamError(RuntimeError):
    """The server answered with an error status or an `event: error` frame."""


class SSEReader:
    """The lines of a server-sent event stream in, their JSON payloads out, up to `[DONE]`.

    `feed` returns a `data:` line's payload, or None for any other line; an `event: error`
    frame raises `StreamError`; `done` turns True at `data: [DONE]`.
    """

    def __init__(self) -> None:
        self.event = "message"
        self.done = False

    def feed(self, line: str) -> dict | None:
        if not line:
            self.event = "message"
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                self.done = True
            elif self.event == "error":
                raise StreamError(f"error event in stream: {data[:500]}")
            else:
                return json.loads(data)
        return None


def sse_payloads(response: httpx.Response) -> Iterator[dict]:
    """The JSON payload of every `data:` event up to `[DONE]`; comments are skipped."""
    reader = SSEReader()
    for line in response.iter_lines():
        payload = reader.feed(line)
        if reader.done:
            return
        if payload is not None:
            yield payload


def _post_stream(client: httpx.Client, url: str, body: dict, headers: dict) -> Iterator[dict]:
    with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise StreamError(f"POST {url} -> {response.status_code}: {response.text[:500]}")
        yield from sse_payloads(response)


def _consume(chunks: Iterator[dict], clock: Clock) -> tuple[str, dict | None]:
    """Feed every content delta to `clock`; the last finish reason and usage seen."""
    finish, usage = "?", None
    for chunk in chunks:
        for choice in chunk["choices"]:
            text = choice["delta"].get("content")
            if text:
                clock.content(text)
            finish = choice.get("finish_reason") or finish
        usage = chunk.get("usage") or usage
    return finish, usage


def stream_writer(client: httpx.Client, base_url: str, api_key: str, body: dict) -> Sample:
    """One streamed `POST /v1/chat` (Writer's API, as Inkstand serves it)."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {api_key}"}
    clock = Clock()
    finish, usage = _consume(_post_stream(client, f"{base_url}/v1/chat", body, headers), clock)
    if usage is None:
        raise StreamError("the stream carried no usage although include_usage was set")
    return clock.stop(usage["completion_tokens"], finish)


def stream_openai(client: httpx.Client, base_url: str, body: dict) -> Sample:
    """One streamed `POST /v1/chat/completions` (OpenAI's API, as llama_cpp.server serves it)."""
    body = body | {"stream": True}
    clock = Clock()
    url = f"{base_url}/v1/chat/completions"
    finish, usage = _consume(_post_stream(client, url, body, {}), clock)
    if usage is not None:
        tokens = usage["completion_tokens"]
    elif finish == "length":
        tokens = body["max_tokens"]
    else:
        tokens = clock.chunks  # ended early and said nothing: fall back to counting chunks
    return clock.stop(tokens, finish)

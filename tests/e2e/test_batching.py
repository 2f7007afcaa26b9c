"""Continuous batching: many requests decoded together, and `n` choices from one prefill.

Usage is checked against arithmetic that holds however the engine groups its work: a
request's prompt counts the same whether it ran alone or beside fifteen others, and
`/metrics` token counters grow by exactly what the responses report. These tests start once
the session server is idle and run alone on it, so the counters move only because of them.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from .support import (
    AUTH,
    CACHED_TOKENS,
    GENERATED_TOKENS,
    PROMPT_TOKENS,
    RUNNING,
    WAITING,
    greedy,
    scrape,
    sse_events,
    wait_until_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

SUBJECTS = [
    "bicycles", "coffee", "libraries", "volcanoes", "bees", "trains", "chess", "rivers",
    "bread", "clocks", "owls", "glass", "maps", "violins", "kites", "salt",
]  # fmt: skip
MAX_TOKENS = 16


def essay(subject: str, **fields) -> dict:
    messages = [{"role": "user", "content": f"Write a long essay about {subject}."}]
    return greedy(messages=messages, max_tokens=MAX_TOKENS, **fields)


async def stream_chunks(http: httpx.AsyncClient, body: dict) -> list[dict]:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", "/v1/chat", json=body) as response:
        raw = (await response.aread()).decode()
        assert response.status_code == 200, raw
    return [json.loads(data) for data in sse_events(raw)[:-1]]


async def stream_all(server, bodies: list[dict]) -> list[list[dict]]:
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=120) as http:
        return await asyncio.gather(*(stream_chunks(http, body) for body in bodies))


def finish_reasons(chunks: list[dict]) -> list[str]:
    return [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]


def test_sixteen_concurrent_streams_finish_with_their_usage(server, http):
    before = wait_until_idle(server)
    streams = asyncio.run(stream_all(server, [essay(subject) for subject in SUBJECTS]))
    after = scrape(server)
    assert len({chunks[0]["id"] for chunks in streams}) == len(SUBJECTS)
    usages = []
    for subject, chunks in zip(SUBJECTS, streams, strict=True):
        assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
        (reason,) = finish_reasons(chunks)
        usage = chunks[-1]["usage"]
        usages.append(usage)
        whole = http.post("/v1/chat", json=essay(subject)).json()
        assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if reason == "length":
            assert usage["completion_tokens"] == MAX_TOKENS
        else:
            assert reason == "stop" and 0 < usage["completion_tokens"] < MAX_TOKENS
    assert after[PROMPT_TOKENS] - before[PROMPT_TOKENS] == sum(u["prompt_tokens"] for u in usages)
    assert after[GENERATED_TOKENS] - before[GENERATED_TOKENS] == sum(
        u["completion_tokens"] for u in usages
    )
    assert after[CACHED_TOKENS] - before[CACHED_TOKENS] == sum(
        u["prompt_token_details"]["cached_tokens"] for u in usages
    )
    assert (after[RUNNING], after[WAITING]) == (0, 0)


def test_n_choices_come_from_one_prefill(server, client):
    # A system prompt no other test sends, so the prompt is computed here (once), not cached.
    messages = [
        {"role": "system", "content": "You keep a lighthouse and answer in its logbook."},
        {"role": "user", "content": "What happened today?"},
    ]
    body = greedy(messages=messages, max_tokens=8, logprobs=True)
    before = wait_until_idle(server)
    response = client.chat.chat(**body, n=4)
    after = scrape(server)
    single = client.chat.chat(**body)
    assert [choice.index for choice in response.choices] == [0, 1, 2, 3]
    assert all(choice.finish_reason in ("stop", "length") for choice in response.choices)
    usage = response.usage
    assert usage.completion_tokens == sum(len(c.logprobs.content) for c in response.choices)
    assert usage.prompt_tokens == single.usage.prompt_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert after[PROMPT_TOKENS] - before[PROMPT_TOKENS] == usage.prompt_tokens
    assert after[CACHED_TOKENS] - before[CACHED_TOKENS] == usage.prompt_token_details.cached_tokens
    assert usage.prompt_token_details.cached_tokens < usage.prompt_tokens / 2
    assert after[GENERATED_TOKENS] - before[GENERATED_TOKENS] == usage.completion_tokens
    # Greedy choices forked from one prompt's KV are the same answer.
    assert len({choice.message.content for choice in response.choices}) == 1

"""The upstream translation layer against real llama-server traffic (tests/fixtures/llama_server,
recorded by its record.py): streamed chunks through `ChunkReader`, event lines through
`data_payloads`, refusals through `error_from_body`; and Writer image fragments to OpenAI
parts. Structure only: counts, reasons, usage, and text compared between recordings, never
against expected prose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inkstand.engine.types import CallEvent, Event, Finish, TokenEvent
from inkstand.errors import (
    BadRequestError,
    ContextLengthError,
    EngineError,
    InkstandError,
    OverloadedError,
)
from inkstand.schemas.chat import ChatMessage
from inkstand.upstream.sse import data_payloads
from inkstand.upstream.translate import ChunkReader, UpstreamJob, error_from_body, openai_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llama_server"
DONE = "[DONE]"

# Streamed recordings and the whole answer recorded for the same request (no `stream`).
TWINS = [
    ("chat_stream", "chat"),
    ("chat_stream_without_usage", "chat"),
    ("chat_logprobs_stream", "chat_logprobs"),
    ("chat_logprobs_top2_stream", "chat_logprobs_top2"),
    ("chat_json_schema_stream", "chat_json_schema"),
    ("chat_tools_stream", "chat_tools"),
    ("tool_template_required_stream", "tool_template_required"),
    ("completions_stream", "completions"),
]
STREAMS = sorted(p.stem for p in FIXTURES.glob("*.json") if "events" in json.loads(p.read_text()))


def recording(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def job_for(recorded: dict[str, Any], **fields: Any) -> UpstreamJob:
    """The job Inkstand would have sent for the recorded request."""
    body = recorded["request"]["body"]
    chat = recorded["request"]["path"].endswith("/chat/completions")
    return UpstreamJob(
        "/chat/completions" if chat else "/completions",
        body,
        body["max_tokens"],
        body.get("n", 1),
        affinity=b"",
        logprobs=bool(body.get("logprobs")),
        chat=chat,
        **fields,
    )


def chunks(recorded: dict[str, Any]) -> list[dict[str, Any]]:
    payloads = recorded["events"]
    assert payloads[-1] == DONE and DONE not in payloads[:-1]
    return [json.loads(p) for p in payloads[:-1]]


def read(name: str, **fields: Any) -> tuple[list[Event], ChunkReader]:
    """Every event of a recorded stream, `finish()` included, and the reader."""
    recorded = recording(name)
    reader = ChunkReader(job_for(recorded), **fields)
    events = [event for chunk in chunks(recorded) for event in reader.feed(chunk)]
    return events + reader.finish(), reader


def text_of(events: list[Event], index: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.index == index)


def finishes(events: list[Event]) -> list[Finish]:
    return [e for e in events if isinstance(e, Finish)]


def usages(name: str) -> list[dict[str, Any]]:
    return [c["usage"] for c in chunks(recording(name)) if c.get("usage")]


def finish_reasons(name: str) -> dict[int, str]:
    return {
        choice["index"]: choice["finish_reason"]
        for chunk in chunks(recording(name))
        for choice in chunk["choices"]
        if choice.get("finish_reason")
    }


@pytest.mark.parametrize(("stream", "whole"), TWINS)
def test_streamed_text_is_the_whole_answer(stream, whole):
    streamed, answered = recording(stream)["request"]["body"], recording(whole)["request"]["body"]
    assert {k: v for k, v in streamed.items() if not k.startswith("stream")} == answered
    events, _ = read(stream)
    choice = recording(whole)["body"]["choices"][0]
    content = choice["message"]["content"] if "message" in choice else choice["text"]
    assert text_of(events) == content
    assert not [e for e in events if isinstance(e, CallEvent)]


@pytest.mark.parametrize("stream", [s for s, _ in TWINS if s != "chat_stream_without_usage"])
def test_one_finish_comes_last_with_the_usage_and_the_mapped_reason(stream):
    events, _ = read(stream)
    (finish,) = finishes(events)
    assert events[-1] is finish
    (usage,) = usages(stream)
    assert finish.prompt_tokens == usage["prompt_tokens"]
    assert finish.completion_tokens == usage["completion_tokens"]
    assert finish.cached_tokens == usage["prompt_tokens_details"]["cached_tokens"] > 0
    assert finish.reason == finish_reasons(stream)[0]  # "length" or "stop": both kept


def test_cached_tokens_are_hidden_when_the_cache_is_not_the_callers():
    events, _ = read("chat_stream", report_cache=False)
    (finish,) = finishes(events)
    (usage,) = usages("chat_stream")
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0 and finish.cached_tokens == 0
    assert finish.prompt_tokens == usage["prompt_tokens"]


def test_a_stream_without_usage_still_ends_in_one_finish():
    # Inkstand always asks for `include_usage`; without it llama-server sends no counts.
    events, reader = read("chat_stream_without_usage")
    (finish,) = finishes(events)
    assert events[-1] is finish and reader.usage is None
    assert finish.reason == "length"


def test_n2_each_choice_finishes_and_the_per_choice_usage_chunks_add_up():
    name = "chat_n2_stream"
    events, reader = read(name)
    assert [f.index for f in finishes(events)] == [0, 1]
    whole = recording("chat_n2")["body"]["choices"]  # the same prompt, more max_tokens
    for i in (0, 1):
        assert text_of(events, i) and whole[i]["message"]["content"].startswith(text_of(events, i))
    # llama-server sends one usage chunk per choice, the first before the other choice ends.
    per_choice = usages(name)
    assert len(per_choice) == 2
    payloads = chunks(recording(name))
    first_usage = next(i for i, c in enumerate(payloads) if c.get("usage"))
    ends = [i for i, c in enumerate(payloads) for ch in c["choices"] if ch["finish_reason"]]
    assert first_usage < max(ends)
    total = sum(u["completion_tokens"] for u in per_choice)
    assert reader.usage is not None and reader.usage["completion_tokens"] == total
    assert sum(f.completion_tokens for f in finishes(events)) == total
    counts = sorted(f.completion_tokens for f in finishes(events))
    assert counts == sorted(u["completion_tokens"] for u in per_choice)  # each choice its own
    for finish in finishes(events):
        assert finish.prompt_tokens == per_choice[-1]["prompt_tokens"]
        assert finish.cached_tokens == per_choice[-1]["prompt_tokens_details"]["cached_tokens"]
        assert finish.reason == finish_reasons(name)[finish.index]


def test_one_choice_of_the_n2_request_is_the_request_without_n():
    # For engines without a native `n` (llama-server), each choice is a request of its own.
    job = job_for(recording("chat_n2_stream"))
    single = job.single()
    assert (job.n, single.n, single.body.get("n")) == (2, 1, None)
    assert single.body == {k: v for k, v in job.body.items() if k != "n"}


def test_logprobs_become_token_events_with_token_info():
    events, _ = read("chat_logprobs_top2_stream")
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    entries = recording("chat_logprobs_top2")["body"]["choices"][0]["logprobs"]["content"]
    assert len(tokens) == len(entries) == finishes(events)[0].completion_tokens
    for event, entry in zip(tokens, entries, strict=True):
        assert event.token is not None
        assert event.text == event.token.text == entry["token"]
        assert event.token.raw == bytes(entry["bytes"])
        assert event.token.logprob == pytest.approx(entry["logprob"])


def test_top_logprobs_0_brings_text_without_token_info():
    # Why Inkstand asks for `top_logprobs: 1`: llama-server sends nothing for 0.
    events, _ = read("chat_logprobs_stream")
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert tokens and all(e.token is None for e in tokens)


def test_json_content_that_is_no_call_is_an_error_in_json_schema_mode():
    recorded = recording("chat_json_schema_stream")
    reader = ChunkReader(job_for(recorded, forced={}), calls_as_json=True)
    for chunk in chunks(recorded):
        reader.feed(chunk)
    with pytest.raises(EngineError):
        reader.finish()


@pytest.mark.parametrize("name", STREAMS)
async def test_data_payloads_yields_each_recorded_payload_until_done(name):
    payloads = recording(name)["events"]

    async def lines() -> AsyncIterator[str]:
        for payload in [*payloads, '{"after": "done"}']:
            yield f"data: {payload}"
            yield ""

    assert [p async for p in data_payloads(lines())] == payloads[:-1]


ERRORS = [
    ("error_context_length", ContextLengthError),
    ("error_context_length_stream", ContextLengthError),
    ("error_invalid_schema", BadRequestError),
    ("error_bad_field_type", BadRequestError),
    ("error_missing_messages", BadRequestError),
    ("error_malformed_json", OverloadedError),
]


@pytest.mark.parametrize(("name", "kind"), ERRORS)
def test_recorded_refusals_become_writers_errors(name, kind):
    recorded = recording(name)
    assert recorded["headers"]["content-type"].startswith("application/json")
    error = error_from_body(recorded["status"], recorded["body"])
    assert type(error) is kind
    assert recorded["body"]["error"]["message"] in error.description
    assert "://" not in error.description
    if kind is OverloadedError:  # a 5xx: the client may retry (another replica may answer)
        assert (error.status, error.retry_after) == (503, 1.0)
    else:
        assert error.status == 400 and error.should_retry is False


def test_a_refusal_inside_a_started_stream_is_an_engine_error():
    recorded = recording("error_context_length")
    reader = ChunkReader(job_for(recording("chat_stream")))
    reader.feed(chunks(recording("chat_stream"))[0])
    with pytest.raises(EngineError) as caught:
        reader.feed(recorded["body"])
    assert not isinstance(caught.value, BadRequestError)
    assert isinstance(caught.value, InkstandError) and caught.value.status == 500


def test_image_fragments_become_openai_image_url_parts():
    urls = ["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo="]
    message = ChatMessage.model_validate(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these."},
                *({"type": "image_url", "image_url": {"url": url}} for url in urls),
            ],
        }
    )
    assert openai_message(message) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these."},
            *({"type": "image_url", "image_url": {"url": url}} for url in urls),
        ],
    }

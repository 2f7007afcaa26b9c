"""Translation to and from OpenAI-compatible engines: request bodies, chunks to events, a
forced call read back from JSON content, engines' errors to Writer's."""

import json

import pytest

from inkstand.chat.checks import RequestLimits, check_images
from inkstand.chat.output import plan_output
from inkstand.chat.toolformat import HermesFormat
from inkstand.engine.types import CallEvent, Finish, TokenEvent
from inkstand.errors import (
    BadRequestError,
    ContextLengthError,
    EngineError,
    OverloadedError,
    RateLimitError,
)
from inkstand.schemas.chat import ChatRequest
from inkstand.upstream.jsoncall import JsonCallReader
from inkstand.upstream.translate import (
    ChunkReader,
    UpstreamJob,
    chat_job,
    error_from_body,
    openai_message,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def job_for(**fields) -> UpstreamJob:
    body = {"model": "palmyra-x5", "messages": [{"role": "user", "content": "Hi"}], **fields}
    request = ChatRequest.model_validate(body)
    output = plan_output(request, HermesFormat())
    return chat_job(
        request, output, model="m", max_tokens=16, n=request.n or 1, scope="k", cap=True
    )


def test_a_chat_request_becomes_a_streamed_openai_body():
    job = job_for(stop="END", logprobs=True, n=2, temperature=0.5)
    body = job.body
    assert body["model"] == "m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"]) == (0.5, 16)
    assert "top_p" not in body  # left to the engine's defaults
    assert (body["stop"], body["logprobs"], body["n"]) == (["END"], True, 2)
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert job.forced is None


def test_tools_pass_natively_and_a_forced_choice_has_a_json_schema_twin():
    job = job_for(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert job.body["tools"][0]["function"]["name"] == "get_weather"
    assert job.body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    twin = job.body_for("json_schema")
    assert "tools" not in twin and twin["messages"][0]["role"] == "system"
    schema = twin["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert list(schema["properties"]) == ["name", "arguments"]
    assert job.body_for("native") is job.body


def test_auto_tools_have_no_twin():
    assert job_for(tools=[WEATHER]).forced is None


def test_chunks_become_text_call_and_finish_events_with_usage_last():
    job = job_for(tools=[WEATHER])
    reader = ChunkReader(job)
    events = reader.feed(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}
    )
    events += reader.feed({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    call = {"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"ci'}}
    events += reader.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    more = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
    events += reader.feed({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
    events += reader.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    events += reader.feed({"choices": [], "usage": usage})
    events += reader.finish()
    assert [e.text for e in events if isinstance(e, TokenEvent)] == ["Hel", "lo"]
    calls = [e for e in events if isinstance(e, CallEvent)]
    assert (calls[0].id, calls[0].name, calls[1].id, calls[1].name) == (
        "c1",
        "get_weather",
        None,
        None,
    )
    assert "".join(c.arguments for c in calls) == '{"city": "Paris"}'
    (finish,) = [e for e in events if isinstance(e, Finish)]
    assert events[-1] is finish
    assert (
        finish.reason,
        finish.prompt_tokens,
        finish.completion_tokens,
        finish.cached_tokens,
    ) == (
        "stop",
        20,
        9,
        4,
    )


def test_log_probabilities_become_one_event_per_token():
    reader = ChunkReader(job_for(logprobs=True))
    entries = [
        {"token": "Hel", "logprob": -0.5, "bytes": [72, 101, 108]},
        {"token": "lo", "logprob": -0.1},
    ]
    choice = {"index": 0, "delta": {"content": "Hello"}, "logprobs": {"content": entries}}
    events = reader.feed({"choices": [choice]})
    assert [(e.text, e.token.logprob) for e in events] == [("Hel", -0.5), ("lo", -0.1)]
    assert events[0].token.raw == b"Hel"


def test_each_of_n_choices_finishes_and_only_the_last_carries_the_completion_tokens():
    reader = ChunkReader(job_for(n=2))
    reader.feed({"choices": [{"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]})
    reader.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    reader.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    first, second = reader.finish()
    assert (first.index, first.reason, first.completion_tokens) == (0, "stop", 0)
    assert (second.index, second.reason, second.completion_tokens) == (1, "length", 7)


@pytest.mark.parametrize(
    "pieces",
    [
        ['{"name": "get_weather", "arguments": {"city": "Pa', 'ris"}}'],
        ['{"name":"get_weather","arguments":{"city":"Paris"}}'],
    ],
)
def test_a_forced_call_streams_back_from_json_content(pieces):
    reader = JsonCallReader(0)
    events = [e for piece in pieces for e in reader.feed(piece)] + reader.finish()
    assert events[0].name == "get_weather" and events[0].id
    assert json.loads("".join(e.arguments for e in events)) == {"city": "Paris"}


def test_a_forced_call_in_another_key_order_is_read_at_the_end():
    reader = JsonCallReader(0)
    assert reader.feed('{"arguments": {"city": "Paris"}, "name": "get_weather"}') == []
    (call,) = reader.finish()
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}


def test_an_answer_without_the_forced_call_is_an_error_not_a_success():
    reader = JsonCallReader(0)
    reader.feed("Hello there!")
    with pytest.raises(EngineError):
        reader.finish()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            {"error": {"message": "the request exceeds the available context size"}},
            ContextLengthError,
        ),
        (
            400,
            {"error": {"message": "bad schema", "type": "invalid_request_error"}},
            BadRequestError,
        ),
        (422, {"detail": "field required"}, BadRequestError),
        (429, {"error": "slow down"}, RateLimitError),
        (503, "upstream connect error to http://10.0.0.7:8000/v1", OverloadedError),
    ],
)
def test_engine_errors_become_writers_without_urls(status, body, error):
    mapped = error_from_body(status, body, retry_after="3")
    assert isinstance(mapped, error)
    assert "http://" not in mapped.description
    if status == 429:
        assert mapped.retry_after == 3.0


def with_images(*urls: str) -> ChatRequest:
    parts = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return ChatRequest.model_validate(
        {"model": "palmyra-x5", "messages": [{"role": "user", "content": parts}]}
    )


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        (["https://example.com/a.png"] * 3, "max_images"),
        (["data:image/png;base64," + "A" * 2000], "max_image_bytes"),
        (["ftp://example.com/a.png"], "http(s)"),
        (["data:text/plain;base64,AAAA"], "data:image"),
    ],
)
def test_images_are_checked_before_anything_goes_upstream(urls, named):
    limits = RequestLimits(max_images=2, max_image_bytes=1000)
    with pytest.raises(BadRequestError) as caught:
        check_images(with_images(*urls), limits)
    assert named in caught.value.description


def test_images_within_the_limits_become_openai_image_parts():
    request = with_images("https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo=")
    check_images(request, RequestLimits())
    parts = openai_message(request.messages[0])["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[2]["image_url"] == {"url": "data:image/png;base64,iVBORw0KGgo="}


def test_an_engine_that_ignores_n_is_an_error_not_fewer_choices():
    reader = ChunkReader(job_for(n=3))
    reader.feed({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]})
    with pytest.raises(EngineError, match="`n`"):
        reader.finish()


def test_every_turn_of_a_conversation_has_the_affinity_of_its_first():
    turns = [{"role": "user", "content": "Hi"}]
    keys = set()
    for answer in ("Hello!", "Sure.", "Bye."):
        keys.add(job_for(messages=list(turns)).affinity)
        turns += [{"role": "assistant", "content": answer}, {"role": "user", "content": "More"}]
    assert len(keys) == 1
    other = job_for(messages=[{"role": "user", "content": "Another opening"}]).affinity
    assert other not in keys

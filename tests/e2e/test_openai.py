"""OpenAI's own Python SDK against the real server's `/openai/v1` routes, on both engines.

Structure only: ids, counts, finish reasons, usage arithmetic, JSON that validates, the
SDK's own exception classes for our errors.
"""

from __future__ import annotations

import json

import openai
import pytest
from jsonschema import Draft202012Validator

from .support import KEY, MODEL

pytestmark = pytest.mark.e2e

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}


@pytest.fixture(scope="module")
def sdk(server):
    with openai.OpenAI(api_key=KEY, base_url=f"{server.url}/openai/v1", max_retries=0) as client:
        yield client


def test_models_are_listed_in_openais_shape(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert MODEL in ids


def test_a_whole_answer_and_its_usage(sdk):
    answer = sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0)
    assert answer.id.startswith("chatcmpl-") and answer.object == "chat.completion"
    (choice,) = answer.choices
    assert choice.finish_reason in ("stop", "length") and choice.message.role == "assistant"
    usage = answer.usage
    assert usage is not None and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_stream_with_usage_last(sdk):
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    *parts, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(chunk.usage is None for chunk in parts)
    assert parts[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in parts if c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
    assert len({chunk.id for chunk in chunks}) == 1


def test_the_stream_and_the_whole_answer_agree_when_greedy(sdk):
    whole = sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=10, temperature=0)
    stream = sdk.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=10, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole.choices[0].message.content


def test_a_named_tool_choice_is_called_with_valid_arguments(sdk):
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    )
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and call.id
    Draft202012Validator(CITY).validate(json.loads(call.function.arguments))


def test_json_schema_output_validates(sdk):
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a city in France."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY, "strict": True},
        },
        temperature=0,
        max_tokens=40,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    Draft202012Validator(CITY).validate(json.loads(choice.message.content or ""))


def test_json_object_output_is_an_object(sdk):
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=60,
    )
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_n_logprobs_and_seed(sdk, engine):
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=5,
        n=2,
        logprobs=True,
        top_logprobs=2,
        seed=11,
        temperature=0.8,
    )
    assert [c.index for c in answer.choices] == [0, 1]
    for choice in answer.choices:
        entries = choice.logprobs.content if choice.logprobs else None
        assert entries
        assert all(len(e.top_logprobs) == 2 for e in entries)
        assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob for e in entries)


def test_stop_sequences_end_the_answer(sdk):
    answer = sdk.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0, stop=["e"]
    )
    assert "e" not in (answer.choices[0].message.content or "")


def test_completions_whole_and_streamed(sdk):
    whole = sdk.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason in (
        "stop",
        "length",
    )
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 6
    stream = sdk.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=6, stream=True
    )
    reasons = [
        c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason
    ]
    assert reasons in (["stop"], ["length"])


def test_errors_raise_the_sdks_own_exceptions(sdk, server):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="no-such-model", messages=ASK)
    assert bad.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=ASK, temperature=7)
    stranger = openai.OpenAI(api_key="wrong", base_url=str(sdk.base_url), max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()

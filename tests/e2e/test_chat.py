"""Non-streaming `POST /v1/chat` through the official SDK: response shape, limits, usage.

Requests are greedy (temperature 0) and short; assertions are on structure, never on prose.
"""

from __future__ import annotations

import time
import uuid

import pytest

from .support import MODEL, TALKATIVE, greedy, stop_inside, stream_chunks

pytestmark = pytest.mark.e2e


def chat(client, **fields):
    return client.chat.chat(**greedy(**fields))


def test_response_has_writer_shape(client):
    response = chat(client)
    assert uuid.UUID(response.id)
    assert response.object == "chat.completion"
    assert isinstance(response.created, int) and abs(response.created - time.time()) < 300
    assert response.model == MODEL
    assert [c.index for c in response.choices] == [0]
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    graph = choice.message.graph_data
    assert (graph.sources, graph.status, graph.subqueries) == (None, None, None)


def test_model_is_echoed(client):
    assert chat(client, model="palmyra-x4").model == "palmyra-x4"


def test_usage_total_is_prompt_plus_completion(client):
    usage = chat(client).usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_ends_with_length(client):
    response = chat(client, max_tokens=5)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_n_returns_indexed_choices_and_sums_usage(client):
    single = chat(client, max_tokens=4)
    response = chat(client, max_tokens=4, n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.finish_reason for c in response.choices] == ["length"] * 3
    assert response.usage.completion_tokens == 3 * 4
    assert response.usage.prompt_tokens == single.usage.prompt_tokens


def test_logprobs_cover_every_completion_token(client):
    response = chat(client, logprobs=True)
    choice = response.choices[0]
    assert choice.finish_reason == "length"
    entries = choice.logprobs.content
    assert len(entries) == response.usage.completion_tokens
    for entry in entries:
        assert isinstance(entry.token, str)
        assert entry.logprob <= 0
        assert all(0 <= b <= 255 for b in entry.bytes)
        assert isinstance(entry.top_logprobs, list)
    assert b"".join(bytes(e.bytes) for e in entries).decode() == choice.message.content


def test_logprobs_absent_unless_asked(client):
    assert chat(client).choices[0].logprobs is None


@pytest.mark.parametrize("as_list", [False, True], ids=["string", "list"])
def test_stop_sequence_ends_the_answer_before_it(client, as_list, engine):
    full = chat(client, max_tokens=16).choices[0].message.content
    stop = stop_inside(full)
    response = chat(client, max_tokens=16, logprobs=True, stop=["zzqx", stop] if as_list else stop)
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == full[: full.find(stop)]
    tokens = "".join(e.token for e in choice.logprobs.content)
    if engine == "upstream":  # llama-server's entries stop where its text does
        assert tokens == choice.message.content and response.usage.completion_tokens < 16
        return
    assert tokens.startswith(choice.message.content + stop)
    assert len(choice.logprobs.content) == response.usage.completion_tokens < 16


def test_unmet_stop_sequence_changes_nothing(client, engine):
    if engine == "upstream":
        pytest.skip("llama-server drops text held back for a stop sequence when max_tokens ends")
    full = chat(client, max_tokens=16).choices[0].message.content
    # The answer ends with the start of this stop, so that text is held back until the end.
    response = chat(client, max_tokens=16, stop=full.split()[-1] + "zz")
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == full


def test_prompt_tokens_are_the_same_streaming(client, http):
    whole = chat(client, max_tokens=2)
    chunks = stream_chunks(http, greedy(max_tokens=2, stream_options={"include_usage": True}))
    assert chunks[-1]["usage"]["prompt_tokens"] == whole.usage.prompt_tokens


def test_another_message_adds_prompt_tokens(client):
    short = chat(client, max_tokens=1)
    longer = chat(client, max_tokens=1, messages=[*TALKATIVE, {"role": "user", "content": "Go."}])
    assert longer.usage.prompt_tokens > short.usage.prompt_tokens


def test_replayed_sdk_message_is_accepted(client):
    messages: list = list(TALKATIVE)
    first = client.chat.chat(model=MODEL, messages=messages, max_tokens=4, temperature=0)
    messages.append(first.choices[0].message)
    messages.append({"role": "user", "content": "Go on."})
    second = client.chat.chat(model=MODEL, messages=messages, max_tokens=4, temperature=0)
    assert second.object == "chat.completion"
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


ACCEPTED = {
    "text fragments": {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}],
            }
        ]
    },
    "every role": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "weather", "content": "Sunny"},
            {"role": "user", "content": "Summarise."},
        ]
    },
    "message without content": {"messages": [{"role": "user"}]},
    "tool_choice alone": {"tool_choice": "auto"},
    "wrapped tool_choice alone": {"tool_choice": {"value": "none"}},
    "empty tools": {"tools": []},
    "text response_format": {"response_format": {"type": "text"}},
    "stream_options without streaming": {"stream_options": {"include_usage": True}},
}


@pytest.mark.parametrize("fields", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_lenient_input_is_accepted(client, fields):
    response = chat(client, max_tokens=2, **fields)
    assert response.object == "chat.completion"
    assert len(response.choices) == 1


def test_unknown_top_level_keys_are_ignored(client):
    response = chat(client, max_tokens=2, extra_body={"frobnicate": True, "top_k": 3})
    assert response.object == "chat.completion"

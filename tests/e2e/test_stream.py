"""Streaming `POST /v1/chat`: SSE framing, chunk order and invariants, and the SDK's readers.

Streams are compared with the non-streaming answer to the same greedy request: the same
model at temperature 0 gives the same tokens, so that is structure, not prose.
"""

from __future__ import annotations

import json

import pytest
import writerai

from .support import greedy, sse_events, stop_inside, stream_chunks, streamed_text

pytestmark = pytest.mark.e2e


def test_stream_is_framed_as_writer_sse(http):
    with http.stream("POST", "/v1/chat", json=greedy(stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert "\nid:" not in raw and not raw.startswith("id:")
    events = sse_events(raw)
    assert len(events) >= 3
    assert all(isinstance(json.loads(data), dict) for data in events[:-1])


def test_chunks_share_id_created_and_model(http):
    chunks = stream_chunks(http, greedy())
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["model"] == "palmyra-x5"


def test_first_chunk_opens_the_assistant_message(http):
    first = stream_chunks(http, greedy())[0]
    delta = first["choices"][0]["delta"]
    assert delta["role"] == "assistant"
    assert delta["content"] is None
    assert first["choices"][0]["finish_reason"] is None


def test_every_chunk_has_delta_and_message(http):
    for chunk in stream_chunks(http, greedy()):
        for choice in chunk["choices"]:
            assert isinstance(choice["delta"], dict)
            assert choice["message"]["role"] == "assistant"
            assert isinstance(choice["message"]["content"], str)


def test_only_the_last_chunk_finishes(http):
    chunks = stream_chunks(http, greedy())
    reasons = [c["choices"][0]["finish_reason"] for c in chunks]
    assert reasons[-1] == "length"
    assert reasons[:-1] == [None] * (len(chunks) - 1)


def test_usage_is_null_without_include_usage(http):
    assert all(c["usage"] is None for c in stream_chunks(http, greedy()))


@pytest.mark.parametrize("n", [1, 2])
def test_include_usage_puts_usage_on_the_last_chunk_only(http, n):
    chunks = stream_chunks(http, greedy(n=n, stream_options={"include_usage": True}))
    assert all(c["usage"] is None for c in chunks[:-1])
    whole = http.post("/v1/chat", json=greedy(n=n)).json()
    assert chunks[-1]["usage"] == whole["usage"]


def test_deltas_add_up_to_the_whole_answer(http):
    chunks = stream_chunks(http, greedy(max_tokens=16))
    whole = http.post("/v1/chat", json=greedy(max_tokens=16)).json()
    assert streamed_text(chunks) == whole["choices"][0]["message"]["content"]


def test_stop_sequences_stream_as_they_answer(http):
    full = http.post("/v1/chat", json=greedy(max_tokens=16)).json()["choices"][0]["message"]
    for stop in (stop_inside(full["content"]), full["content"].split()[-1] + "zz"):
        body = greedy(max_tokens=16, stop=stop)
        whole = http.post("/v1/chat", json=body).json()["choices"][0]["message"]["content"]
        assert streamed_text(stream_chunks(http, body)) == whole


def test_streamed_logprobs_cover_every_token(http):
    chunks = stream_chunks(http, greedy(logprobs=True, stream_options={"include_usage": True}))
    entries = [
        entry
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["logprobs"]
        for entry in choice["logprobs"]["content"]
    ]
    assert len(entries) == chunks[-1]["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in entries) == streamed_text(chunks)


@pytest.mark.parametrize("n", [2, 4])
def test_n_choices_open_in_order_and_finish_once(http, n):
    chunks = stream_chunks(http, greedy(n=n, max_tokens=3))
    assert [c["index"] for c in chunks[0]["choices"]] == list(range(n))
    finishes = [
        (choice["index"], position)
        for position, chunk in enumerate(chunks)
        for choice in chunk["choices"]
        if choice["finish_reason"] is not None
    ]
    assert sorted(index for index, _ in finishes) == list(range(n))
    for index, position in finishes:
        later = [ch for c in chunks[position + 1 :] for ch in c["choices"] if ch["index"] == index]
        assert later == []
    assert len({streamed_text(chunks, index) for index in range(n)}) == 1


def test_sdk_stream_yields_typed_chunks(client):
    with client.chat.chat(**greedy(), stream=True) as stream:
        chunks = list(stream)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == client.chat.chat(**greedy()).choices[0].message.content


def test_sdk_stream_helper_assembles_the_completion(client):
    full = client.chat.chat(**greedy(max_tokens=16)).choices[0].message.content
    stop = stop_inside(full)
    with client.chat.stream(**greedy(max_tokens=16, stop=stop)) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
    final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "stop"
    assert "".join(deltas) == final.choices[0].message.content == full[: full.find(stop)]


def test_sdk_stream_helper_reports_length(client):
    with client.chat.stream(**greedy(max_tokens=4)) as stream:
        for _ in stream:
            pass
    with pytest.raises(writerai.LengthFinishReasonError):
        stream.get_final_completion()

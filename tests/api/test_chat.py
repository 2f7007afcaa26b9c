"""`POST /v1/chat` in-process: shapes, usage arithmetic, SSE framing, n, stop."""

import json
import uuid

from inkstand.backends.fake import FakeBackend
from inkstand.chat.prompt import render_prompt
from inkstand.schemas.chat import ChatMessage

from .conftest import chat_body

REPLY = "Hello world"


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    frames = text[:-2].split("\n\n")
    for frame in frames:
        assert frame.startswith("data: "), frame
        assert "\nid:" not in frame and not frame.startswith("id:")
    return [frame[len("data: ") :] for frame in frames]


def prompt_len(messages: list[dict]) -> int:
    text = render_prompt(None, [ChatMessage.model_validate(m) for m in messages]).text
    return len(FakeBackend().tokenize(text, parse_special=True))


async def test_answer_has_writers_shape_and_exact_usage(client):
    body = chat_body()
    answer = (await client.post("/v1/chat", json=body)).json()
    uuid.UUID(answer["id"])
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "palmyra-x5"
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == REPLY
    assert choice["message"]["graph_data"] == {"sources": None, "status": None, "subqueries": None}
    usage = answer["usage"]
    assert usage["prompt_tokens"] == prompt_len(body["messages"])
    assert usage["completion_tokens"] == len(REPLY) + 1  # the end-of-generation token counts
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_and_stop(client):
    cut = (await client.post("/v1/chat", json=chat_body(max_tokens=3))).json()["choices"][0]
    assert (cut["finish_reason"], cut["message"]["content"]) == ("length", "Hel")
    stopped = (await client.post("/v1/chat", json=chat_body(stop=["wor"]))).json()["choices"][0]
    assert (stopped["finish_reason"], stopped["message"]["content"]) == ("stop", "Hello ")


async def test_n_choices_are_indexed_and_usage_sums_them(client):
    answer = (await client.post("/v1/chat", json=chat_body(n=3, max_tokens=2))).json()
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert answer["usage"]["completion_tokens"] == 6


async def test_stream_framing_order_and_usage(client):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    first = chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] is None
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == REPLY
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and finishes.count(None) == len(chunks) - 1
    assert [c["usage"] is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1]["usage"]["completion_tokens"] == len(REPLY) + 1


async def test_stream_without_include_usage_has_no_usage(client):
    response = await client.post("/v1/chat", json=chat_body(stream=True))
    chunks = [json.loads(e) for e in sse_events(response.text)[:-1]]
    assert all(c["usage"] is None for c in chunks)


async def test_stream_of_two_choices_opens_both_in_order(client):
    response = await client.post("/v1/chat", json=chat_body(stream=True, n=2, max_tokens=3))
    chunks = [json.loads(e) for e in sse_events(response.text)[:-1]]
    assert [c["index"] for c in chunks[0]["choices"]] == [0, 1]
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


async def test_stream_logprobs_ride_on_content_chunks(client):
    body = chat_body(stream=True, logprobs=True, max_tokens=4)
    chunks = [
        json.loads(e) for e in sse_events((await client.post("/v1/chat", json=body)).text)[:-1]
    ]
    entries = [
        t
        for c in chunks
        if c["choices"][0]["logprobs"]
        for t in c["choices"][0]["logprobs"]["content"]
    ]
    assert [e["token"] for e in entries] == list("Hell")
    assert all(e["top_logprobs"] == [] and e["bytes"] for e in entries)


async def test_lenient_inputs_are_accepted(client):
    replayed = {
        "role": "assistant",
        "content": "x",
        "graph_data": {"sources": None},
        "llm_data": None,
        "tool_calls": [],
        "refusal": None,
        "unknown": 1,
    }
    body = chat_body(
        messages=[
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            replayed,
            {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "42"},
            {"role": "user"},
        ],
        tools=[],
        tool_choice={"value": "auto"},
        response_format={"type": "text"},
        stream_options={"include_usage": True},
        something_new=True,
    )
    response = await client.post("/v1/chat", json=body)
    assert response.status_code == 200, response.text


async def test_models_listing_and_public_health(client):
    models = (await client.get("/v1/models")).json()
    assert models == {
        "models": [
            {"id": "palmyra-x5", "name": "Palmyra X5"},
            {"id": "palmyra-x4", "name": "Palmyra X4"},
        ]
    }
    client.headers.pop("Authorization")
    assert (await client.get("/health")).json() == {
        "status": "ok",
        "models": {"palmyra-x5": "ready", "palmyra-x4": "ready"},
    }


async def test_metrics_count_tokens_and_need_no_key(client):
    await client.post("/v1/chat", json=chat_body())
    await client.post("/v1/chat", json=chat_body())
    client.headers.pop("Authorization")
    response = await client.get("/metrics")
    assert response.status_code == 200
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["inkstand:generation_tokens_total"] == 2 * (len(REPLY) + 1)
    assert values["inkstand:prompt_tokens_cached_total"] > 0  # the second reused the first
    assert values["inkstand:num_requests_running"] == 0
    assert values["inkstand:time_to_first_token_seconds_count"] == 2


async def test_request_sampling_and_server_defaults_reach_the_sampler(client, backend):
    await client.post("/v1/chat", json=chat_body(temperature=0.7, top_p=0.9, logprobs=True))
    (sampling,) = backend.sampling.values()
    assert (sampling.temperature, sampling.top_p, sampling.logprobs) == (0.7, 0.9, True)
    assert (sampling.top_k, sampling.min_p, sampling.repeat_penalty) == (40, 0.05, 1.1)

"""`POST /v1/completions` in-process: Writer's text generation shapes, streamed and whole."""

import json

import pytest

from .test_chat import sse_events

REPLY = "Hello world"


def body(**fields) -> dict:
    return {"model": "palmyra-x5", "prompt": "Once upon a time", **fields}


async def test_answer_is_one_choice_of_text_and_the_model(client):
    answer = (await client.post("/v1/completions", json=body())).json()
    assert answer == {"choices": [{"text": REPLY, "log_probs": None}], "model": "palmyra-x5"}


async def test_max_tokens_stop_and_best_of(client):
    cut = (await client.post("/v1/completions", json=body(max_tokens=3))).json()
    assert cut["choices"][0]["text"] == REPLY[:3]
    stopped = (await client.post("/v1/completions", json=body(stop="wor"))).json()
    assert stopped["choices"][0]["text"] == "Hello "
    best = (await client.post("/v1/completions", json=body(best_of=3, random_seed=7))).json()
    assert len(best["choices"]) == 1 and best["choices"][0]["text"] == REPLY


async def test_stream_is_value_events_then_done(client):
    response = await client.post("/v1/completions", json=body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    values = [json.loads(e) for e in events[:-1]]
    assert all(set(v) == {"value"} and isinstance(v["value"], str) for v in values)
    assert values[0] == {"value": ""}
    assert "".join(v["value"] for v in values) == REPLY


@pytest.mark.parametrize(
    "fields",
    [
        {"best_of": 2, "stream": True},
        {"prompt": ""},
        {"prompt": None},
        {"max_tokens": 0},
        {"random_seed": -1},
        {"temperature": "hot"},
        {"model": "palmyra-nope"},
        {"max_tokens": 10_000},
    ],
    ids=["best_of-stream", "empty", "null", "max_tokens-0", "seed", "temperature", "model", "cap"],
)
async def test_bad_input_gets_400_in_the_envelope(client, fields):
    response = await client.post("/v1/completions", json=body(**fields))
    assert response.status_code == 400
    payload = response.json()
    assert set(payload) == {"tpe", "errors", "extras"} and payload["tpe"] == "BadRequest"


async def test_a_prompt_over_the_context_gets_400(client):
    response = await client.post("/v1/completions", json=body(prompt="word " * 200))
    assert response.status_code == 400
    assert response.json()["errors"][0]["key"] == "fail.badRequest.contextLengthExceeded"

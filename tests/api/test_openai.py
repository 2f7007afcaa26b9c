"""The `/openai/v1` routes in-process, on the scripted fake backend: OpenAI's shapes (checked
with the `openai` SDK's own types), its error object on every error source, and the same
keys, scopes, limits and usage records as Writer's routes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from inkstand.store import UsageLog

from .conftest import KEY, api_client, build_app, settings
from .test_chat import sse_events

CHAT = "/openai/v1/chat/completions"
REPLY = "Hello world"


def chat(**fields) -> dict:
    return {"model": "palmyra-x5", "messages": [{"role": "user", "content": "Hi"}], **fields}


def openai_error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def streamed(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    frames = sse_events(response.text)
    assert frames[-1] == "[DONE]"
    return [json.loads(frame) for frame in frames[:-1]]


async def test_a_whole_chat_completion_has_openais_shape(client):
    response = await client.post(CHAT, json=chat())
    assert response.status_code == 200
    body = response.json()
    ChatCompletion.model_validate(body)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert set(choice["message"]) == {"role", "content", "tool_calls", "refusal"}
    assert (choice["message"]["content"], choice["finish_reason"]) == (REPLY, "stop")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_the_same_request_gives_the_same_answer_on_both_surfaces(client):
    writer = (await client.post("/v1/chat", json=chat(max_tokens=4, n=2))).json()
    ours = (await client.post(CHAT, json=chat(max_tokens=4, n=2))).json()
    assert [c["message"]["content"] for c in ours["choices"]] == [
        c["message"]["content"] for c in writer["choices"]
    ]
    assert ours["usage"]["completion_tokens"] == writer["usage"]["completion_tokens"]


async def test_a_stream_sends_the_role_first_and_usage_last_on_its_own(client):
    body = chat(stream=True, stream_options={"include_usage": True}, n=2)
    chunks = streamed(await client.post(CHAT, json=body))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk" and "usage" in chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *body_chunks, last = chunks
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 2 * (len(REPLY) + 1)
    assert all(c["usage"] is None for c in body_chunks)
    for index in (0, 1):
        mine = [c["choices"][0] for c in body_chunks if c["choices"][0]["index"] == index]
        assert "".join(c["delta"].get("content") or "" for c in mine) == REPLY
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
    assert len({c["id"] for c in chunks}) == 1


async def test_a_stream_without_include_usage_has_no_usage_key(client):
    chunks = streamed(await client.post(CHAT, json=chat(stream=True)))
    assert all("usage" not in c for c in chunks)


async def test_developer_messages_and_max_completion_tokens_are_understood(client):
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = (await client.post(CHAT, json=chat(messages=messages, max_completion_tokens=3))).json()
    assert (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]) == (
        REPLY[:3],
        "length",
    )


async def test_logprobs_carry_top_logprobs_as_asked(client):
    body = (await client.post(CHAT, json=chat(logprobs=True, top_logprobs=3, seed=7))).json()
    entries = body["choices"][0]["logprobs"]["content"]
    assert len(entries) == len(REPLY) + 1  # the end-of-generation token has its entry too
    for entry in entries:
        assert len(entry["top_logprobs"]) == 3
        assert [set(t) for t in entry["top_logprobs"]] == [{"token", "logprob", "bytes"}] * 3
        logprobs = [t["logprob"] for t in entry["top_logprobs"]]
        assert logprobs == sorted(logprobs, reverse=True)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_logprobs": 2}, None),  # without logprobs: a whole-body rule
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [{"type": "graph", "function": {"graph_ids": ["g"]}}]}, "tools[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, None),
    ],
)
async def test_bad_requests_get_openais_400(client, fields, param):
    response = await client.post(CHAT, json=chat(**fields))
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


async def test_an_unknown_model_and_a_long_prompt_carry_openais_codes(client):
    unknown = await client.post(CHAT, json=chat(model="gpt-5"))
    assert (unknown.status_code, openai_error(unknown)["code"]) == (400, "model_not_found")
    long = await client.post(CHAT, json=chat(max_tokens=100_000))
    assert long.status_code == 400 and openai_error(long)["type"] == "invalid_request_error"


async def test_the_gateways_refusals_are_rendered_for_the_openai_surface(app, client):
    wrong = await client.post(CHAT, json=chat(), headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, openai_error(wrong)["code"]) == (401, "invalid_api_key")
    scoped = app.state.keys.create("x4 only", models=("palmyra-x4",))
    auth = {"Authorization": f"Bearer {scoped.secret}"}
    forbidden = await client.post(CHAT, json=chat(), headers=auth)
    assert (forbidden.status_code, openai_error(forbidden)["type"]) == (403, "permission_error")
    listed = (await client.get("/openai/v1/models", headers=auth)).json()
    assert [m["id"] for m in listed["data"]] == ["palmyra-x4"]
    slow = app.state.keys.create("slow", rpm=1)
    auth = {"Authorization": f"Bearer {slow.secret}"}
    assert (await client.post(CHAT, json=chat(), headers=auth)).status_code == 200
    limited = await client.post(CHAT, json=chat(), headers=auth)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert openai_error(limited)["code"] == "rate_limit_exceeded"


async def test_writers_routes_keep_writers_envelope(client):
    response = await client.post("/v1/chat", json=chat(temperature=5))
    assert set(response.json()) == {"tpe", "errors", "extras"}
    missing = await client.get("/openai/v1/nothing")
    assert missing.status_code == 404 and openai_error(missing)["type"] == "invalid_request_error"


async def test_requests_are_recorded_under_their_route(app, client):
    await client.post(CHAT, json=chat(max_tokens=2))
    app.state.store.writer.submit(lambda conn: None).result()
    rows = UsageLog(app.state.store).rows()
    assert [(r["endpoint"], r["completion_tokens"]) for r in rows] == [(CHAT, 2)]


async def test_models_list_in_openais_shape(client):
    body = (await client.get("/openai/v1/models")).json()
    assert body["object"] == "list"
    for model in body["data"]:
        Model.model_validate(model)
    assert [m["id"] for m in body["data"]] == ["palmyra-x5", "palmyra-x4"]


async def test_completions_keep_every_choice_with_its_finish_reason(client):
    body = {"model": "palmyra-x5", "prompt": ["Once"], "n": 2, "max_tokens": 4, "seed": 1}
    answer = (await client.post("/openai/v1/completions", json=body)).json()
    Completion.model_validate(answer)
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert [(c["index"], c["text"], c["finish_reason"]) for c in answer["choices"]] == [
        (0, REPLY[:4], "length"),
        (1, REPLY[:4], "length"),
    ]
    assert answer["usage"]["completion_tokens"] == 8


async def test_completions_default_to_sixteen_tokens_and_stream_with_usage(client):
    body = {"model": "palmyra-x5", "prompt": "Once", "stream": True}
    body["stream_options"] = {"include_usage": True}
    chunks = streamed(await client.post("/openai/v1/completions", json=body))
    for chunk in chunks:  # the SDK's type wants a finish reason, which OpenAI streams as null
        fields = {"object", "id", "created", "model", "choices", "system_fingerprint", "usage"}
        assert set(chunk) == fields
        if all(choice["finish_reason"] for choice in chunk["choices"]):
            Completion.model_validate(chunk)
    *texts, last = chunks
    assert "".join(c["choices"][0]["text"] for c in texts) == REPLY
    assert texts[-1]["choices"][0]["finish_reason"] == "stop"
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(REPLY) + 1


async def test_completions_refuse_what_they_cannot_do(client):
    for extra in ({"echo": True}, {"best_of": 3}, {"logprobs": 2}, {"suffix": "x"}):
        body = {"model": "palmyra-x5", "prompt": "Once", **extra}
        response = await client.post("/openai/v1/completions", json=body)
        assert response.status_code == 400, extra
        openai_error(response)


async def test_the_openai_sdk_reads_our_answers_and_raises_our_errors(backend):
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as http:
        sdk = openai.AsyncOpenAI(
            api_key=KEY, base_url="http://inkstand.test/openai/v1", http_client=http
        )
        whole = await sdk.chat.completions.create(
            model="palmyra-x5", messages=[{"role": "user", "content": "Hi"}]
        )
        assert whole.choices[0].message.content == REPLY
        stream = await sdk.chat.completions.create(
            model="palmyra-x5",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == REPLY
        assert pieces[-1].usage is not None
        with pytest.raises(openai.BadRequestError):
            await sdk.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
        bad = openai.AsyncOpenAI(api_key="wrong", base_url=str(sdk.base_url), http_client=http)
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()

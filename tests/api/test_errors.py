"""One test pins Writer's error envelope for every error source the API has."""

from dataclasses import replace

import httpx
import pytest

from inkstand.app import create_app
from inkstand.store import open_store

from .conftest import KEY, chat_body, settings

LONG = "word " * 600  # over the fake model's 512-token context


def envelope_ok(body: dict) -> bool:
    return (
        set(body) == {"tpe", "errors", "extras"}
        and isinstance(body["tpe"], str)
        and isinstance(body["extras"], dict)
        and len(body["errors"]) == 1
        and set(body["errors"][0]) == {"description", "key", "extras"}
        and body["errors"][0]["description"]
        and body["errors"][0]["key"].startswith("fail.")
    )


CASES = {
    "no key": ("POST", "/v1/chat", {"headers": {"Authorization": ""}, "json": chat_body()}, 401),
    "wrong key": ("POST", "/v1/chat", {"headers": {"Authorization": "Bearer nope"}}, 401),
    "not bearer": ("GET", "/v1/models", {"headers": {"Authorization": f"Basic {KEY}"}}, 401),
    "unknown route": ("GET", "/v1/nothing", {}, 404),
    "wrong method": ("GET", "/v1/chat", {}, 405),
    "malformed json": ("POST", "/v1/chat", {"content": b"{not json"}, 400),
    "empty body": ("POST", "/v1/chat", {"content": b""}, 400),
    "not an object": ("POST", "/v1/chat", {"json": [1, 2]}, 400),
    "no messages": ("POST", "/v1/chat", {"json": {"model": "palmyra-x5"}}, 400),
    "empty messages": ("POST", "/v1/chat", {"json": chat_body(messages=[])}, 400),
    "bad role": (
        "POST",
        "/v1/chat",
        {"json": chat_body(messages=[{"role": "robot", "content": "x"}])},
        400,
    ),
    "string max_tokens": ("POST", "/v1/chat", {"json": chat_body(max_tokens="5")}, 400),
    "n zero": ("POST", "/v1/chat", {"json": chat_body(n=0)}, 400),
    "json_schema missing": (
        "POST",
        "/v1/chat",
        {"json": chat_body(response_format={"type": "json_schema"})},
        400,
    ),
    "structured output": (
        "POST",
        "/v1/chat",
        {"json": chat_body(response_format={"type": "json_schema", "json_schema": {"a": 1}})},
        400,
    ),
    "tool_choice names an absent function": (
        "POST",
        "/v1/chat",
        {
            "json": chat_body(
                tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            )
        },
        400,
    ),
    "unsupported schema feature": (
        "POST",
        "/v1/chat",
        {
            "json": chat_body(
                response_format={"type": "json_schema", "json_schema": {"schema": {"not": {}}}}
            )
        },
        400,
    ),
    "two built-in tools": (
        "POST",
        "/v1/chat",
        {
            "json": chat_body(
                tools=[
                    {"type": "llm", "function": {"description": "d", "model": "palmyra-x4"}},
                    {
                        "type": "web_search",
                        "function": {"include_domains": [], "exclude_domains": []},
                    },
                ]
            )
        },
        400,
    ),
    "image": (
        "POST",
        "/v1/chat",
        {
            "json": chat_body(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            }
                        ],
                    }
                ]
            )
        },
        400,
    ),
    "unknown model": ("POST", "/v1/chat", {"json": chat_body(model="gpt-4")}, 400),
    "removed model": ("POST", "/v1/chat", {"json": chat_body(model="palmyra-med")}, 400),
    "max_tokens over model cap": ("POST", "/v1/chat", {"json": chat_body(max_tokens=300)}, 400),
    "n over max_n": ("POST", "/v1/chat", {"json": chat_body(n=17)}, 400),
    "completions validation": ("POST", "/v1/completions", {"json": {"model": "palmyra-x5"}}, 400),
    "context overflow": (
        "POST",
        "/v1/chat",
        {"json": chat_body(messages=[{"role": "user", "content": "x" * 400}], max_tokens=200)},
        400,
    ),
    "too large": (
        "POST",
        "/v1/chat",
        {"json": chat_body(messages=[{"role": "user", "content": LONG * 2}])},
        413,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_every_error_source_renders_writers_envelope(client, name):
    method, path, kwargs, status = CASES[name]
    response = await client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert envelope_ok(response.json()), response.json()
    if 400 <= status < 500:
        assert response.headers.get("x-should-retry") == "false"


GATEWAY_KEYS = {
    "revoked key": ({}, "revoke", 401, "false"),
    "expired key": ({"expires_at": "2001-01-01T00:00:00.000+00:00"}, None, 401, "false"),
    "model out of scope": ({"models": ("palmyra-x4",)}, None, 403, "false"),
    "requests per minute": ({"rpm": 1}, "use", 429, None),
    "larger than tokens per minute": ({"tpm": 5}, None, 429, "false"),
}


@pytest.mark.parametrize("name", list(GATEWAY_KEYS))
async def test_every_gateway_refusal_renders_writers_envelope(app, client, name):
    fields, before, status, should_retry = GATEWAY_KEYS[name]
    key = app.state.keys.create(name, **fields)
    headers = {"Authorization": f"Bearer {key.secret}"}
    if before == "revoke":
        app.state.keys.revoke(key.id)
    elif before == "use":
        await client.post("/v1/chat", json=chat_body(), headers=headers)
    response = await client.post("/v1/chat", json=chat_body(), headers=headers)
    assert response.status_code == status, response.text
    assert envelope_ok(response.json()), response.json()
    assert response.headers.get("x-should-retry") == should_retry
    if should_retry is None:
        assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_engine_failure_before_the_stream_is_a_500_envelope(client, backend):
    backend.fail_decodes = 1
    response = await client.post("/v1/chat", json=chat_body(stream=True))
    assert response.status_code == 500
    assert envelope_ok(response.json())


async def test_engine_failure_mid_stream_is_one_error_event(client, backend):
    backend.reply = b"x" * 10
    original = backend.decode

    def fail_third(batch):
        if len(backend.decode_calls) == 3:
            backend.fail_decodes = 1
        return original(batch)

    backend.decode = fail_third
    response = await client.post("/v1/chat", json=chat_body(stream=True))
    assert response.status_code == 200
    frames = response.text.split("\n\n")
    error_frames = [f for f in frames if f.startswith("event: error\n")]
    assert len(error_frames) == 1
    assert "data: [DONE]" not in response.text
    import json

    assert envelope_ok(json.loads(error_frames[0].split("data: ", 1)[1]))


@pytest.mark.parametrize(
    "template",
    ["{% if %}", "{{ messages.nope() }}"],
    ids=["does not compile", "fails to render"],
)
async def test_a_broken_chat_template_is_a_500_never_retried(client, backend, template):
    backend.info = replace(backend.info, chat_template=template)
    response = await client.post("/v1/chat", json=chat_body())
    assert response.status_code == 500
    assert envelope_ok(response.json())
    assert response.headers["x-should-retry"] == "false"


async def test_loading_server_answers_503_with_retry_after():
    app = create_app(settings(), engines=None, store=open_store(None))
    app.state.runtime.ready = False  # lifespan not run: models never loaded
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        response = await client.post("/v1/chat", json=chat_body(), headers=headers)
        health = await client.get("/health")
    assert response.status_code == 503
    assert envelope_ok(response.json())
    assert int(response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in response.headers  # still loading: retrying will work
    assert health.status_code == 503


async def test_descriptions_name_what_to_fix(client):
    unknown = (await client.post("/v1/chat", json=chat_body(model="gpt-4"))).json()
    assert "gpt-4" in unknown["errors"][0]["description"]
    assert "palmyra-x5" in unknown["errors"][0]["description"]
    removed = (await client.post("/v1/chat", json=chat_body(model="palmyra-med"))).json()
    assert "palmyra-x5" in removed["errors"][0]["description"]
    overflow = (
        await client.post(
            "/v1/chat",
            json=chat_body(messages=[{"role": "user", "content": "x" * 400}], max_tokens=200),
        )
    ).json()
    text = overflow["errors"][0]["description"]
    assert "200" in text and "512" in text


async def test_a_stopping_server_answers_503_with_retry_after(app, client):
    app.state.gate.close()  # as the server does on SIGTERM
    response = await client.post("/v1/chat", json=chat_body())
    assert response.status_code == 503
    assert envelope_ok(response.json())
    assert int(response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in response.headers  # another instance, or this one restarted

"""The gateway in-process: keys with scopes, expiry and revocation, rate limits, usage records,
request limits. Statuses, envelopes and records are asserted on structure, never on prose."""

import asyncio
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inkstand.api.gateway import UNROUTED_CHARS, GatewayMiddleware
from inkstand.config import Settings
from inkstand.gateway import Gateway
from inkstand.metrics import Metrics
from inkstand.store import KeyStore, UsageLog, open_store

from .conftest import KEY, api_client, build_app, chat_body, settings

REPLY = "Hello world"


def with_key(client: httpx.AsyncClient, secret: str) -> dict:
    return {"headers": {"Authorization": f"Bearer {secret}"}}


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"tpe", "errors", "extras"} and len(body["errors"]) == 1
    return body["errors"][0]


def usage_rows(app) -> list[dict]:
    app.state.store.writer.submit(lambda conn: None).result()  # after every queued write
    return UsageLog(app.state.store).rows()


async def test_a_revoked_key_is_refused_on_its_next_request(app, client):
    key = app.state.keys.create("temp")
    assert (
        await client.post("/v1/chat", json=chat_body(), **with_key(client, key.secret))
    ).status_code == 200
    assert KeyStore(app.state.store).revoke(key.id)
    refused = await client.post("/v1/chat", json=chat_body(), **with_key(client, key.secret))
    assert refused.status_code == 401
    assert error_of(refused)["key"] == "fail.unauthorized.badToken"
    assert refused.headers["x-should-retry"] == "false"


async def test_an_expired_key_gets_401(app, client):
    key = app.state.keys.create("old", expires_at="2001-01-01T00:00:00.000+00:00")
    refused = await client.get("/v1/models", **with_key(client, key.secret))
    assert refused.status_code == 401
    assert error_of(refused)["key"] == "fail.unauthorized.badToken"


async def test_a_model_outside_the_keys_scope_gets_403(app, client):
    key = app.state.keys.create("x4 only", models=("palmyra-x4",))
    auth = with_key(client, key.secret)
    assert (
        await client.post("/v1/chat", json=chat_body(model="palmyra-x4"), **auth)
    ).status_code == 200
    for path, body in (
        ("/v1/chat", chat_body()),
        ("/v1/completions", {"model": "palmyra-x5", "prompt": "Hi"}),
    ):
        refused = await client.post(path, json=body, **auth)
        assert refused.status_code == 403
        error = error_of(refused)
        assert error["key"] == "fail.forbidden.insufficientAccessRights"
        assert error["extras"] == {"model": "palmyra-x5"}


async def test_a_scoped_key_lists_only_its_models(app, client):
    key = app.state.keys.create("x4 only", models=("palmyra-x4", "not-served"))
    listed = (await client.get("/v1/models", **with_key(client, key.secret))).json()
    assert [m["id"] for m in listed["models"]] == ["palmyra-x4"]
    everything = (await client.get("/v1/models")).json()
    assert [m["id"] for m in everything["models"]] == ["palmyra-x5", "palmyra-x4"]


async def test_requests_per_minute_refuse_with_429_and_retry_after(app, client):
    key = app.state.keys.create("slow", rpm=3)
    auth = with_key(client, key.secret)
    statuses = [(await client.get("/v1/models", **auth)).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = await client.get("/v1/models", **auth)
    assert error_of(refused)["key"] == "fail.tooManyRequests.quotaExceeded"
    assert error_of(refused)["extras"] == {"limit": "rpm", "value": 3}
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # other keys are not affected
    assert (await client.get("/v1/models")).status_code == 200


async def test_requests_per_minute_hold_under_concurrency(app, client):
    key = app.state.keys.create("burst", rpm=10)
    auth = with_key(client, key.secret)
    responses = await asyncio.gather(
        *(client.post("/v1/chat", json=chat_body(max_tokens=1), **auth) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 40


async def test_tokens_per_minute_reserve_then_settle(app, client):
    # the fake model's prompt for chat_body() is ~50 bytes-as-tokens; max_tokens 100 reserves
    # prompt + 100, the answer uses prompt + 12, so a second request fits only after settling
    first = await client.post("/v1/chat", json=chat_body(max_tokens=100))
    used = first.json()["usage"]["total_tokens"]
    prompt = first.json()["usage"]["prompt_tokens"]
    limit = prompt + 100 + used  # the first reservation plus one settled answer
    key = app.state.keys.create("tokens", tpm=limit)
    auth = with_key(client, key.secret)
    assert (
        await client.post("/v1/chat", json=chat_body(max_tokens=100), **auth)
    ).status_code == 200
    assert (
        await client.post("/v1/chat", json=chat_body(max_tokens=100), **auth)
    ).status_code == 200
    refused = await client.post("/v1/chat", json=chat_body(max_tokens=100), **auth)
    assert refused.status_code == 429
    assert error_of(refused)["extras"] == {"limit": "tpm", "value": limit}
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_a_request_over_the_whole_token_limit_is_not_retried(app, client):
    key = app.state.keys.create("tiny", tpm=10)
    refused = await client.post(
        "/v1/chat", json=chat_body(max_tokens=100), **with_key(client, key.secret)
    )
    assert refused.status_code == 429
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    assert error_of(refused)["extras"]["limit"] == "tpm"


async def test_every_request_is_recorded_with_its_usage(app, client):
    key = app.state.keys.create("acct")
    auth = with_key(client, key.secret)
    answer = (await client.post("/v1/chat", json=chat_body(max_tokens=3), **auth)).json()
    stream = await client.post(
        "/v1/completions", json={"model": "palmyra-x4", "prompt": "Hi", "stream": True}, **auth
    )
    assert stream.status_code == 200
    await client.post("/v1/chat", json=chat_body(model="nope"), **auth)
    rows = [r for r in usage_rows(app) if r["key_id"] == key.id]
    assert [(r["endpoint"], r["status"], r["key_id"]) for r in rows] == [
        ("/v1/chat", 200, key.id),
        ("/v1/completions", 200, key.id),
        ("/v1/chat", 400, key.id),
    ]
    chat, completion, bad = rows
    usage = answer["usage"]
    assert (chat["model"], chat["prompt_tokens"], chat["completion_tokens"]) == (
        "palmyra-x5",
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert chat["finish_reason"] == "length" and chat["latency_ms"] > 0
    assert completion["model"] == "palmyra-x4"
    assert completion["prompt_tokens"] == len(b"Hi")
    assert completion["completion_tokens"] == len(REPLY) + 1
    assert completion["finish_reason"] == "stop"
    assert bad["model"] == "nope" and bad["completion_tokens"] == 0
    listed = {k.id: k for k in KeyStore(app.state.store).list()}
    assert listed[key.id].last_used_at == rows[2]["at"]


async def test_the_record_is_committed_before_the_last_body_message():
    """The middleware holds back the final message until the record is on disk."""
    store = open_store(None)
    keys = KeyStore(store, ("k",))
    gateway = Gateway(Settings(data_dir="unused", models=()), keys, UsageLog(store))
    seen_at_end: list[int] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            seen_at_end.append(len(UsageLog(store).rows()))

    scope = {
        "type": "http",
        "path": "/v1/chat",
        "method": "POST",
        "headers": [(b"authorization", b"Bearer k")],
    }
    await GatewayMiddleware(app, gateway, Metrics())(scope, None, send)
    assert seen_at_end == [1]
    store.close()


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        (chat_body(messages=[{"role": "user", "content": "x"}] * 6), "max_messages"),
        (chat_body(n=4), "max_n"),
        (chat_body(max_tokens=300), "max_output_tokens"),
    ],
    ids=["messages", "n", "max_tokens"],
)
async def test_request_limits_name_the_limit(limited_client, body, limit):
    refused = await limited_client.post("/v1/chat", json=body)
    assert refused.status_code == 400
    error = error_of(refused)
    assert error["extras"]["limit"] == limit
    assert str(error["extras"]["value"]) in error["description"]


async def test_best_of_is_capped_like_n(limited_client):
    body = {"model": "palmyra-x5", "prompt": "Hi", "best_of": 4}
    refused = await limited_client.post("/v1/completions", json=body)
    assert refused.status_code == 400
    assert error_of(refused)["extras"] == {"limit": "max_n", "value": 3}


@pytest.fixture
async def limited_client(backend):
    app = build_app(backend, settings(max_messages=5, max_n=3))
    async with api_client(app, lifespan=True) as client:
        yield client


async def test_with_the_gateway_off_nothing_is_limited_or_recorded(backend):
    app = build_app(backend, settings(gateway=False, rpm=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            auth = {"Authorization": f"Bearer {KEY}"}
            statuses = [
                (await client.get("/v1/models", headers=auth)).status_code for _ in range(3)
            ]
            assert statuses == [200, 200, 200]
            assert (await client.get("/v1/models")).status_code == 401
            assert usage_rows(app) == []


async def test_server_defaults_apply_to_keys_without_their_own_limits(backend):
    app = build_app(backend, settings(rpm=2))
    async with app.router.lifespan_context(app):
        own = app.state.keys.create("own", rpm=0)  # 0: this key is not limited
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for secret, expected in ((KEY, [200, 200, 429]), (own.secret, [200, 200, 200])):
                auth = {"Authorization": f"Bearer {secret}"}
                got = [(await client.get("/v1/models", headers=auth)).status_code for _ in range(3)]
                assert got == expected


async def test_an_unexpected_failure_is_recorded_as_500(app, client, backend):
    def broken(text, *, add_special=True):
        raise RuntimeError("tokenizer crashed")

    backend.tokenize = broken
    response = await client.post("/v1/chat", json=chat_body())
    assert response.status_code == 500
    (row,) = [r for r in usage_rows(app) if r["endpoint"] == "/v1/chat"]
    assert (row["status"], row["model"], row["key_id"]) == (500, "palmyra-x5", "configured")


async def test_the_access_log_names_the_key_by_id_never_by_secret(app, client, caplog):
    key = app.state.keys.create("logged")
    with caplog.at_level("INFO", logger="inkstand.access"):
        await client.get("/v1/models", **with_key(client, key.secret))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "inkstand.access"]
    assert line.split()[-1] == f"key={key.id}"
    assert key.secret not in caplog.text


async def test_a_failed_request_uses_no_tokens_and_gives_its_hold_back(app, client, backend):
    prompt = (await client.post("/v1/chat", json=chat_body(max_tokens=1))).json()["usage"][
        "prompt_tokens"
    ]
    limit = prompt + 100 + prompt // 2  # one reservation fits; a held prompt beside it does not
    key = app.state.keys.create("failing", tpm=limit)
    auth = with_key(client, key.secret)
    backend.fail_decodes = 1
    failed = await client.post("/v1/chat", json=chat_body(max_tokens=100), **auth)
    assert failed.status_code == 500
    after = await client.post("/v1/chat", json=chat_body(max_tokens=100), **auth)
    assert after.status_code == 200
    (row,) = [r for r in usage_rows(app) if r["key_id"] == key.id and r["status"] == 500]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (0, 0)


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample `name` in a Prometheus text exposition."""
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and not sample.labels
    ]
    return value


async def test_unauthenticated_requests_are_counted_never_stored(app, client):
    refusals = [
        ("POST", "/v1/chat", ""),
        ("GET", "/v1/models", "Bearer wrong"),
        ("GET", "/v1/" + "x" * 50_000 + "%0A%1b", "Basic nope"),
    ]
    for method, path, auth in refusals:
        response = await client.request(method, path, headers={"Authorization": auth})
        assert response.status_code == 401
    assert (await client.get("/v1/models")).status_code == 200  # a key's request is stored
    assert [(r["endpoint"], r["key_id"]) for r in usage_rows(app)] == [("/v1/models", "configured")]
    exposition = (await client.get("/metrics")).text
    assert metric(exposition, "inkstand:unauthenticated_requests_total") == len(refusals)


async def test_a_record_names_its_route_never_the_raw_path(app, client):
    await client.post("/v1/models")  # 405 on a known route: the route
    await client.get("/v1/" + "a" * 5000)  # 404: a short form
    await client.get("/v1/%0Aforged%1b[31m")  # 404: control characters escaped
    endpoints = [r["endpoint"] for r in usage_rows(app)]
    assert len(endpoints) == 3
    assert endpoints[0] == "/v1/models"
    assert endpoints[1].startswith("/v1/aaa") and len(endpoints[1]) == UNROUTED_CHARS
    assert endpoints[2] == "/v1/\\nforged\\x1b[31m"


async def test_with_no_usable_key_the_401_says_how_to_create_one(backend):
    app = build_app(backend, replace(settings(), api_key=()))
    async with api_client(app, lifespan=True) as client:
        closed = await client.get("/v1/models")
        assert closed.status_code == 401
        assert "inkstand keys create" in error_of(closed)["description"]
        key = app.state.keys.create("first")
        wrong = await client.get("/v1/models")
        assert wrong.status_code == 401
        assert "inkstand keys create" not in error_of(wrong)["description"]
        assert (await client.get("/v1/models", **with_key(client, key.secret))).status_code == 200

"""The gateway end to end: keys made and revoked with `inkstand keys` while the server runs,
scopes, rate limits under concurrency, usage in `inkstand usage`, request limits; all through
the official SDK. Keys are made per test, so their limits and usage are the test's own."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import writerai

from inkstand.store.db import DB_NAME, connect, migrate

from .support import (
    MODEL,
    TALKATIVE,
    Server,
    admin,
    create_key,
    running_server,
    stop_inside,
    usage_report,
)

pytestmark = pytest.mark.e2e


def sdk(server: Server, secret: str) -> writerai.Writer:
    return writerai.Writer(api_key=secret, base_url=server.url, max_retries=0)


def one_token(client: writerai.Writer, model: str = MODEL):
    return client.chat.chat(model=model, messages=TALKATIVE, max_tokens=1, temperature=0)


def test_a_key_made_while_the_server_runs_works_and_revoking_it_takes_effect_at_once(server):
    key = create_key(server, "revocable")
    with sdk(server, key["secret"]) as client:
        assert one_token(client).choices[0].finish_reason == "length"
        admin("keys", "revoke", key["id"], "--data-dir", str(server.data_dir))
        with pytest.raises(writerai.AuthenticationError) as refused:
            one_token(client)
    assert refused.value.status_code == 401
    listed = admin("keys", "list", "--json", "--data-dir", str(server.data_dir)).stdout
    assert key["secret"] not in listed and key["id"] in listed


def test_an_expired_key_gets_401(server):
    key = create_key(server, "expired", "--expires", "2020-01-01")
    with sdk(server, key["secret"]) as client, pytest.raises(writerai.AuthenticationError):
        one_token(client)


def test_a_model_outside_the_keys_scope_gets_403(server):
    key = create_key(server, "scoped", "--models", "palmyra-x4")
    with sdk(server, key["secret"]) as client:
        assert one_token(client, "palmyra-x4").choices
        with pytest.raises(writerai.PermissionDeniedError) as refused:
            one_token(client, "palmyra-x5")
        with pytest.raises(writerai.PermissionDeniedError):
            client.completions.create(model="palmyra-x5", prompt="Hi", max_tokens=1)
    assert refused.value.body["errors"][0]["key"] == "fail.forbidden.insufficientAccessRights"


def test_exactly_the_limit_passes_out_of_fifty_parallel_requests(server):
    key = create_key(server, "rpm10", "--rpm", "10")
    with sdk(server, key["secret"]) as client, ThreadPoolExecutor(50) as pool:

        def attempt(_: int):
            try:
                one_token(client)
                return 200, None
            except writerai.RateLimitError as exc:
                return exc.status_code, exc.response.headers.get("retry-after")

        outcomes = list(pool.map(attempt, range(50)))
    assert sorted(status for status, _ in outcomes) == [200] * 10 + [429] * 40
    waits = [int(wait) for status, wait in outcomes if status == 429]
    assert all(1 <= wait <= 60 for wait in waits)
    (total,) = usage_report(server.data_dir, "--key", key["id"])
    assert (total["requests"], total["succeeded"], total["rate_limited"]) == (50, 10, 40)


def test_tokens_per_minute_are_reserved_then_settled_to_what_was_used(server, client):
    # Measure the greedy answer once: its prompt size P and where a stop sequence ends it.
    probe = client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=24, temperature=0)
    prompt = probe.usage.prompt_tokens
    stop = stop_inside(probe.choices[0].message.content)
    early = client.chat.chat(
        model=MODEL, messages=TALKATIVE, max_tokens=64, temperature=0, stop=[stop]
    )
    used = early.usage.prompt_tokens + early.usage.completion_tokens
    assert early.usage.completion_tokens < 64
    # Room for one reservation (P + 64) plus one settled answer, not for two reservations.
    key = create_key(server, "tpm", "--tpm", str(prompt + 64 + used))
    with sdk(server, key["secret"]) as limited:
        for _ in range(2):
            limited.chat.chat(
                model=MODEL, messages=TALKATIVE, max_tokens=64, temperature=0, stop=[stop]
            )
        with pytest.raises(writerai.RateLimitError) as refused:
            limited.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=64, temperature=0)
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert refused.value.body["errors"][0]["extras"]["limit"] == "tpm"


def test_usage_reports_every_request_with_its_tokens(server):
    key = create_key(server, "accounted")
    with sdk(server, key["secret"]) as client:
        chat = client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=3, temperature=0)
        list(client.completions.create(model="palmyra-x4", prompt="Hi", max_tokens=2, stream=True))
        with pytest.raises(writerai.BadRequestError):
            client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=100_000)
    (total,) = usage_report(server.data_dir, "--key", key["id"])
    assert (total["requests"], total["succeeded"]) == (3, 2)
    by_model = {
        row["model"]: row
        for row in usage_report(server.data_dir, "--key", key["id"], "--by", "model")
    }
    assert by_model[MODEL]["prompt_tokens"] == chat.usage.prompt_tokens
    assert by_model[MODEL]["completion_tokens"] == chat.usage.completion_tokens == 3
    assert by_model["palmyra-x4"]["completion_tokens"] == 2
    (today,) = usage_report(server.data_dir, "--key", key["id"], "--by", "day")
    assert today["requests"] == 3
    assert usage_report(server.data_dir, "--key", key["id"], "--since", "2999-01-01") == []
    keys = admin("keys", "list", "--json", "--data-dir", str(server.data_dir)).stdout
    assert f'"id": "{key["id"]}"' in keys


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({"messages": TALKATIVE * 1001}, "max_messages"),
        ({"n": 17}, "max_n"),
        ({"max_tokens": 5000, "model": "palmyra-x4"}, "max_output_tokens"),
    ],
    ids=["messages", "n", "max_tokens"],
)
def test_request_limits_are_400s_that_name_the_limit(client, fields, limit):
    request = {"model": MODEL, "messages": TALKATIVE, "max_tokens": 1, **fields}
    with pytest.raises(writerai.BadRequestError) as refused:
        client.chat.chat(**request)
    error = refused.value.body["errors"][0]
    assert error["extras"]["limit"] == limit
    assert str(error["extras"]["value"]) in error["description"]


def test_a_data_dir_of_the_first_release_is_upgraded_and_its_key_still_works(tmp_path):
    """Schema 1 written as the first release wrote it; the server migrates it on start."""
    data = tmp_path / "data"
    data.mkdir()
    conn = connect(str(data / DB_NAME))
    migrate(conn, upto=1)
    salt, secret = b"first-release-16", "ink_first-release-key-000000000000"
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, salt, hash, created_at) "
        "VALUES ('key_first', 'default', ?, ?, ?, '2026-06-01T00:00:00+00:00')",
        (secret[:12], salt, hashlib.sha256(salt + secret.encode()).digest()),
    )
    conn.close()
    with running_server(tmp_path, "--ctx-size", "512", "--threads", "1", data_dir=data) as server:
        assert "WRITER_API_KEY" not in server.log()  # the old key counts: no new one made
        with sdk(server, secret) as client:
            assert one_token(client).choices[0].finish_reason == "length"
        (total,) = usage_report(data, "--key", "key_first")
        assert total["succeeded"] == 1

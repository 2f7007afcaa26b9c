"""Responses, stream chunks, the model list and error envelopes against Writer's OpenAPI schemas.

The schemas come from Writer's OpenAPI document vendored in `tests/contract/`, converted to
JSON Schema with null allowed only where spec section 8 says the server emits it (see
`contract.openapi.NULL_BY_SPEC_8`).
"""

from __future__ import annotations

import httpx
import pytest
import writerai

from .support import KEY, greedy, stream_chunks

pytestmark = pytest.mark.e2e


def assert_valid(validator, instance) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "fields",
    [{}, {"n": 2, "logprobs": True}, {"stop": ["\n", "."], "max_tokens": 16}],
    ids=["plain", "n-logprobs", "stop"],
)
def test_response_matches_chat_response(http, writer_schema, fields):
    response = http.post("/v1/chat", json=greedy(**fields))
    assert response.status_code == 200
    assert_valid(writer_schema["chat_response"], response.json())


@pytest.mark.parametrize(
    "fields",
    [{}, {"n": 2, "logprobs": True, "stream_options": {"include_usage": True}}],
    ids=["plain", "n-logprobs-usage"],
)
def test_every_chunk_matches_chat_completion_chunk(http, writer_schema, fields):
    for chunk in stream_chunks(http, greedy(**fields)):
        assert_valid(writer_schema["chat_completion_chunk"], chunk)


def test_model_list_matches_models_response(http, writer_schema):
    assert_valid(writer_schema["models_response"], http.get("/v1/models").json())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat", greedy(model="nope-model")),
        ("POST", "/v1/chat", {"messages": []}),
        ("GET", "/v1/nowhere", None),
        ("GET", "/v1/chat", None),
    ],
    ids=["bad-request", "validation", "not-found", "method"],
)
def test_error_matches_fail_response(http, writer_schema, method, path, body):
    response = http.request(method, path, json=body)
    assert response.status_code >= 400
    assert_valid(writer_schema["fail_response"], response.json())


def test_unauthorized_matches_fail_response(server, writer_schema):
    response = httpx.post(f"{server.url}/v1/chat", json=greedy())
    assert response.status_code == 401
    assert_valid(writer_schema["fail_response"], response.json())


def test_schemas_reject_what_writer_does_not_allow(writer_schema):
    """The conversion is not vacuous: a wrong object or a stray null still fails."""
    validator = writer_schema["chat_response"]
    good = {
        "id": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
        "object": "chat.completion",
        "created": 1,
        "model": "palmyra-x5",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"content": "", "role": "assistant", "refusal": None},
            }
        ],
    }
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "object": "chat.completion.chunk"})
    assert not validator.is_valid({**good, "id": "not-a-uuid"})
    assert not validator.is_valid({**good, "created": None})
    message = {"content": None, "role": "assistant", "refusal": None}
    assert not validator.is_valid({**good, "choices": [{**good["choices"][0], "message": message}]})


@pytest.fixture(scope="module")
def strict_client(server):
    """The SDK validating every response against its own types (spec 2.8)."""
    with writerai.Writer(
        api_key=KEY, base_url=server.url, max_retries=0, _strict_response_validation=True
    ) as sdk:
        yield sdk


def test_strict_sdk_accepts_responses(strict_client):
    response = strict_client.chat.chat(**greedy(n=2, logprobs=True))
    assert len(response.choices) == 2
    assert strict_client.models.list().models


def test_strict_sdk_accepts_every_chunk(strict_client):
    fields = greedy(n=2, logprobs=True, stream_options={"include_usage": True})
    with strict_client.chat.chat(**fields, stream=True) as stream:
        chunks = list(stream)
    assert chunks[-1].usage is not None

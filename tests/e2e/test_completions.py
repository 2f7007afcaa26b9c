"""`POST /v1/completions` end to end: the official SDK's `completions.create()`, whole and
streamed, and the raw wire shapes against Writer's OpenAPI schemas."""

from __future__ import annotations

import json

import pytest
import writerai

from .support import MODEL, sse_events
from .test_schema import assert_valid

pytestmark = pytest.mark.e2e

PROMPT = "The history of printing began"


def test_sdk_completion_whole(client):
    completion = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, random_seed=1
    )
    assert isinstance(completion, writerai.types.Completion)
    assert len(completion.choices) == 1 and completion.choices[0].text
    assert completion.model == MODEL


def test_sdk_completion_streamed_matches_the_whole_answer(client):
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    stream = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stream=True
    )
    values = [chunk.value for chunk in stream]
    assert values[0] == "" and len(values) > 1
    assert "".join(values) == whole.choices[0].text


def test_stop_and_best_of(client, engine):
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
    text = whole.choices[0].text
    word = next(w for w in text.split()[1:] if text.find(w) > 0)
    stopped = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=[word]
    )
    assert stopped.choices[0].text == text[: text.find(word)]
    best = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "best_of": 3, "temperature": 0.8}
    if engine == "upstream":  # no engine here picks the best of several: a 400 naming it
        with pytest.raises(writerai.BadRequestError, match="best_of"):
            client.completions.create(**best)
        return
    answer = client.completions.create(**best, random_seed=5)
    assert len(answer.choices) == 1 and isinstance(answer.choices[0].text, str)


def test_wire_shapes_match_writers_schemas(http, writer_schema):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200
    assert_valid(writer_schema["completions_response"], response.json())
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        raw = streamed.read().decode()
    events = sse_events(raw)[:-1]
    assert events
    for data in events:
        assert_valid(writer_schema["streaming_data"], json.loads(data))


def test_bad_completion_requests_get_the_sdks_errors(client):
    with pytest.raises(writerai.BadRequestError):
        client.completions.create(model="palmyra-nope", prompt=PROMPT)
    with pytest.raises(writerai.BadRequestError):
        client.completions.create(model=MODEL, prompt=PROMPT, best_of=2, stream=True)

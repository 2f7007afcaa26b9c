"""`GET /v1/models` through the SDK and raw, and `GET /health`, which needs no key."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_sdk_lists_the_served_models_with_names(client):
    models = client.models.list().models
    ids = [model.id for model in models]
    assert {"palmyra-x5", "palmyra-x4"} <= set(ids)
    assert len(ids) == len(set(ids))
    assert all(isinstance(model.name, str) and model.name for model in models)


def test_model_list_has_writer_shape(http):
    payload = http.get("/v1/models").json()
    assert list(payload) == ["models"]
    assert all(set(model) == {"id", "name"} for model in payload["models"])


def test_every_listed_model_answers(client):
    for model in client.models.list().models:
        response = client.chat.chat(
            model=model.id, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )
        assert response.model == model.id


def test_health_needs_no_key(server):
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"

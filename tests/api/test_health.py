"""`GET /health` names the models that are not ready, never why: no file paths, no error text.
The reason goes to the log and to authenticated callers, whose requests get a 503 that tells
the SDK not to retry (a model that failed to load stays failed)."""

import asyncio

import httpx

from inkstand.app import create_app
from inkstand.config import ModelSpec, Settings
from inkstand.store import open_store

from .conftest import KEY, chat_body

SECRET_DIR = "/nowhere/private-models"


def broken_settings() -> Settings:
    path = f"{SECRET_DIR}/palmyra.gguf"
    models = (
        ModelSpec("palmyra-x5", "Palmyra X5", path, 512, 256),
        ModelSpec("palmyra-x4", "Palmyra X4", path, 512, 128),
    )
    return Settings(api_key=(KEY,), data_dir="unused", models=models)


async def wait_for_health(client: httpx.AsyncClient, status: str) -> httpx.Response:
    for _ in range(300):
        response = await client.get("/health")
        if response.json()["status"] == status:
            return response
        await asyncio.sleep(0.02)
    raise AssertionError(f"/health never said {status}: {response.json()}")


async def test_health_while_loading_names_the_models_and_asks_to_retry():
    app = create_app(broken_settings(), store=open_store(None))  # lifespan not run: loading
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "loading",
        "models": {"palmyra-x5": "loading", "palmyra-x4": "loading"},
    }
    assert int(response.headers["retry-after"]) >= 1
    app.state.store.close()


async def test_a_failed_model_is_named_without_its_path_and_callers_are_told_not_to_retry():
    app = create_app(broken_settings(), store=open_store(None))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        health = await wait_for_health(client, "failed")
        assert health.status_code == 503
        assert health.json() == {
            "status": "failed",
            "models": {"palmyra-x5": "failed", "palmyra-x4": "failed"},
        }
        assert "retry-after" not in health.headers
        refused = await client.post(
            "/v1/chat", json=chat_body(), headers={"Authorization": f"Bearer {KEY}"}
        )
    assert refused.status_code == 503
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    assert SECRET_DIR in refused.json()["errors"][0]["description"]  # the caller has a key
    assert SECRET_DIR not in health.text

"""The app in-process over httpx's ASGI transport, on the scripted fake backend."""

import contextlib

import httpx
import pytest

from inkstand.app import create_app
from inkstand.backends.fake import FakeBackend
from inkstand.config import ModelSpec, Settings
from inkstand.engine import Engine
from inkstand.metrics import Metrics
from inkstand.store import open_store

KEY = "test-key"
FAKE_PATH = "fake.gguf"
CTX = 512


def settings(**overrides) -> Settings:
    models = (
        ModelSpec("palmyra-x5", "Palmyra X5", FAKE_PATH, CTX, 256),
        ModelSpec("palmyra-x4", "Palmyra X4", FAKE_PATH, CTX, 128),
    )
    return Settings(api_key=(KEY,), data_dir="unused", models=models, **overrides)


@pytest.fixture
def backend():
    return FakeBackend("Hello world", n_ctx=CTX, n_seq_max=4)


@pytest.fixture
async def app(backend):
    metrics = Metrics()
    engine = Engine(backend, observer=metrics)
    engine.start()
    app = create_app(
        settings(max_body_bytes=4096),
        engines={(FAKE_PATH, CTX): engine},
        store=open_store(None),
        metrics=metrics,
    )
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def api_client(app, *, lifespan: bool = False):
    """An httpx client calling `app` in process with the test key; `lifespan` runs it too."""
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        yield await stack.enter_async_context(
            httpx.AsyncClient(
                transport=transport,
                base_url="http://inkstand.test",
                headers={"Authorization": f"Bearer {KEY}"},
            )
        )


@pytest.fixture
async def client(app):
    async with api_client(app) as client:
        yield client


def chat_body(**fields) -> dict:
    body = {"model": "palmyra-x5", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return body

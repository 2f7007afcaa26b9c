"""The app in-process over httpx's ASGI transport, on the scripted fake backend.

A module marked `knowledge` (the Files and Graphs API tests) gets, as `app`, the app with
small file limits and its ingestion worker stopped (`knowledge_app`).
"""

import contextlib

import httpx
import pytest

from inkstand.app import create_app
from inkstand.backends.fake import FakeBackend
from inkstand.config import ModelSpec, Settings
from inkstand.engine import Engine
from inkstand.metrics import Metrics
from inkstand.runtime import engine_key
from inkstand.store import open_store

from ..contract.openapi import writer_validators

KEY = "test-key"
FAKE_PATH = "fake.gguf"
CTX = 512
MAX_FILE = 64 * 1024  # `max_file_bytes` and `max_storage_bytes` of the knowledge app
MAX_STORAGE = 160 * 1024


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "knowledge: `app` is the knowledge app (small file limits, no ingestion)"
    )


def settings(**overrides) -> Settings:
    models = (
        ModelSpec("palmyra-x5", "Palmyra X5", FAKE_PATH, CTX, 256),
        ModelSpec("palmyra-x4", "Palmyra X4", FAKE_PATH, CTX, 128),
    )
    # Tools are planned in place: a worker process per app would cost a second each
    # (test_limits.py plans in the worker).
    fields = {"planner_processes": 0, **overrides}
    return Settings(api_key=(KEY,), data_dir="unused", models=models, **fields)


@pytest.fixture
def backend():
    return FakeBackend("Hello world", n_ctx=CTX, n_seq_max=4)


def build_app(backend: FakeBackend, app_settings: Settings):
    """The app on one started engine over `backend`, serving every model in `app_settings`."""
    metrics = Metrics()
    engine = Engine(backend, observer=metrics)
    engine.start()
    engines = {engine_key(spec): engine for spec in app_settings.models}
    return create_app(app_settings, engines=engines, store=open_store(None), metrics=metrics)


@pytest.fixture
async def app(request, backend):
    if request.node.get_closest_marker("knowledge"):
        async with knowledge_app(backend) as started:
            yield started
        return
    app = build_app(backend, settings(max_body_bytes=4096))
    async with app.router.lifespan_context(app):
        yield app


class WakeRecorder:
    """Stands in for the ingestion worker: counts the wake-ups the API gives it."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def close(self) -> None:
        pass


def quiet_ingestion(app) -> WakeRecorder:
    """Stop the app's ingestion worker and put a `WakeRecorder` in its place, so files'
    statuses change only as a test says."""
    worker = getattr(app.state, "ingestion", None)
    if worker is not None and hasattr(worker, "close"):
        worker.close()
    app.state.ingestion = WakeRecorder()
    return app.state.ingestion


@contextlib.asynccontextmanager
async def knowledge_app(backend):
    """The app, started, with small file limits and its ingestion worker stopped."""
    app = build_app(backend, settings(max_file_bytes=MAX_FILE, max_storage_bytes=MAX_STORAGE))
    async with app.router.lifespan_context(app):
        quiet_ingestion(app)
        yield app


@pytest.fixture(scope="session")
def schemas():
    """Validators for Writer's OpenAPI component schemas (tests/contract), by name."""
    return writer_validators()


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

"""`create_app()`: build the ASGI application and wire its parts in the lifespan.

Tests pass ready engines (`engines=`, built with `metrics` as their observer) and an
in-memory store; the server passes neither and the models load in the background.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager, suppress

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from inkstand.api import errors, playground
from inkstand.api import files as files_api
from inkstand.api import graphs as graphs_api
from inkstand.api import openai as openai_api
from inkstand.api.chat import chat
from inkstand.api.completions import completions
from inkstand.api.gate import Gate, GateMiddleware
from inkstand.api.gateway import GatewayMiddleware
from inkstand.api.health import health
from inkstand.api.metrics import prometheus_metrics
from inkstand.api.middleware import AccessLogMiddleware
from inkstand.api.models import list_models
from inkstand.api.question import question
from inkstand.api.translation import translation
from inkstand.config import Settings
from inkstand.engine import Engine
from inkstand.errors import InkstandError
from inkstand.gateway import Gateway
from inkstand.knowledge.ingest import Ingestion
from inkstand.metrics import Metrics
from inkstand.runtime import EngineKey, Runtime
from inkstand.store import KeyStore, Store, UsageLog, open_store
from inkstand.store.db import connect
from inkstand.store.files import FileStore
from inkstand.store.graphs import GraphStore
from inkstand.store.usage import keep_pruned, retention_cutoff


def create_app(
    settings: Settings,
    *,
    engines: dict[EngineKey, Engine] | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    store = store if store is not None else open_store(settings.data_dir)
    keys = KeyStore(store, settings.api_key)
    usage = UsageLog(store)
    files = FileStore(store)  # blobs beside the database: the data dir, or a test's temp dir
    gateway = Gateway(settings, keys, usage)
    telemetry = metrics if metrics is not None else Metrics()
    runtime = Runtime(settings, observer=telemetry)
    runtime.knowledge = lambda: connect(store.path)  # the `graph` tool's reads, off the loop
    ingestion = Ingestion(
        store.writer.submit, files.blobs.read, processes=settings.ingest_processes
    )
    telemetry.watch(lambda: runtime.engines.values())
    telemetry.watch_store(store.size)
    retention_cutoff(settings.usage_retention_days)  # a bad setting fails here, not in the task
    gate = Gate()  # closed by the server when it stops

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await asyncio.to_thread(runtime.start_semantic)  # before the worker that embeds
        if engines is not None:
            runtime.install(engines)
        else:
            runtime.load_in_background()
            settle_heap()
        runtime.start_upstreams()
        ingestion.start(runtime.embedder)  # files left in progress are done first
        pruning = asyncio.create_task(keep_pruned(usage, settings.usage_retention_days))
        try:
            yield
        finally:
            pruning.cancel()
            with suppress(asyncio.CancelledError):
                await pruning
            try:
                await runtime.close_upstreams()
                await asyncio.to_thread(ingestion.close)  # its worker processes end first
                runtime.close()  # the planner's worker processes, the engines' threads
            finally:
                store.close()  # whatever failed above, the writer commits what is queued

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/graphs/question", question, methods=["POST"]),
            Route("/v1/translation", translation, methods=["POST"]),
            *files_api.ROUTES,
            *graphs_api.ROUTES,
            *openai_api.ROUTES,
            *playground.routes(settings),
        ],
        middleware=[
            Middleware(AccessLogMiddleware),
            Middleware(GateMiddleware, gate=gate),
            Middleware(GatewayMiddleware, gateway=gateway, metrics=telemetry),
        ],
        exception_handlers={
            InkstandError: errors.on_inkstand_error,
            HTTPException: errors.on_http_exception,
            Exception: errors.on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.gate = gate
    app.state.metrics = telemetry
    app.state.keys = keys
    app.state.gateway = gateway
    app.state.store = store
    app.state.files = files
    app.state.ingestion = ingestion
    app.state.graphs = GraphStore(store, files)
    return app


def settle_heap() -> None:
    """Put what is alive at start-up (modules, pydantic's validators, the app) out of the
    cycle collector's sight.

    A full collection walks every tracked object while holding the GIL; a request that
    allocates tens of thousands of objects (a large schema) triggers one, and in a started
    server it held the event loop for 25-50 ms. Frozen objects are not walked, so it costs
    what the live requests hold. The server calls this, not tests above the engine seam
    (they build hundreds of apps in one process).
    """
    gc.collect()
    gc.freeze()

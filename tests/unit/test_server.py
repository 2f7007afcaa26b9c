"""Stopping: `GracefulServer` on a real socket, stopped by real signals sent to this process.

The app is a small Starlette app behind the gate, streaming SSE from a scripted source;
`cut` plays the engines' drain (their requests end with a 503). A failure here that kills
the test run with SIGTERM means the server let uvicorn raise the signal again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from dataclasses import replace

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from inkstand.api.gate import Gate, GateMiddleware
from inkstand.api.health import health
from inkstand.api.sse import DONE, SSEResponse, encode_data
from inkstand.cli import _parser
from inkstand.config import ConfigError, Settings, load_settings
from inkstand.errors import OverloadedError
from inkstand.server import GracefulServer, shutdown_grace


class Stopping:
    """A served app, its server, and what happened to them."""

    def __init__(self, grace: float) -> None:
        self.gate = Gate()
        self.was_cut = asyncio.Event()
        self.closed = False  # the app's lifespan ended
        self.app = self._app()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_config=None, lifespan="on", loop="asyncio"
        )
        self.server = GracefulServer(config, self.gate, self.was_cut.set, grace)

    def _app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            self.closed = True

        async def stream(request):
            count = int(request.query_params.get("count", "1000000"))
            return SSEResponse(self._frames(count), _nothing)

        app = Starlette(
            routes=[Route("/health", health), Route("/stream", stream)],
            middleware=[Middleware(GateMiddleware, gate=self.gate)],
            lifespan=lifespan,
        )
        app.state.gate = self.gate
        app.state.runtime = _Runtime()
        return app

    async def _frames(self, count: int):
        for i in range(count):
            if self.was_cut.is_set():
                raise OverloadedError("The server is shutting down; retry shortly.")
            yield {"i": i}
            await asyncio.sleep(0.02)

    @property
    def url(self) -> str:
        (listener,) = self.server.servers
        return f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"


class _Runtime:
    ready = True

    def model_states(self) -> dict:
        return {"m": "ready"}


async def _nothing() -> None:
    pass


@pytest.fixture
async def serving(request):
    stopping = Stopping(grace=getattr(request, "param", 30.0))
    task = asyncio.create_task(stopping.server.serve())
    while not stopping.server.started:
        await asyncio.sleep(0.01)
    stopping.task = task
    yield stopping
    if not task.done():
        stopping.server.should_exit = stopping.server.force_exit = True
        await asyncio.wait_for(task, 10)


async def stopped(stopping: Stopping) -> None:
    await asyncio.wait_for(asyncio.shield(stopping.task), 10)


async def closing(stopping: Stopping) -> None:
    while not stopping.gate.closed:
        await asyncio.sleep(0.01)


async def test_answers_in_flight_finish_and_new_requests_get_503(serving):
    async with (
        httpx.AsyncClient(base_url=serving.url, timeout=10) as http,
        httpx.AsyncClient(base_url=serving.url, timeout=10) as kept,
        http.stream("GET", "/stream", params={"count": 40}) as answer,
    ):
        assert (await kept.get("/health")).status_code == 200  # a kept-alive connection
        frames = answer.aiter_raw()
        received = await anext(frames)
        signal.raise_signal(signal.SIGTERM)
        await closing(serving)
        refused = await kept.get("/stream")  # still open: told to retry, not cut
        async with httpx.AsyncClient(base_url=serving.url) as late:
            healthy = await late.get("/health")
        async for piece in frames:
            received += piece
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["connection"] == "close"
    assert refused.json()["errors"][0]["key"] == "fail.serviceUnavailable.temporary"
    assert healthy.status_code == 503 and healthy.json()["status"] == "stopping"
    assert received.endswith(encode_data({"i": 39}) + DONE)
    await stopped(serving)
    assert serving.closed and not serving.was_cut.is_set()


async def test_a_second_signal_cuts_the_answers_in_flight(serving):
    async with (
        httpx.AsyncClient(base_url=serving.url, timeout=10) as http,
        http.stream("GET", "/stream") as answer,
    ):
        signal.raise_signal(signal.SIGTERM)
        await closing(serving)
        assert not serving.task.done()
        signal.raise_signal(signal.SIGINT)
        body = (await answer.aread()).decode()
    assert body.rstrip("\n").rsplit("\n\n", 1)[-1].startswith("event: error\n")
    await stopped(serving)
    assert serving.closed and serving.was_cut.is_set()


@pytest.mark.parametrize("serving", [0.2], indirect=True)
async def test_answers_still_running_when_the_grace_ends_are_cut(serving):
    async with (
        httpx.AsyncClient(base_url=serving.url, timeout=10) as http,
        http.stream("GET", "/stream") as answer,
    ):
        signal.raise_signal(signal.SIGTERM)
        body = (await answer.aread()).decode()
    assert "event: error\n" in body and serving.was_cut.is_set()
    await stopped(serving)


async def test_with_nothing_in_flight_it_stops_at_once_and_stops_listening(serving):
    url = serving.url
    signal.raise_signal(signal.SIGTERM)
    await stopped(serving)
    assert serving.closed
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as late:
            await late.get("/health")


def test_the_stop_settings_come_from_flags_and_the_environment():
    args = _parser().parse_args(["serve", "--stream-stall-timeout", "2.5", "--shutdown-grace", "0"])
    flags = {k: v for k, v in vars(args).items() if k not in {"command", "run"}}
    settings = load_settings(flags, environ={}, models=False)
    assert (settings.stream_stall_timeout, settings.shutdown_grace) == (2.5, 0)
    environ = {"INKSTAND_STREAM_STALL_TIMEOUT": "9", "INKSTAND_SHUTDOWN_GRACE": "7"}
    settings = load_settings({}, environ=environ, models=False)
    assert (settings.stream_stall_timeout, settings.shutdown_grace) == (9, 7)
    assert (Settings().stream_stall_timeout, Settings().shutdown_grace) == (30, 30)


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf])
def test_a_shutdown_grace_that_is_not_a_number_of_seconds_is_refused(seconds):
    with pytest.raises(ConfigError, match="shutdown_grace"):
        shutdown_grace(replace(Settings(), shutdown_grace=seconds))

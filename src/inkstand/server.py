"""Start the HTTP server: settings, logging, store, the first-run key, then uvicorn; and stop it.

Stopping (docs/architecture.md, "Stopping"): the first SIGTERM or SIGINT stops taking
requests and lets the answers in flight finish within `shutdown_grace` seconds; a second
signal, or the grace running out, cuts them. The process then closes the app (worker pools,
engines, the store last, committing every usage record) and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shlex
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from inkstand.api.gate import Gate
from inkstand.api.protocol import Limits, fit_file_limit, protocol_class
from inkstand.app import create_app
from inkstand.config import ConfigError, Settings, load_settings
from inkstand.logs import configure_logging
from inkstand.store import KeyStore, open_store

log = logging.getLogger("inkstand")

POLL_SECONDS = 0.05  # how often a stopping server looks at the answers in flight
CUT_SECONDS = 2.0  # after a cut: for error frames to go out, then for cancelled answers


def serve(flags: dict) -> int:
    settings = load_settings(flags)
    limits = Limits.from_settings(settings)
    grace = shutdown_grace(settings)
    configure_logging(settings.log_level)
    store = open_store(settings.data_dir)
    announce_first_key(KeyStore(store, settings.api_key), settings.data_dir)
    app = create_app(settings, store=store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's records go through our escaping formatter too
        access_log=False,
        loop="uvloop",
        http=protocol_class(limits),  # uvicorn's httptools protocol with our limits
    )
    fit_file_limit(limits.connections)
    GracefulServer(config, app.state.gate, app.state.runtime.drain, grace).run()
    return 0


def shutdown_grace(settings: Settings) -> float:
    grace = settings.shutdown_grace
    if not 0 <= grace < math.inf:
        raise ConfigError(
            f"setting `shutdown_grace` must be a number of seconds, 0 or more, got {grace}"
        )
    return grace


class GracefulServer(uvicorn.Server):
    """uvicorn's server with Inkstand's stop.

    The first SIGTERM or SIGINT closes the app's `gate` (new requests get 503 with
    `Retry-After` and `connection: close`) and gives the answers in flight up to `grace`
    seconds. The listener and the idle kept-alive connections stay open meanwhile, so a
    request that still arrives is told to retry instead of finding its connection closed
    under it (a proxy does not resend a POST whose connection broke). A second
    signal, or the grace running out, cuts what still runs: `cut()` has the engines end
    their requests with a 503 (an `event: error` frame in a stream), and whatever has not
    ended `CUT_SECONDS` later is cancelled (which the SSE writer and `until_disconnect` turn
    into the same 503). Then the listener closes, the app's lifespan closes everything, and
    `run()` returns: the signal is not raised again, so the process exits 0.

    Leans on uvicorn's `Server` internals (`handle_exit`, `should_exit`, `force_exit`,
    `servers`, `server_state`, `lifespan`); tests/unit/test_server.py runs it on a real
    socket, so an upgrade that moves them fails there.
    """

    def __init__(
        self, config: uvicorn.Config, gate: Gate, cut: Callable[[], None], grace: float
    ) -> None:
        super().__init__(config)
        self.gate = gate
        self.cut = cut
        self.grace = grace

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not kept in `_captured_signals`: uvicorn would raise it again once stopped, and the
        # process would end by the signal instead of exiting 0.
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.gate.close()
        log.info(
            "stopping: new requests get 503; %d answer(s) in flight have up to %g s to finish",
            self.gate.answering,
            self.grace,
        )
        if await self._finished(self.grace, interruptible=True):
            log.info("stopping: every answer in flight finished")
        else:
            await self._cut_answers()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        self._end_idle_connections()
        await self.lifespan.shutdown()

    def _end_idle_connections(self) -> None:
        for connection in list(self.server_state.connections):
            connection.shutdown()  # closes an idle one; a busy one closes after its answer

    async def _cut_answers(self) -> None:
        why = "a second signal came" if self.force_exit else f"{self.grace:g} s passed"
        log.warning("stopping now (%s): cutting %d answer(s) in flight", why, self.gate.answering)
        self.force_exit = True
        self.cut()
        if await self._finished(CUT_SECONDS):
            return
        for task in self.server_state.tasks:
            task.cancel()
        await self._finished(CUT_SECONDS)

    async def _finished(self, seconds: float, *, interruptible: bool = False) -> bool:
        """Wait until no answer is in flight (True), at most `seconds`; `interruptible`:
        or until a second signal comes."""
        deadline = time.monotonic() + seconds
        while self.gate.answering:
            if time.monotonic() >= deadline or (interruptible and self.force_exit):
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True


def announce_first_key(keys: KeyStore, data_dir: str) -> None:
    """In a brand-new data dir (no key ever stored) with no key configured, create one and
    print it this once. A data dir whose keys were all revoked or expired stays closed: the
    server says how to make a key instead of opening itself again."""
    if keys.has_usable():
        return
    if keys.ever_stored():
        log.warning(
            "no usable API key: every API request gets 401. Create one with: "
            "inkstand keys create --name NAME --data-dir %s",
            shlex.quote(data_dir),
        )
        return
    key = keys.create("default")
    print(
        "\nCreated the first API key. It is shown only now; store it somewhere safe:\n\n"
        f"    export WRITER_API_KEY={key.secret}\n",
        file=sys.stderr,
        flush=True,
    )

"""Start the HTTP server: settings, store, the first-run key, then uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn

from inkstand.app import create_app
from inkstand.config import load_settings
from inkstand.store import KeyStore, open_store


def serve(flags: dict) -> int:
    settings = load_settings(flags)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    store = open_store(settings.data_dir)
    announce_first_key(KeyStore(store, settings.api_key))
    app = create_app(settings, store=store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config, app.state.runtime.drain).run()
    return 0


class DrainingServer(uvicorn.Server):
    """Uvicorn, but on shutdown it first ends generations in flight with a 503 (an
    `event: error` frame in a stream), so connections finish at once instead of being cut
    when the grace period runs out."""

    def __init__(self, config: uvicorn.Config, drain) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets=None) -> None:
        self._drain()
        await super().shutdown(sockets)


def announce_first_key(keys: KeyStore) -> None:
    """With no key configured or stored, create one and print it this once."""
    if keys.has_any():
        return
    key = keys.create("default")
    print(
        "\nCreated the first API key. It is shown only now; store it somewhere safe:\n\n"
        f"    export WRITER_API_KEY={key.secret}\n",
        file=sys.stderr,
        flush=True,
    )

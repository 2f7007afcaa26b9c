"""Start the HTTP server: settings, logging, store, the first-run key, then uvicorn."""

from __future__ import annotations

import logging
import shlex
import sys

import uvicorn

from inkstand.api.protocol import Limits, fit_file_limit, protocol_class
from inkstand.app import create_app
from inkstand.config import load_settings
from inkstand.logs import configure_logging
from inkstand.store import KeyStore, open_store

log = logging.getLogger("inkstand")


def serve(flags: dict) -> int:
    settings = load_settings(flags)
    limits = Limits.from_settings(settings)
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
        timeout_graceful_shutdown=5,
    )
    fit_file_limit(limits.connections)
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

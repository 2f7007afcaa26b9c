"""ASGI middleware: the one-line-per-request access log (keys and limits: `api/gateway.py`)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("inkstand.access")


class AccessLogMiddleware:
    """Logs method, path, status, latency, token counts and the key's id; never headers or
    bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self._log(scope, status or 499, time.perf_counter() - start)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        state = scope.get("state", {})
        usage = state.get("usage")
        tokens = f" prompt={usage.prompt} completion={usage.completion}" if usage else ""
        key = f" key={state['key_id']}" if state.get("key_id") else ""  # the id, never a secret
        access_log.info(
            "%s %s %d %.1fms%s%s",
            scope["method"],
            scope["path"],
            status,
            seconds * 1000,
            tokens,
            key,
        )

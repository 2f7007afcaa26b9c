"""ASGI middleware: bearer-key authentication and the one-line-per-request access log."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inkstand.api.errors import error_response
from inkstand.errors import AuthenticationError
from inkstand.store import KeyStore

access_log = logging.getLogger("inkstand.access")

PUBLIC_PATHS = frozenset({"/health", "/metrics"})


class AuthMiddleware:
    """Every route but the public ones needs `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        problem = self._check(_header(scope, b"authorization"))
        if problem is not None:
            await error_response(AuthenticationError(problem))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, header: str | None) -> str | None:
        if not header:
            return "Missing API key: send `Authorization: Bearer <key>`."
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return "Malformed Authorization header: expected `Bearer <key>`."
        if self.keys.verify(secret.strip()) is None:
            return "Invalid API key."
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class AccessLogMiddleware:
    """Logs method, path, status, latency and token counts; never headers or bodies."""

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
        usage = scope.get("state", {}).get("usage")
        tokens = f" prompt={usage.prompt} completion={usage.completion}" if usage else ""
        access_log.info(
            "%s %s %d %.1fms%s", scope["method"], scope["path"], status, seconds * 1000, tokens
        )

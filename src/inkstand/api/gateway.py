"""ASGI middleware that runs every API request through the gateway.

Before the route: authenticate (401: counted in the metrics, never stored, so traffic without
a key cannot fill the disk) and count the request per minute (429). The route then
calls `admission(request)` to check the model against the key's scope (403) and reserve
tokens (429). When the response ends, the token reservation is settled to what was used and
the request is recorded; the record is committed *before* the last body message (the
`[DONE]` frame of a stream) goes out, so a completed response always has its record, even if
the server is killed right after. A response that never completes (the client left) is
recorded without waiting. A record names the route it reached (`/v1/chat`), or for a path
no route serves a short form with control characters escaped, never the raw path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future

from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inkstand.api.errors import error_response
from inkstand.errors import AuthenticationError, InkstandError
from inkstand.gateway import Admission, Gateway
from inkstand.logs import escape_control
from inkstand.metrics import Metrics
from inkstand.store import UsageRecord
from inkstand.store.keys import utc_now

log = logging.getLogger("inkstand.gateway")

PUBLIC_PATHS = frozenset({"/health", "/metrics", "/"})  # "/": the playground's page
PUBLIC_PREFIX = "/playground/"  # its assets (api/playground.py); its API calls carry a key
UNROUTED_CHARS = 64  # of an unknown path, kept in its usage record


def admission(request: Request) -> Admission:
    """The gateway's standing of this request (set by `GatewayMiddleware`)."""
    return request.scope["state"]["admission"]


def cache_scope(request: Request) -> str:
    """Whose prefix cache the request may use: its key's own, unless `cache_scope` is
    "shared" (one tenant, many keys)."""
    if request.app.state.settings.cache_scope == "shared":
        return ""
    return admission(request).key.id


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, gateway: Gateway, metrics: Metrics) -> None:
        self.app = app
        self.gateway = gateway
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            key = self.gateway.authenticate(_header(scope, b"authorization"))
        except AuthenticationError as exc:
            self.metrics.unauthenticated.inc()
            await error_response(exc, path=scope["path"])(scope, receive, send)
            return
        exchange = _Exchange(self.gateway, scope, send)
        try:
            try:
                exchange.state["key_id"] = key.id
                exchange.state["admission"] = self.gateway.admit(key)
            except InkstandError as exc:
                await error_response(exc, path=scope["path"])(scope, receive, exchange.send)
                return
            await self.app(scope, receive, exchange.send)
        except Exception:
            exchange.status = exchange.status or 500  # answered by the outermost handler
            raise
        finally:
            exchange.close()


class _Exchange:
    """One request/response pair as the gateway sees it."""

    def __init__(self, gateway: Gateway, scope: Scope, send: Send) -> None:
        self.gateway = gateway
        self.scope = scope
        self.state: dict = scope.setdefault("state", {})
        self._send = send
        self.start = time.perf_counter()
        self.status = 0
        self.recorded = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            committed = self._record(self.status)
            if committed is not None:
                try:  # shielded: a client leaving now must not cancel the write itself
                    await asyncio.shield(asyncio.wrap_future(committed))
                except Exception as exc:  # the answer still goes out; the log says why
                    log.error("usage record not stored: %s", exc)
        await self._send(message)

    def close(self) -> None:
        if not self.recorded:  # the response never ended: the client left, or we failed
            self._record(self.status if self.status >= 500 else 499)

    def _record(self, status: int) -> Future | None:
        if self.recorded:
            return None
        self.recorded = True
        state = self.state
        # Tokens count only for an answer that ran (200) or was left mid-way (499); a refused
        # or failed request (429, 503, 500 ...) used none, and its token hold is given back.
        usage = state.get("usage") if status in (200, 499) else None
        record = UsageRecord(
            at=utc_now(),
            key_id=state.get("key_id"),
            model=state.get("model"),
            endpoint=endpoint(self.scope),
            prompt_tokens=usage.prompt if usage else 0,
            cached_tokens=usage.cached if usage else 0,
            completion_tokens=usage.completion if usage else 0,
            latency_ms=round((time.perf_counter() - self.start) * 1000, 3),
            status=status,
            finish_reason=getattr(usage, "finish_reason", None),
        )
        return self.gateway.finish(state.get("admission"), record)


def endpoint(scope: Scope) -> str:
    """The route `scope` reached (its path template), else its path escaped and shortened."""
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE and hasattr(route, "path"):
            return route.path
    path = escape_control(scope["path"])
    if len(path) > UNROUTED_CHARS:
        path = path[: UNROUTED_CHARS - 3] + "..."
    return path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None

"""The gate every HTTP request passes: open while the server serves, closed once it stops.

While open it lets requests through and counts those still being answered (`answering`).
On SIGTERM the server (`server.GracefulServer`) closes it and waits for `answering` to reach
zero: from then on a new request gets 503 in Writer's envelope with `Retry-After` and
`connection: close` (a client, or the load balancer in front, retries on another instance),
except `/health`, which says "stopping" (503), and `/metrics`. Refused requests reach no
route and no gateway: they are not recorded, as the HTTP layer's own refusals are not.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from inkstand.api.errors import error_response
from inkstand.errors import OverloadedError

STILL_OPEN = frozenset({"/health", "/metrics"})  # answered while the server stops
RETRY_AFTER = 5  # seconds: a restarting server is usually back by then


def shutting_down() -> OverloadedError:
    return OverloadedError("The server is shutting down; retry shortly.", retry_after=RETRY_AFTER)


class Gate:
    """Whether new requests are taken, and how many taken ones are still being answered."""

    def __init__(self) -> None:
        self.closed = False
        self.answering = 0

    def close(self) -> None:
        self.closed = True


class GateMiddleware:
    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.gate.closed and scope["path"] not in STILL_OPEN:
            refusal = error_response(shutting_down(), {"Connection": "close"}, path=scope["path"])
            await refusal(scope, receive, send)
            return
        self.gate.answering += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.answering -= 1

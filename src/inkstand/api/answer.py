"""What `/v1/chat` and `/v1/completions` share once a request is planned: reserve, answer.

`answer` holds the plan's tokens against the caller's key (429 when over its limit), then
sends the answer whole, or primes the stream before the 200 goes out (so a request refused
while waiting for a slot still gets its real status) and streams it as SSE. A client that
leaves before its answer is ready cancels the work; the 499 only names that in the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from inkstand.api.gateway import admission
from inkstand.api.sse import ClientGoneError, SSEResponse, until_disconnect
from inkstand.chat.service import PrimedStream


async def answer(
    request: Request,
    plan: Any,  # a ChatPlan or a CompletionPlan: `usage` and `generation`
    complete: Callable[[], Awaitable[dict]],
    stream: tuple[PrimedStream, Callable[[], AsyncIterator[dict]]] | None,
) -> Response | SSEResponse:
    """The whole answer from `complete()`, or, given `(stream, frames)`, `frames()` as SSE."""
    request.state.usage = plan.usage
    admission(request).reserve(plan.usage.prompt + plan.generation.max_tokens * plan.generation.n)
    try:
        if stream is not None:
            primed, frames = stream
            await until_disconnect(request.receive, primed.prime())
            return SSEResponse(frames(), primed.aclose)
        body = await until_disconnect(request.receive, complete())
    except ClientGoneError:
        return Response(status_code=499)
    return Response(orjson.dumps(body), media_type="application/json")

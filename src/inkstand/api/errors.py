"""Render every error, whatever raised it, as Writer's envelope with the right status.

    {"tpe": ..., "errors": [{"description", "key", "extras"}], "extras": {}}

`Retry-After` goes on errors the client should retry later; `x-should-retry: false` on
those it should not retry at all (the SDK otherwise retries 409 and 5xx seven times).
"""

from __future__ import annotations

import logging
import math

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from inkstand.errors import (
    BadRequestError,
    EngineError,
    InkstandError,
    MethodNotAllowedError,
    NotFoundError,
)

log = logging.getLogger("inkstand.api")


def envelope(exc: InkstandError) -> dict:
    return {
        "tpe": exc.tpe,
        "errors": [{"description": exc.description, "key": exc.key, "extras": exc.extras}],
        "extras": {},
    }


def error_headers(exc: InkstandError) -> dict[str, str]:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return headers


def error_response(exc: InkstandError, extra_headers: dict[str, str] | None = None) -> Response:
    headers = {**error_headers(exc), **(extra_headers or {})}
    return Response(orjson.dumps(envelope(exc)), exc.status, headers, media_type="application/json")


def from_validation(exc: ValidationError) -> BadRequestError:
    """One readable sentence per pydantic error, naming the field by its JSON path."""
    problems = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return BadRequestError(f"The request body is not valid JSON: {err['msg']}.")
        where = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part))
        problems.append(f"`{where}`: {err['msg']}" if where else err["msg"])
    first = BadRequestError("Invalid request: " + "; ".join(problems[:5]))
    return first


def _is_union_tag(part: object) -> bool:
    # pydantic inserts union member names ("str", "list[...]", "function-after[...]") in locs
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


async def on_inkstand_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InkstandError)
    return error_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFoundError(f"No route for {request.method} {request.url.path}."))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        err = MethodNotAllowedError(
            f"{request.method} is not allowed on {request.url.path}; "
            f"use {allow or 'another method'}."
        )
        return error_response(err, {"Allow": allow} if allow else None)
    other = InkstandError(str(exc.detail))
    other.status = exc.status_code
    return error_response(other)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(EngineError("The server failed to handle the request."))

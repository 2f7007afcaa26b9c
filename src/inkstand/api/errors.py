"""Render every error, whatever raised it, with the right status, in the shape of the API
that was called: Writer's envelope, or OpenAI's under `/openai/`.

    {"tpe": ..., "errors": [{"description", "key", "extras"}], "extras": {}}
    {"error": {"message", "type", "param", "code"}}

The path decides (`error_body`), so an error is rendered for its surface wherever it is
raised: a route, the gateway's middleware, a stream's error frame. `Retry-After` goes on
errors the client should retry later; `x-should-retry: false` on those it should not retry
at all (both SDKs otherwise retry 409 and 5xx).
"""

from __future__ import annotations

import logging
import math
import re

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from inkstand.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    EngineError,
    InkstandError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    PermissionError_,
    RateLimitError,
)

log = logging.getLogger("inkstand.api")


def envelope(exc: InkstandError) -> dict:
    return {
        "tpe": exc.tpe,
        "errors": [{"description": exc.description, "key": exc.key, "extras": exc.extras}],
        "extras": {},
    }


OPENAI_PREFIX = "/openai/"
OPENAI_CODES: tuple[tuple[type[InkstandError], str], ...] = (
    (ContextLengthError, "context_length_exceeded"),
    (ModelNotFoundError, "model_not_found"),
    (AuthenticationError, "invalid_api_key"),
    (PermissionError_, "model_not_allowed"),
    (RateLimitError, "rate_limit_exceeded"),
)
FIELD = re.compile(r"^(?:Invalid request: )?`([A-Za-z_][\w.\[\]]*)`")


def is_openai(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


def error_body(exc: InkstandError, path: str) -> dict:
    """The error as the API under `path` spells it."""
    return openai_error(exc) if is_openai(path) else envelope(exc)


def openai_error(exc: InkstandError) -> dict:
    """OpenAI's error object; `param` is the field a 400 names first, `code` as OpenAI's."""
    field = FIELD.match(exc.description) if exc.status == 400 else None
    code = next((c for kind, c in OPENAI_CODES if isinstance(exc, kind)), None)
    return {
        "error": {
            "message": exc.description,
            "type": _openai_type(exc.status),
            "param": field.group(1) if field else None,
            "code": code,
        }
    }


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_headers(exc: InkstandError) -> dict[str, str]:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.should_retry is not None:
        headers["x-should-retry"] = "true" if exc.should_retry else "false"
    return headers


def error_response(
    exc: InkstandError, extra_headers: dict[str, str] | None = None, *, path: str = ""
) -> Response:
    """`exc` as a response to a request for `path` (its API's error shape)."""
    headers = {**error_headers(exc), **(extra_headers or {})}
    body = orjson.dumps(error_body(exc, path))
    return Response(body, exc.status, headers, media_type="application/json")


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
    return error_response(exc, path=request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        missing = NotFoundError(f"No route for {request.method} {request.url.path}.")
        return error_response(missing, path=request.url.path)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        err = MethodNotAllowedError(
            f"{request.method} is not allowed on {request.url.path}; "
            f"use {allow or 'another method'}."
        )
        return error_response(err, {"Allow": allow} if allow else None, path=request.url.path)
    other = InkstandError(str(exc.detail))
    other.status = exc.status_code
    return error_response(other, path=request.url.path)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    failed = EngineError("The server failed to handle the request.")
    return error_response(failed, path=request.url.path)

"""Read a JSON request body within its limits (bytes, JSON values) and validate it into a
wire model."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from inkstand.api.errors import from_validation
from inkstand.config import Settings
from inkstand.errors import BadRequestError, PayloadTooLargeError
from inkstand.jsonvalues import json_values_over

Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the limit of {limit} bytes.")


async def read_model(request: Request, model: type[Model], settings: Settings) -> Model:
    raw = await _read_json_bytes(request, settings)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc) from exc


async def read_object(request: Request, settings: Settings) -> dict[str, Any]:
    """The body as a JSON object, within the same limits, for a caller that reshapes it
    before validating it (`validate`)."""
    raw = await _read_json_bytes(request, settings)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.")
    return data


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from exc


async def _read_json_bytes(request: Request, settings: Settings) -> bytes:
    raw = await read_body(request, settings.max_body_bytes)
    if not raw.strip():
        raise BadRequestError("The request body is empty; send a JSON object.")
    _check_values(raw, settings.max_json_values)
    return raw


def _check_values(raw: bytes, limit: int) -> None:
    count = json_values_over(raw, limit)
    if count is not None:
        raise BadRequestError(
            f"The request body holds more than {limit} JSON values and keys (`max_json_values`; "
            f"about {count} counted); send fewer messages, tools or schema entries.",
            extras={"limit": "max_json_values", "value": limit},
        )

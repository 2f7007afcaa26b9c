"""Requests generated from Writer's OpenAPI document, and the verdict on each response.

schemathesis turns the document's request schemas for the routes Inkstand serves (`POST
/v1/chat`, `POST /v1/completions`, `GET /v1/models`) into Hypothesis strategies: positive
cases (bodies the document allows) and negative ones (bodies it forbids). `requests()` draws
those, swaps in the test key (the document's bearer scheme makes random tokens, every one a
401) and, in most cases, a served model id (else nearly every case stops at the catalog's
400), and asks for a stream in half of them, so generation reaches sampling, tools,
grammars and streams.

`judge()` holds every response to the contract:
- no 5xx, and no `event: error` frame in a stream (an error after the 200);
- every 4xx is Writer's envelope `{"tpe", "errors": [{"description", "key", "extras"}],
  "extras": {}}`, with at least one error;
- every 2xx body validates against the document's response schema for its route.

Where Writer's real responses differ from the document, the check follows the responses:
- Nulls: Writer sends `null` in members the document types as non-nullable (`service_tier`,
  `usage` on ordinary chunks, `tool_calls`, `delta.content`, `graph_data`'s members ...);
  `openapi.NULL_BY_SPEC_8` allows null exactly there.
- Streams: the document types a `text/event-stream` 200 as a JSON *array* of chunks, and its
  chat example is a `chat.completion` object carrying both `message` and `delta`. Writer
  actually sends server-sent events, one `data: <chunk>` per event and `data: [DONE]` last,
  each chunk an object of `object: "chat.completion.chunk"`. So a stream is parsed as SSE and
  each event validated alone: chat chunks against `chat_completion_chunk`, completions events
  against `streaming_data`.
- Errors: the document lists only the 200 for these routes; every error is held to its
  `fail_response` schema (the envelope above), which Writer's error pages document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode

from .openapi import OPENAPI_PATH

# operationId -> (method, path, the schema of its 200 body, the schema of one stream event)
SERVED = {
    "chat": ("POST", "/v1/chat", "chat_response", "chat_completion_chunk"),
    "completions": ("POST", "/v1/completions", "completions_response", "streaming_data"),
    "models": ("GET", "/v1/models", "models_response", None),
}


def fuzz_settings(max_examples: int) -> settings:
    """Reproducible in CI: the same cases on every run, no example database, no shrinking.

    One app or server serves every case, on purpose (`function_scoped_fixture`), so a case
    that breaks it makes later ones fail too: shrinking is off, and the first failure,
    reported with its request, is the one to read. No time limit per case (the caller's
    per-request timeout bounds a hang); `too_slow`, `data_too_large` and `filter_too_much`
    misfire on the document's large nested request schemas.
    """
    return settings(
        max_examples=max_examples,
        phases=[Phase.explicit, Phase.generate],
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


@dataclass
class Request:
    operation: str
    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None
    mode: str  # "positive": the document allows the body; "negative": it does not
    body: Any = field(repr=False, default=None)

    def describe(self) -> str:
        shown = (self.content or b"")[:2000].decode("utf-8", "replace")
        return f"{self.method} {self.path} ({self.mode}) {shown}"


def load_schema():
    """The vendored document, narrowed to the operations Inkstand serves."""
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    return schema.include(operation_id=list(SERVED))


def requests(
    operation: str, key: str, models: tuple[str, ...], limit=None
) -> st.SearchStrategy[Request]:
    """Positive and negative cases for one served operation, as requests with `key`.

    A body's `model` becomes one of `models` three times in four, and half the bodies ask
    for a stream (few generated ones would, with every other member valid too); `limit`, if
    given, may rewrite a body (the end-to-end run keeps generation short with it).
    """
    method, path, _, _ = SERVED[operation]
    endpoint = load_schema()[path][method]
    cases = endpoint.as_strategy(GenerationMode.POSITIVE) | endpoint.as_strategy(
        GenerationMode.NEGATIVE
    )
    model = st.sampled_from((*models, *models, *models, None)) if models else st.none()
    stream = st.sampled_from((None, True))
    return st.builds(lambda *drawn: _request(*drawn, key, limit), cases, model, stream)


def _request(case, model: str | None, stream: bool | None, key: str, limit) -> Request:
    operation = case.operation.definition.raw["operationId"]
    headers = {"Authorization": f"Bearer {key}"}
    body = case.body if _has_body(case) else None
    if isinstance(body, dict) and isinstance(body.get("model"), str) and model is not None:
        body = {**body, "model": model}
    if isinstance(body, dict) and stream and isinstance(body.get("stream", False), bool):
        body = {**body, "stream": True}
    if isinstance(body, dict) and limit is not None:
        body = limit(body)
    content = None
    if _has_body(case):
        headers["Content-Type"] = case.media_type or "application/json"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
    mode = case.meta.generation.mode.value if case.meta else "explicit"
    return Request(operation, case.method, case.formatted_path, headers, content, mode, body)


def _has_body(case) -> bool:
    return not isinstance(case.body, schemathesis.core.NotSet)


# -- the verdict -----------------------------------------------------------------------------


def judge(
    request: Request,
    status: int,
    content_type: str,
    content: bytes,
    validators: dict[str, Draft202012Validator],
) -> None:
    """Assert that one response keeps the contract (see the module docstring)."""
    where = f"{status} for {request.describe()}\n-> {content[:2000]!r}"
    assert status < 500, f"server error: {where}"
    if status >= 400:
        assert_envelope(_json(content, where), validators, where)
        return
    assert 200 <= status < 300, f"unexpected status: {where}"
    _, _, whole, event = SERVED[request.operation]
    if content_type.startswith("text/event-stream"):
        assert event is not None, f"a stream from a route that never streams: {where}"
        for data in sse_data(content, where):
            assert_valid(validators[event], orjson.loads(data), where)
    else:
        assert content_type.startswith("application/json"), f"content type: {where}"
        assert_valid(validators[whole], _json(content, where), where)


def assert_envelope(body: Any, validators: dict[str, Draft202012Validator], where: str) -> None:
    assert_valid(validators["fail_response"], body, where)
    assert body["errors"], f"an envelope without errors: {where}"
    assert body["extras"] == {}, f"top-level extras not empty: {where}"


def assert_valid(validator: Draft202012Validator, instance: Any, where: str) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not problems, "\n".join(problems[:10]) + f"\n{where}"


def sse_data(content: bytes, where: str) -> list[bytes]:
    """The data of every event of a finished stream, `[DONE]` checked and left out.

    One `data:` line per event, keep-alive comments allowed, no `id:` lines; an `event:
    error` frame is a failure after the 200 and fails the case.
    """
    assert content.endswith(b"\n\n"), f"the stream ends mid-event: {where}"
    events = [
        event
        for event in content[:-2].split(b"\n\n")
        if not all(line.startswith(b":") for line in event.split(b"\n"))
    ]
    assert events and events[-1] == b"data: [DONE]", f"no [DONE] at the end: {where}"
    data = []
    for event in events[:-1]:
        lines = event.split(b"\n")
        assert len(lines) == 1 and lines[0].startswith(b"data: "), f"bad event {event!r}: {where}"
        data.append(lines[0].removeprefix(b"data: "))
    return data


def _json(content: bytes, where: str) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not JSON: {where}") from None

"""Requests generated from Writer's OpenAPI document, and the verdict on each response.

schemathesis turns the document's request schemas for the routes Inkstand serves (`SERVED`:
chat, completions and models; the Files and Knowledge Graph routes; `POST
/v1/graphs/question`) into Hypothesis strategies: positive cases (requests the document
allows) and negative ones (requests it forbids), with their bodies, query parameters and
documented headers. `requests()` draws those, swaps in the test key (the document's bearer
scheme makes random tokens, every one a 401) and, in most cases, a served model id (else
nearly every case stops at the catalog's 400), and asks for a stream in half of the cases
of a route that streams, so generation reaches sampling, tools, grammars and streams. On
the Files and Graph routes it swaps in, three times in four, ids of graphs and files the
server holds and an upload's name of a type Inkstand reads (else nearly every case stops
at a 404 or a 400).

`judge()` holds every response to the contract:
- no 5xx, and no `event: error` frame in a stream (an error after the 200);
- every 4xx is Writer's envelope `{"tpe", "errors": [{"description", "key", "extras"}],
  "extras": {}}`, with at least one error;
- every 2xx body validates against the document's response schema for its route (a file's
  download is bytes, sent with the file's own media type where the document says
  `application/octet-stream`: only its status is checked).

Where Writer's real responses differ from the document, the check follows the responses:
- Nulls: Writer sends `null` in members the document types as non-nullable (`service_tier`,
  `usage` on ordinary chunks, `tool_calls`, `delta.content`, `graph_data`'s members ...);
  `openapi.NULL_BY_SPEC_8` allows null exactly there.
- Streams: the document types a `text/event-stream` 200 as a JSON *array* of chunks, and its
  chat example is a `chat.completion` object carrying both `message` and `delta`. Writer
  actually sends server-sent events, one `data: <chunk>` per event and `data: [DONE]` last,
  each chunk an object of `object: "chat.completion.chunk"`. So a stream is parsed as SSE and
  each event validated alone: chat chunks against `chat_completion_chunk`, completions events
  against `streaming_data`, a question's events against `question_response_chunk`.
- Errors: the document lists only the 200 for these routes; every error is held to its
  `fail_response` schema (the envelope above), which Writer's error pages document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode

from .openapi import OPENAPI_PATH


@dataclass(frozen=True)
class Served:
    """A route Inkstand serves: what its 200 holds, whole and as one stream event.

    `whole` names the document's schema of a 200 JSON body; None means the body is bytes
    (a file's download), of whatever type. `event` names the schema of one SSE event's
    data; None means the route never streams.
    """

    method: str
    path: str
    whole: str | None
    event: str | None = None


# operationId -> the route
SERVED = {
    "chat": Served("POST", "/v1/chat", "chat_response", "chat_completion_chunk"),
    "completions": Served("POST", "/v1/completions", "completions_response", "streaming_data"),
    "models": Served("GET", "/v1/models", "models_response"),
    "gatewayUploadFile": Served("POST", "/v1/files", "file_response"),
    "gatewayGetFiles": Served("GET", "/v1/files", "files_response"),
    "gatewayGetFile": Served("GET", "/v1/files/{file_id}", "file_response"),
    "gatewayDeleteFile": Served("DELETE", "/v1/files/{file_id}", "delete_file_response"),
    "gatewayDownloadFile": Served("GET", "/v1/files/{file_id}/download", None),
    "gatewayRetryFailedFiles": Served("POST", "/v1/files/retry", "retry_files_response"),
    "createGraph": Served("POST", "/v1/graphs", "graph_response"),
    "findGraphsWithFileStatus": Served("GET", "/v1/graphs", "graphs_response"),
    "findGraphWithFileStatus": Served("GET", "/v1/graphs/{graph_id}", "graph"),
    "updateGraph": Served("PUT", "/v1/graphs/{graph_id}", "graph_response"),
    "deleteGraph": Served("DELETE", "/v1/graphs/{graph_id}", "delete_graph_response"),
    "addFileToGraph": Served("POST", "/v1/graphs/{graph_id}/file", "file_response"),
    "removeFileFromGraph": Served(
        "DELETE", "/v1/graphs/{graph_id}/file/{file_id}", "delete_file_response"
    ),
    "question": Served(
        "POST", "/v1/graphs/question", "question_response", "question_response_chunk"
    ),
}
KNOWLEDGE = tuple(op for op in SERVED if op not in ("chat", "completions", "models"))


@dataclass(frozen=True)
class Known:
    """Ids of graphs and files that exist on the server under test."""

    graphs: tuple[str, ...]
    files: tuple[str, ...]


# Where a request names a graph or a file: path and query parameters, top-level body members.
ID_MEMBERS = {
    "graph_id": "graphs",
    "graphId": "graphs",
    "graph_ids": "graphs",
    "file_id": "files",
    "file_ids": "files",
}
# Names an upload's `Content-Disposition` may give, one of each type Inkstand reads.
UPLOAD_NAMES = (
    "notes.txt", "guide.md", "page.html", "report.pdf", "paper.docx", "deck.pptx",
    "book.xlsx", "table.csv", "mail.eml", "film.srt", "data.json",
)  # fmt: skip
# Documented headers the client sets itself: the key, the body's type and its length (a
# generated length that lies about the body would only stall the connection).
OWN_HEADERS = {"authorization", "content-type", "content-length"}


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
    headers: dict[str, str | bytes]
    content: bytes | None
    mode: str  # "positive": the document allows the body; "negative": it does not
    body: Any = field(repr=False, default=None)

    def describe(self) -> str:
        shown = (self.content or b"")[:2000].decode("utf-8", "replace")
        sent = {k: v for k, v in self.headers.items() if k not in ("Authorization", "Content-Type")}
        extra = f" {sent}" if sent else ""
        return f"{self.method} {self.path} ({self.mode}){extra} {shown}"


def load_schema():
    """The vendored document, narrowed to the operations Inkstand serves."""
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    return schema.include(operation_id=list(SERVED))


def requests(
    operation: str, key: str, models: tuple[str, ...], limit=None, known: Known | None = None
) -> st.SearchStrategy[Request]:
    """Positive and negative cases for one served operation, as requests with `key`.

    A body's `model` becomes one of `models` three times in four, and half the bodies of a
    route that streams ask for a stream (few generated ones would, with every other member
    valid too); `limit`, if given, may rewrite a body (the end-to-end run keeps generation
    short with it). Given `known` ids, a generated graph or file id (in the path, the query
    or the body) becomes a known one three times in four, and an upload is named as a file
    Inkstand reads as often, so cases get past the 404s and 400s of what does not exist.
    """
    served = SERVED[operation]
    endpoint = load_schema()[served.path][served.method]
    cases = endpoint.as_strategy(GenerationMode.POSITIVE) | endpoint.as_strategy(
        GenerationMode.NEGATIVE
    )
    model = st.sampled_from((*models, *models, *models, None)) if models else st.none()
    stream = st.sampled_from((None, True))
    # Drawn only for the routes that use them, so the other routes' cases stay as they were.
    if known is None:
        swaps = st.just(Swaps())
    else:
        swaps = st.builds(
            Swaps,
            ids=st.sampled_from((True, True, True, False)),
            pick=st.integers(0, 2**16),
            name=st.sampled_from((*UPLOAD_NAMES, None)),
        )
    return st.builds(
        lambda *drawn: _request(*drawn, key, limit, known), cases, model, stream, swaps
    )


@dataclass(frozen=True)
class Swaps:
    """What one case has swapped in: known ids (`pick` chooses which), an upload's name."""

    ids: bool = False
    pick: int = 0
    name: str | None = None


def _request(case, model, stream, swaps: Swaps, key: str, limit, known: Known | None) -> Request:
    operation = case.operation.definition.raw["operationId"]
    body = case.body if _has_body(case) else None
    path_parameters = dict(case.path_parameters or {})
    query = dict(case.query or {})
    if known is not None and swaps.ids:
        path_parameters = _with_known(path_parameters, known, swaps.pick)
        query = _with_known(query, known, swaps.pick)
        if isinstance(body, dict):
            body = _with_known(body, known, swaps.pick)
    if isinstance(body, dict) and isinstance(body.get("model"), str) and model is not None:
        body = {**body, "model": model}
    streams = SERVED[operation].event is not None
    if (
        isinstance(body, dict)
        and stream
        and streams
        and isinstance(body.get("stream", False), bool)
    ):
        body = {**body, "stream": True}
    if isinstance(body, dict) and limit is not None:
        body = limit(body)
    headers = _headers(case)
    if swaps.name is not None and operation == "gatewayUploadFile":
        headers["Content-Disposition"] = f"attachment; filename={swaps.name}"
    headers["Authorization"] = f"Bearer {key}"
    content = None
    if _has_body(case):
        headers["Content-Type"] = case.media_type or "application/json"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = case.path.format(**path_parameters) if path_parameters else case.formatted_path
    if query:
        path += "?" + _query_string(query)
    mode = case.meta.generation.mode.value if case.meta else "explicit"
    return Request(operation, case.method, path, headers, content, mode, body)


def _with_known(values: dict, known: Known, pick: int) -> dict:
    """`values` with each graph or file id a known one: a string replaced, a non-empty list
    made of that one id; values of other types stay (they are the negative case)."""
    out = dict(values)
    for name, value in values.items():
        pool = getattr(known, ID_MEMBERS.get(name, ""), ())
        if not pool:
            continue
        chosen = pool[pick % len(pool)]
        if isinstance(value, str):
            out[name] = chosen
        elif isinstance(value, list) and value:
            out[name] = [chosen]
    return out


def _headers(case) -> dict[str, str | bytes]:
    """The generated values of the headers the document defines for the operation, but the
    ones the client sets itself (random extra headers of negative cases are not sent).

    Control characters and line breaks are dropped from a value (clients refuse the first;
    HTTP cannot carry the second); a value that is not ASCII goes as UTF-8 bytes.
    """
    documented = {parameter.name.lower() for parameter in case.operation.headers}
    headers: dict[str, str | bytes] = {}
    for name, value in (case.headers or {}).items():
        if name.lower() not in documented - OWN_HEADERS:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        text = "".join(c for c in text if c == "\t" or (c >= " " and c != "\x7f")).strip()
        headers[name] = text if text.isascii() else text.encode()
    return headers


def _query_string(query: dict) -> str:
    """`query` as form-style parameters, a list's items repeated under its name."""
    pairs = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, item if isinstance(item, str) else json.dumps(item)))
    return urlencode(pairs)


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
    served = SERVED[request.operation]
    if content_type.startswith("text/event-stream"):
        assert served.event is not None, f"a stream from a route that never streams: {where}"
        for data in sse_data(content, where):
            assert_valid(validators[served.event], orjson.loads(data), where)
    elif served.whole is not None:
        assert content_type.startswith("application/json"), f"content type: {where}"
        assert_valid(validators[served.whole], _json(content, where), where)


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

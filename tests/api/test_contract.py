"""Requests generated from Writer's OpenAPI document against the app on the fake backend.

schemathesis draws positive and negative cases for every route Inkstand serves (`POST
/v1/chat`, `POST /v1/completions`, `GET /v1/models`, the Files and Knowledge Graph routes and
`POST /v1/graphs/question`) from the vendored document (`tests/contract/`); every response
must keep the contract `tests/contract/fuzz.py` describes: no 5xx, every 4xx in Writer's
envelope, every 200 (whole or streamed) valid against the document's response schema with
the nulls and the stream framing Writer really sends. Each request has `TIMEOUT` seconds to
finish (a hang fails the case). The Files and Graph routes run on an app holding two graphs
and two ingested files (`seed`), whose ids most cases use. The cases are the same on every
run (derandomized); about 1,050 for the generation routes take about 40 s here, the
knowledge routes' ones a few seconds more.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import given

from inkstand.backends.fake import FakeBackend

from ..contract.fuzz import KNOWLEDGE, Known, Request, fuzz_settings, judge, requests
from ..contract.openapi import writer_validators
from .conftest import CTX, KEY, api_client, build_app, settings

TIMEOUT = 10.0
MODELS = ("palmyra-x5", "palmyra-x4")
# Cases per operation: `/v1/models` takes no input, so a few show it answers the same way.
CASES = {"chat": 650, "completions": 400, "models": 5} | {op: 50 for op in KNOWLEDGE}
SEED_TEXT = b"The lighthouse keeper lit the lamp every evening at dusk.\n"


@pytest.fixture(scope="module")
def validators():
    return writer_validators()


async def send(client, request: Request) -> tuple[int, str, bytes]:
    async with asyncio.timeout(TIMEOUT):
        response = await client.request(
            request.method, request.path, headers=request.headers, content=request.content
        )
    return response.status_code, response.headers.get("content-type", ""), response.content


async def seed(client) -> Known:
    """Two graphs, and two files ingested: one in the first graph, one in none."""
    graphs = [(await client.post("/v1/graphs", json={"name": n})).json()["id"] for n in "ab"]
    files = []
    for name, graph in (("lamp.txt", graphs[0]), ("ferry.md", None)):
        headers = {"Content-Disposition": f"attachment; filename={name}"}
        params = {"graphId": graph} if graph else {}
        response = await client.post("/v1/files", content=SEED_TEXT, headers=headers, params=params)
        assert response.status_code == 200, response.text
        files.append(response.json()["id"])
    async with asyncio.timeout(TIMEOUT):
        for file_id in files:
            while (await client.get(f"/v1/files/{file_id}")).json()["status"] == "in_progress":
                await asyncio.sleep(0.01)
    return Known(graphs=tuple(graphs), files=tuple(files))


@pytest.mark.parametrize("operation", list(CASES))
def test_generated_requests_keep_the_contract(operation, validators, caplog):
    backend = FakeBackend("Hello world", n_ctx=CTX, n_seq_max=4)
    app = build_app(backend, settings(ingest_processes=0))  # files read in the worker thread
    ran, answered = [], []

    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(api_client(app, lifespan=True)) as client,
    ):
        known = portal.call(seed, client) if operation in KNOWLEDGE else None

        @fuzz_settings(CASES[operation])
        @given(request=requests(operation, KEY, MODELS, known=known))
        def run(request: Request) -> None:
            ran.append(request)
            try:
                status, content_type, content = portal.call(send, client, request)
            except TimeoutError:
                raise AssertionError(f"no answer in {TIMEOUT} s: {request.describe()}") from None
            answered.append(status)
            judge(request, status, content_type, content, validators)

        with caplog.at_level(logging.ERROR, logger="inkstand"):
            run()

    assert len(ran) >= CASES[operation]
    assert any(200 <= status < 300 for status in answered), "no case got past the checks"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"the app logged errors: {errors[:5]}"


# -- the verdict itself: each way a response can break the contract fails it -----------------

CHAT = Request("chat", "POST", "/v1/chat", {}, b"{}", "positive")
ENVELOPE = b'{"tpe":"BadRequest","errors":[{"description":"d","key":"k","extras":{}}],"extras":{}}'
CHUNK = (
    b'{"id":"3c90c3cc-0d44-4b50-8888-8dd25736052a","object":"chat.completion.chunk",'
    b'"created":1,"model":"palmyra-x5","choices":[{"index":0,"finish_reason":null,'
    b'"delta":{"content":null,"role":"assistant"}}],"usage":null,"service_tier":null}'
)
JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"

BROKEN = {
    "server error": (500, JSON, ENVELOPE),
    "4xx not JSON": (400, "text/plain", b"Bad Request"),
    "4xx without errors": (400, JSON, b'{"tpe":"BadRequest","errors":[],"extras":{}}'),
    "4xx error without key": (
        404,
        JSON,
        b'{"tpe":"NotFound","errors":[{"description":"d","extras":{}}],"extras":{}}',
    ),
    "4xx FastAPI style": (422, JSON, b'{"detail":"Unprocessable"}'),
    "200 not a chat response": (200, JSON, b'{"choices":[]}'),
    "stream without [DONE]": (200, SSE, b"data: " + CHUNK + b"\n\n"),
    "stream with an error frame": (
        200,
        SSE,
        b"data: " + CHUNK + b"\n\nevent: error\ndata: " + ENVELOPE + b"\n\n",
    ),
    "stream chunk not a chunk": (200, SSE, b'data: {"value":"x"}\n\ndata: [DONE]\n\n'),
}


@pytest.mark.parametrize(("status", "content_type", "content"), BROKEN.values(), ids=BROKEN)
def test_the_verdict_fails_a_broken_response(validators, status, content_type, content):
    with pytest.raises(AssertionError):
        judge(CHAT, status, content_type, content, validators)


def test_the_verdict_passes_the_envelope_and_a_good_stream(validators):
    judge(CHAT, 400, JSON, ENVELOPE, validators)
    stream = b"data: " + CHUNK + b"\n\n: keep-alive\n\ndata: [DONE]\n\n"
    judge(CHAT, 200, SSE, stream, validators)


DOWNLOAD = Request("gatewayDownloadFile", "GET", "/v1/files/f/download", {}, None, "positive")
QUESTION = Request("question", "POST", "/v1/graphs/question", {}, b"{}", "positive")
ANSWER = b'{"question":"q","answer":"a","sources":[{"file_id":"f","snippet":"s"}]}'


def test_the_verdict_takes_a_download_as_bytes_of_any_type(validators):
    judge(DOWNLOAD, 200, "text/markdown; charset=utf-8", b"# Notes\n", validators)
    with pytest.raises(AssertionError):
        judge(DOWNLOAD, 404, "text/plain", b"Not Found", validators)


def test_the_verdict_holds_a_question_stream_to_its_chunks(validators):
    judge(QUESTION, 200, JSON, ANSWER, validators)
    judge(QUESTION, 200, SSE, b'data: {"data": ' + ANSWER + b"}\n\ndata: [DONE]\n\n", validators)
    with pytest.raises(AssertionError):
        judge(QUESTION, 200, SSE, b"data: " + ANSWER + b"\n\ndata: [DONE]\n\n", validators)

"""Requests generated from Writer's OpenAPI document against the real server and model.

The same generator and verdict as `tests/api/test_contract.py` (see `tests/contract/fuzz.py`
for what is checked, and where Writer's real responses differ from its document), run over
HTTP against `inkstand serve` with the embedded model: no 5xx, no hang (`TIMEOUT` per
request), every 4xx in Writer's envelope, every 200 (whole or streamed) valid. Fewer cases
(`CASES`), and each chat or completions body's `max_tokens`, `n` and `best_of` are capped
when they are valid numbers (and `max_tokens` set when absent), so generation stays short;
invalid values still go as generated. The Files, Graph and question routes run on the
embedded engine only, each against two graphs and two ingested files of its own
(`seeded`), which it deletes afterwards with whatever its cases created. The session's
conftest also fails the test if the server logged a 500 or a traceback meanwhile.
"""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from hypothesis import given

from ..contract.fuzz import KNOWLEDGE, Known, Request, fuzz_settings, judge, requests
from .support import KEY

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0
CASES = {"chat": 70, "completions": 28, "models": 2} | {op: 25 for op in KNOWLEDGE}
CASES["question"] = 4  # each answer is generated, without `max_tokens` (the API has none)
MAX_TOKENS = 8
MAX_CHOICES = 2
SEED_TEXT = b"The lighthouse keeper lit the lamp every evening at dusk.\n"


def short(body: dict) -> dict:
    """`body` with generation kept short: valid counts capped, `max_tokens` always sent."""
    out = dict(body)
    for name, cap in (("max_tokens", MAX_TOKENS), ("n", MAX_CHOICES), ("best_of", MAX_CHOICES)):
        value = out.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            out[name] = cap
    out.setdefault("max_tokens", MAX_TOKENS)
    return out


def test_short_caps_only_valid_counts():
    body = short({"n": 50, "best_of": True, "max_tokens": "x"})
    assert body == {"n": MAX_CHOICES, "best_of": True, "max_tokens": "x"}
    assert short({"n": 0})["max_tokens"] == MAX_TOKENS


@contextlib.contextmanager
def seeded(http: httpx.Client):
    """Two graphs, and two ingested files (one in the first graph); on leaving, these and
    whatever graphs and files `created` names are deleted (404s are fine: a case may have)."""
    graphs = [http.post("/v1/graphs", json={"name": f"fuzz {n}"}).json()["id"] for n in "ab"]
    files = []
    for name, graph in (("lamp.txt", graphs[0]), ("ferry.md", None)):
        headers = {"Content-Disposition": f"attachment; filename={name}"}
        params = {"graphId": graph} if graph else {}
        response = http.post("/v1/files", content=SEED_TEXT, headers=headers, params=params)
        assert response.status_code == 200, response.text
        files.append(response)
    file_ids = [response.json()["id"] for response in files]
    deadline = time.monotonic() + TIMEOUT
    for file_id in file_ids:
        while http.get(f"/v1/files/{file_id}").json()["status"] == "in_progress":
            assert time.monotonic() < deadline, f"file {file_id} was not ingested"
            time.sleep(0.05)
    created = {"graphs": graphs, "files": file_ids}
    try:
        yield Known(graphs=tuple(graphs), files=tuple(file_ids)), created
    finally:
        for kind in ("graphs", "files"):
            for object_id in created[kind]:
                http.delete(f"/v1/{kind}/{object_id}")


# The Files and Graph routes never reach an engine, and the question route's answers are
# generated as the chat route's are (fuzzed on both engines): they run on the embedded one.
OPERATIONS = [
    pytest.param(op, marks=pytest.mark.embedded_only) if op in KNOWLEDGE else op for op in CASES
]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_generated_requests_keep_the_contract(operation, server, http, writer_schema):
    models = tuple(m["id"] for m in http.get("/v1/models").json()["models"])
    limit = short if operation in ("chat", "completions") else None
    ran = []
    with contextlib.ExitStack() as stack:
        known, created = stack.enter_context(seeded(http)) if operation in KNOWLEDGE else (None, {})

        @fuzz_settings(CASES[operation])
        @given(request=requests(operation, KEY, models, limit=limit, known=known))
        def run(request: Request) -> None:
            ran.append(request)
            try:
                response = http.request(
                    request.method,
                    request.path,
                    headers=request.headers,
                    content=request.content,
                    timeout=TIMEOUT,
                )
            except httpx.TimeoutException:
                raise AssertionError(f"no answer in {TIMEOUT} s: {request.describe()}") from None
            remember(created, request, response)
            content_type = response.headers.get("content-type", "")
            judge(request, response.status_code, content_type, response.content, writer_schema)

        run()
    assert len(ran) >= CASES[operation]


def remember(created: dict, request: Request, response: httpx.Response) -> None:
    """Note a graph or file a case created, for `seeded` to delete."""
    kind = {"createGraph": "graphs", "gatewayUploadFile": "files"}.get(request.operation)
    if kind is not None and response.status_code == 200:
        created[kind].append(response.json()["id"])

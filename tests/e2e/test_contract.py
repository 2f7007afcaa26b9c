"""Requests generated from Writer's OpenAPI document against the real server and model.

The same generator and verdict as `tests/api/test_contract.py` (see `tests/contract/fuzz.py`
for what is checked, and where Writer's real responses differ from its document), run over
HTTP against `inkstand serve` with the embedded model: no 5xx, no hang (`TIMEOUT` per
request), every 4xx in Writer's envelope, every 200 (whole or streamed) valid. Fewer cases
(`CASES`), and each body's `max_tokens`, `n` and `best_of` are capped when they are valid
numbers (and `max_tokens` set when absent), so generation stays short; invalid values still
go as generated. The session's conftest also fails the test if the server logged a 500 or a
traceback meanwhile.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given

from ..contract.fuzz import Request, fuzz_settings, judge, requests
from .support import KEY

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0
CASES = {"chat": 70, "completions": 28, "models": 2}
MAX_TOKENS = 8
MAX_CHOICES = 2


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


@pytest.mark.parametrize("operation", list(CASES))
def test_generated_requests_keep_the_contract(operation, server, http, writer_schema):
    models = tuple(m["id"] for m in http.get("/v1/models").json()["models"])
    ran = []

    @fuzz_settings(CASES[operation])
    @given(request=requests(operation, KEY, models, limit=short))
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
        content_type = response.headers.get("content-type", "")
        judge(request, response.status_code, content_type, response.content, writer_schema)

    run()
    assert len(ran) >= CASES[operation]

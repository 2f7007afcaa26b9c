"""Every bad input gets its status and Writer's error envelope; nothing is a 5xx.

`test_error_envelope` pins the envelope once for every error source; the tests after it
check what particular descriptions must say and how the SDK surfaces the errors.
"""

from __future__ import annotations

import httpx
import pytest
import writerai

from .support import CTX_SIZE, KEY, MODEL, TALKATIVE, assert_envelope, greedy

pytestmark = pytest.mark.e2e

BEARER = f"Bearer {KEY}"
WEB_SEARCH = {"type": "web_search", "function": {"include_domains": [], "exclude_domains": []}}
LLM = {"type": "llm", "function": {"description": "medical questions", "model": "palmyra-med"}}
FUNCTION = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
LONG_PROMPT = [{"role": "user", "content": "word " * (CTX_SIZE + 100)}]


def tool(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def bad(**fields) -> dict:
    return {"json": greedy(**fields)}


def without(key: str) -> dict:
    body = greedy()
    del body[key]
    return {"json": body}


# id -> (request, expected status); a request may name its `auth` header, `method`, `path`,
# `server` fixture, more `headers`, and `json`, raw `content` or `chunks` sent without a
# Content-Length.
CASES = {
    "missing key": ({"auth": None, "json": greedy()}, 401),
    "invalid key": ({"auth": "Bearer not-a-key", "json": greedy()}, 401),
    "not bearer": ({"auth": f"Basic {KEY}", "json": greedy()}, 401),
    "bearer without key": ({"auth": "Bearer", "json": greedy()}, 401),
    "models without key": ({"auth": None, "method": "GET", "path": "/v1/models"}, 401),
    "unknown route": ({"method": "GET", "path": "/v1/nowhere"}, 404),
    "wrong method": ({"method": "GET"}, 405),
    "malformed json": ({"content": b'{"model": "palmyra-x5", "messages": ['}, 400),
    "empty body": ({"content": b""}, 400),
    "body not an object": ({"json": [1, 2]}, 400),
    "missing messages": (without("messages"), 400),
    "empty messages": (bad(messages=[]), 400),
    "missing model": (without("model"), 400),
    "bad role": (bad(messages=[{"role": "bot", "content": "hi"}]), 400),
    "max_tokens as string": (bad(max_tokens="5"), 400),
    "temperature as string": (bad(temperature="hot"), 400),
    "n zero": (bad(n=0), 400),
    "max_tokens zero": (bad(max_tokens=0), 400),
    "temperature too high": (bad(temperature=3), 400),
    "top_p zero": (bad(top_p=0), 400),
    "json_schema without schema": (bad(response_format={"type": "json_schema"}), 400),
    "json_schema with only a name": (
        bad(response_format={"type": "json_schema", "json_schema": {"name": "X"}}),
        400,
    ),
    "tool without a name": (bad(tools=[{"type": "function", "function": {}}]), 400),
    "tool parameters not an object schema": (
        bad(tools=[tool("f", {"type": "string"})]),
        400,
    ),
    "tool parameters not a schema": (bad(tools=[tool("f", {"type": 5})]), 400),
    "unknown tool type": (bad(tools=[{"type": "magic", "function": {"name": "f"}}]), 400),
    "duplicate function names": (bad(tools=[FUNCTION, FUNCTION]), 400),
    "tool_choice names an absent function": (
        bad(tools=[FUNCTION], tool_choice={"type": "function", "function": {"name": "nope"}}),
        400,
    ),
    "unsupported schema feature": (
        bad(tools=[tool("f", {"type": "object", "patternProperties": {"^a": {}}})]),
        400,
    ),
    "built-in tool": (bad(tools=[WEB_SEARCH]), 400),
    "two built-in tools": (bad(tools=[WEB_SEARCH, LLM]), 400),
    "image fragment": (bad(messages=[{"role": "user", "content": [IMAGE]}]), 400),
    "unknown model": (bad(model="nope-model"), 400),
    "removed model": (bad(model="palmyra-med"), 400),
    "max_tokens over the model's output": (bad(max_tokens=9000), 400),
    "prompt plus max_tokens over context": (bad(max_tokens=CTX_SIZE), 400),
    "prompt over context": (bad(messages=LONG_PROMPT), 400),
    "streaming unknown model": (bad(model="nope-model", stream=True), 400),
    "streaming prompt over context": (bad(messages=LONG_PROMPT, stream=True), 400),
    "body over limit": ({"server": "tiny_server", "content": b" " * 2048}, 413),
    "chunked body over limit": ({"server": "tiny_server", "chunks": [b" " * 600] * 4}, 413),
    "request line over limit": ({"method": "GET", "path": "/v1/models?q=" + "a" * 9000}, 414),
    "too many headers": (
        {"method": "GET", "path": "/v1/models", "headers": {f"x-h{i}": "v" for i in range(100)}},
        431,
    ),
}


def send(server, *, auth=BEARER, method="POST", path="/v1/chat", chunks=None, **kwargs):
    headers = {**({"Authorization": auth} if auth else {}), **kwargs.pop("headers", {})}
    if chunks is not None:
        kwargs["content"] = iter(chunks)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        return http.request(method, path, headers=headers, **kwargs)


@pytest.mark.parametrize(("request_", "status"), CASES.values(), ids=CASES.keys())
def test_error_envelope(server, tiny_server, request_, status):
    fields = dict(request_)
    target = tiny_server if fields.pop("server", None) == "tiny_server" else server
    response = send(target, **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_envelope(response.json())
    if status == 400:
        assert response.headers.get("x-should-retry") == "false"
        assert response.json()["tpe"] == "BadRequest"


def description(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["errors"][0]["description"]


@pytest.mark.parametrize(
    ("tool_type", "advice"), [("vision", "image_url"), ("web_search", "web search service")]
)
def test_built_in_tools_this_server_lacks_say_what_to_do(http, tool_type, advice):
    built_in = {  # graph, llm and translation are served (test_knowledge, test_delegation ...)
        "vision": {"model": "palmyra-vision", "variables": []},
        "web_search": WEB_SEARCH["function"],
    }
    body = greedy(tools=[{"type": tool_type, "function": built_in[tool_type]}])
    text = description(http.post("/v1/chat", json=body))
    assert "not available" in text and tool_type in text and advice in text


def test_a_removed_delegate_names_its_replacement(http):
    body = greedy(tools=[LLM])  # delegates to palmyra-med, removed
    text = description(http.post("/v1/chat", json=body))
    assert "palmyra-med" in text and "palmyra-x5" in text


def test_a_translation_without_a_target_says_how_to_give_one(http):
    function = {"model": "palmyra-translate", "formality": False, "length_control": False,
                "mask_profanity": False}  # fmt: skip
    body = greedy(tools=[{"type": "translation", "function": function}])
    assert "target_language_code" in description(http.post("/v1/chat", json=body))


def test_image_fragment_is_refused_for_images(http):
    body = greedy(messages=[{"role": "user", "content": [IMAGE]}])
    assert "image" in description(http.post("/v1/chat", json=body)).lower()


def test_unknown_model_is_named_with_the_served_ones(http):
    text = description(http.post("/v1/chat", json=greedy(model="nope-model")))
    assert "nope-model" in text and "palmyra-x5" in text


def test_removed_model_names_its_replacement(http):
    text = description(http.post("/v1/chat", json=greedy(model="palmyra-med")))
    assert "palmyra-med" in text and "palmyra-x5" in text


def test_context_overflow_names_both_numbers_and_the_limit(http):
    prompt = http.post("/v1/chat", json=greedy(max_tokens=1)).json()["usage"]["prompt_tokens"]
    text = description(http.post("/v1/chat", json=greedy(max_tokens=1000)))
    for number in (prompt, 1000, CTX_SIZE):
        assert str(number) in text


def test_streaming_error_before_first_byte_is_plain_json(http):
    response = http.post("/v1/chat", json=greedy(model="nope-model", stream=True))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert_envelope(response.json())


def test_wrong_method_names_the_allowed_one(http):
    response = http.get("/v1/chat")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_sdk_raises_authentication_error(server):
    with (
        writerai.Writer(api_key="not-a-key", base_url=server.url, max_retries=0) as bad_client,
        pytest.raises(writerai.AuthenticationError) as caught,
    ):
        bad_client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=1)
    assert caught.value.status_code == 401
    assert_envelope(caught.value.body)


def test_sdk_raises_bad_request_error(client):
    with pytest.raises(writerai.BadRequestError) as caught:
        client.chat.chat(model="nope-model", messages=TALKATIVE, max_tokens=1)
    assert caught.value.status_code == 400
    assert_envelope(caught.value.body)


def test_sdk_stream_raises_before_streaming(client):
    with pytest.raises(writerai.BadRequestError):
        client.chat.chat(model=MODEL, messages=TALKATIVE, max_tokens=CTX_SIZE, stream=True)

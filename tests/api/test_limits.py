"""Bounded work before admission, in-process: every cap refuses with a 400 naming it, before
the work it bounds is done; tools are planned once, in the planner's worker process."""

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.chat import service

from .conftest import api_client, build_app, chat_body, settings
from .test_gateway import error_of


def tool(name: str, properties: int = 1, max_length: int | None = None) -> dict:
    prop: dict = {"type": "string"}
    if max_length is not None:
        prop["maxLength"] = max_length
    parameters = {"type": "object", "properties": {f"p{i}": prop for i in range(properties)}}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


class CountingBackend(FakeBackend):
    """The fake, noting how many characters it was asked to tokenize."""

    tokenized = 0

    def tokenize(self, text: str, **options) -> list[int]:
        self.tokenized += len(text)
        return super().tokenize(text, **options)


@pytest.fixture
def backend():
    return CountingBackend("Hello world", n_ctx=512, n_seq_max=4)


async def refusal(backend, body: dict, path: str = "/v1/chat", **overrides) -> dict:
    app = build_app(backend, settings(**overrides))
    async with api_client(app, lifespan=True) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    return error_of(response)


@pytest.mark.parametrize(
    ("body", "limit", "value"),
    [
        (chat_body(tools=[tool("a"), tool("b"), tool("c")]), "max_tools", 2),
        (chat_body(stop=["a", "b", "c"]), "max_stops", 2),
        (chat_body(stop="x" * 9), "max_stop_chars", 8),
        (chat_body(tools=[tool("a", 20, 1000)], tool_choice="required"), "max_grammar_bytes", 4096),
        (chat_body(tools=[tool("a", 40)], tool_choice="required"), "max_grammar_rules", 30),
        (chat_body(ignored=[{"a": []}] * 600), "max_json_values", 1000),
        (chat_body(tools=[tool("a", 400)]), "max_json_values", 1000),
    ],
    ids=["tools", "stops", "stop-chars", "grammar-bytes", "grammar-rules", "values", "schema"],
)
async def test_each_cap_is_a_400_naming_it(backend, body, limit, value):
    error = await refusal(backend, body, **{limit: value})
    assert error["extras"] == {"limit": limit, "value": value}
    assert f"`{limit}`" in error["description"]


async def test_text_full_of_commas_and_brackets_is_not_counted_as_values(backend):
    body = chat_body(messages=[{"role": "user", "content": "[a, b: c], " * 2000}])
    app = build_app(backend, settings(max_json_values=100, max_body_bytes=1 << 20))
    async with api_client(app, lifespan=True) as client:
        response = await client.post("/v1/chat", json=body)
    assert response.status_code == 400, response.text
    assert error_of(response)["key"] == "fail.badRequest.contextLengthExceeded"  # not the cap


async def test_completions_cap_stop_sequences_too(backend):
    body = {"model": "palmyra-x5", "prompt": "Hi", "stop": ["a", "b", "c"]}
    error = await refusal(backend, body, "/v1/completions", max_stops=2)
    assert error["extras"] == {"limit": "max_stops", "value": 2}


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/completions"])
async def test_a_prompt_too_long_for_the_context_is_refused_before_tokenizing(backend, path):
    # 512 tokens of at most 12 bytes each (the fake's longest token, `<|im_start|>`).
    text = "x" * (512 * 12 + 1)
    if path == "/v1/chat":
        body = chat_body(messages=[{"role": "user", "content": text}])
    else:
        body = {"model": "palmyra-x5", "prompt": text}
    error = await refusal(backend, body, path)
    assert error["key"] == "fail.badRequest.contextLengthExceeded"
    assert str(512 * 12) in error["description"]
    assert backend.tokenized < len(text)  # the turn tail's probe, never the prompt


def with_long_text(where: str, text: str) -> dict:
    if where == "arguments":
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": text}}
        return chat_body(
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
            ]
        )
    function = {"name": "f", "parameters": {"type": "object", "properties": {}}}
    if where == "description":
        function["description"] = text
    else:
        function["parameters"]["properties"]["p"] = {"type": "string", "description": text}
    return chat_body(tools=[{"type": "function", "function": function}])


@pytest.mark.parametrize("where", ["arguments", "description", "schema"])
async def test_long_text_anywhere_in_the_prompt_is_refused_before_rendering(
    backend, where, monkeypatch
):
    text = "x" * (512 * 12 + 1)
    rendered = []
    render = service.render_prompt
    monkeypatch.setattr(
        service, "render_prompt", lambda *a, **k: rendered.append(1) or render(*a, **k)
    )
    app = build_app(backend, settings(planner_processes=0))
    async with api_client(app, lifespan=True) as client:
        response = await client.post("/v1/chat", json=with_long_text(where, text))
    assert response.status_code == 400, response.text
    assert error_of(response)["key"] == "fail.badRequest.contextLengthExceeded"
    assert app.state.runtime.planner.made == 0 and not rendered
    assert backend.tokenized < len(text)


async def test_tools_are_planned_once_in_a_worker_process(backend):
    app = build_app(backend, settings(planner_processes=1))
    body = chat_body(tools=[tool("get_weather", 3)], tool_choice="required", max_tokens=4)
    async with api_client(app, lifespan=True) as client:
        for _ in range(2):
            response = await client.post("/v1/chat", json=body)
            assert response.status_code == 200, response.text
        planner = app.state.runtime.planner
        assert planner.made == 1 and planner._pool is not None
        grammar = backend.sampling[0].grammar
        assert grammar is not None and "get_weather" in grammar
        # A refusal made in the worker comes back whole: status, key and extras.
        tools = [tool(name, 20, 1000) for name in "abcd"]  # 4 x 162 KB of grammar
        big = chat_body(tools=tools, tool_choice="required")
        refused = await client.post("/v1/chat", json=big)
    assert refused.status_code == 400
    assert error_of(refused)["extras"] == {"limit": "max_grammar_bytes", "value": 512 * 1024}


async def test_plans_of_very_large_schemas_are_not_remembered():
    backend = CountingBackend("Hello world", n_ctx=32768, n_seq_max=4)  # room for the padding
    app = build_app(backend, settings())
    padding = "x" * (300 * 1024)  # an annotation: no grammar, but the plan would hold it
    big = tool("get_weather", 1)
    big["function"]["parameters"]["description"] = padding
    small = tool("get_weather", 1)
    async with api_client(app, lifespan=True) as client:
        for body in (big, small):
            request = chat_body(tools=[body], tool_choice="required", max_tokens=2)
            response = await client.post("/v1/chat", json=request)
            assert response.status_code in (200, 400), response.text
    planner = app.state.runtime.planner
    assert planner.made == 2 and len(planner._plans) == 1

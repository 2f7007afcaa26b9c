"""Function tools and structured output in-process, on the scripted fake backend.

The fake does not enforce grammars: it replays its script, so these tests check what the
service asks of the engine (grammar, triggers, prompt) and how it turns the text it gets
back into Writer's tool calls, whole and streamed. tests/unit/test_grammar.py checks that
the grammars hold; tests/e2e/test_tools.py runs them on the real model.
"""

from __future__ import annotations

import json

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.config import ModelSpec, Settings

from .conftest import KEY, api_client, build_app
from .test_chat import sse_events

CTX = 4096
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "time"}}
CALL_1 = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
CALL_2 = '<tool_call>\n{"name": "time", "arguments": {}}\n</tool_call>'


@pytest.fixture
def backend():
    return FakeBackend("", n_ctx=CTX, n_seq_max=2)


@pytest.fixture
async def client(backend):
    models = (ModelSpec("palmyra-x5", "Palmyra X5", "fake.gguf", CTX, 1024),)
    app = build_app(backend, Settings(api_key=(KEY,), data_dir="unused", models=models))
    async with api_client(app, lifespan=True) as client:
        yield client


def body(**fields) -> dict:
    out = {"model": "palmyra-x5", "messages": [{"role": "user", "content": "Weather in Oslo?"}]}
    return {**out, **fields}


def script(backend: FakeBackend, text: str) -> None:
    backend.reply = text.encode()


def prompt_of(backend: FakeBackend) -> str:
    """The prompt of the last request (the fake's KV holds prompt and answer)."""
    text = backend.text(backend.kv[0])
    return text[: text.rindex("<|im_start|>assistant\n")]


def sampling(backend: FakeBackend):
    (params,) = backend.sampling.values()
    return params


async def chat(client, **fields) -> dict:
    response = await client.post("/v1/chat", json=body(**fields))
    assert response.status_code == 200, response.text
    return response.json()


async def test_calls_become_tool_calls_with_finish_reason_tool_calls(client, backend):
    script(backend, "Checking." + CALL_1 + CALL_2)
    answer = await chat(client, tools=[WEATHER, CLOCK])
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "time"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Oslo"}, {}]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 2
    assert [c["index"] for c in calls] == [0, 1]


async def test_text_without_calls_stays_text(client, backend):
    script(backend, "It is sunny.")
    choice = (await chat(client, tools=[WEATHER]))["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("stop", "It is sunny.")
    assert choice["message"]["tool_calls"] is None


@pytest.mark.parametrize(
    ("choice", "triggers", "forced_text"),
    [
        (None, ("<tool_call>",), "Call a function only when it helps"),
        ("auto", ("<tool_call>",), "Call a function only when it helps"),
        ({"value": "auto"}, ("<tool_call>",), "Call a function only when it helps"),
        ("required", (), "You must call at least one function"),
        ({"value": "required"}, (), "You must call at least one function"),
        ({"type": "function", "function": {"name": "time"}}, (), "call the function `time`"),
        (
            {"value": {"type": "function", "function": {"name": "time"}}},
            (),
            "call the function `time`",
        ),
    ],
)
async def test_tool_choice_sets_grammar_triggers_and_prompt(
    client, backend, choice, triggers, forced_text
):
    script(backend, CALL_2)
    fields = {"tools": [WEATHER, CLOCK]}
    if choice is not None:
        fields["tool_choice"] = choice
    await chat(client, **fields)
    params = sampling(backend)
    assert params.grammar is not None and "root ::=" in params.grammar
    assert params.grammar_triggers == triggers
    assert forced_text in prompt_of(backend)


async def test_a_named_function_is_the_only_one_offered(client, backend):
    script(backend, CALL_2)
    await chat(
        client,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "time"}},
    )
    grammar = sampling(backend).grammar
    assert '\\"time\\"' in grammar and "get_weather" not in grammar


@pytest.mark.parametrize("choice", ["none", {"value": "none"}])
async def test_tool_choice_none_is_plain_text(client, backend, choice):
    script(backend, "Plain." + CALL_1)
    answer = await chat(client, tools=[WEATHER], tool_choice=choice)
    assert sampling(backend).grammar is None
    assert "get_weather" not in prompt_of(backend)
    choice_ = answer["choices"][0]
    assert choice_["message"]["tool_calls"] is None
    assert choice_["message"]["content"] == "Plain." + CALL_1


async def test_streamed_calls_follow_spec_3_4(client, backend):
    script(backend, "Ok." + CALL_1 + CALL_2)
    response = await client.post("/v1/chat", json=body(tools=[WEATHER, CLOCK], stream=True))
    frames = sse_events(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    content, calls = "", []
    for chunk in chunks[1:-1]:
        (choice,) = chunk["choices"]
        assert choice["finish_reason"] is None
        delta = choice["delta"]
        if delta.get("content"):
            content += delta["content"]
            assert not delta.get("tool_calls")
            continue
        (fragment,) = delta["tool_calls"]
        assert isinstance(fragment["index"], int)
        assert isinstance(fragment["function"]["arguments"], str)
        if fragment["index"] == len(calls):  # a call's first fragment: id, type and name
            assert fragment["id"].startswith("call_") and fragment["type"] == "function"
            assert fragment["function"]["arguments"] == ""
            calls.append([fragment["function"]["name"], ""])
        else:
            assert fragment["index"] == len(calls) - 1
            assert set(fragment) == {"index", "function"}
            assert set(fragment["function"]) == {"arguments"}
            calls[-1][1] += fragment["function"]["arguments"]
    assert content == "Ok."
    assert [(n, json.loads(a)) for n, a in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("time", {}),
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_call_cut_off_by_max_tokens_ends_with_length(client, backend):
    script(backend, CALL_1)
    choice = (await chat(client, tools=[WEATHER], tool_choice="required", max_tokens=55))[
        "choices"
    ][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_the_loop_replays_calls_and_results_without_tools(client, backend):
    script(backend, "Sunny in Oslo.")
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "index": 0,
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
            "graph_data": {"sources": None, "status": None, "subqueries": None},
            "refusal": None,
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Sunny"},
    ]
    choice = (await chat(client, messages=history))["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == ("stop", "Sunny in Oslo.")
    prompt = prompt_of(backend)
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    assert '{"name": "get_weather", "content": "Sunny"}' in prompt
    assert sampling(backend).grammar is None


@pytest.mark.parametrize(
    "response_format",
    [
        {
            "type": "json_schema",
            "json_schema": {
                "name": "W",
                "schema": WEATHER["function"]["parameters"],
                "strict": True,
            },
        },
        {"type": "json_schema", "json_schema": {"schema": WEATHER["function"]["parameters"]}},
        {"type": "json_schema", "json_schema": WEATHER["function"]["parameters"]},
    ],
    ids=["sdk", "docs", "bare schema"],
)
async def test_json_schema_constrains_content(client, backend, response_format):
    script(backend, '{"city": "Oslo"}')
    choice = (await chat(client, response_format=response_format))["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"city": "Oslo"}
    grammar = sampling(backend).grammar
    assert '"\\"city\\""' in grammar and sampling(backend).grammar_triggers == ()


async def test_json_object_constrains_content_to_an_object(client, backend):
    script(backend, "{}")
    await chat(client, response_format={"type": "json_object"})
    assert "root ::= s0" in sampling(backend).grammar


async def test_auto_tools_with_a_json_answer_allow_either_from_the_start(client, backend):
    script(backend, '{"city": "Oslo"}')
    schema = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    choice = (await chat(client, tools=[WEATHER], response_format=schema))["choices"][0]
    assert choice["finish_reason"] == "stop"
    params = sampling(backend)
    assert params.grammar_triggers == () and "root ::= tool-calls | s" in params.grammar


def bad_tool(**function) -> dict:
    return {"type": "function", "function": function}


BAD = {
    "tool without a name": (
        {"tools": [bad_tool(description="x")]},
        "`tools[0].function.name` is missing",
    ),
    "empty name": ({"tools": [bad_tool(name=" ")]}, "`tools[0].function.name` is empty"),
    "parameters not an object schema": (
        {"tools": [bad_tool(name="f", parameters={"type": "string"})]},
        "must describe an object",
    ),
    "parameters not a JSON Schema": (
        {"tools": [bad_tool(name="f", parameters={"type": "strin"})]},
        "not a valid JSON Schema",
    ),
    "parameters a list": (
        {"tools": [bad_tool(name="f", parameters=[1])]},
        "`tools[0].function.parameters` (function `f`) must be a JSON Schema object",
    ),
    "unknown tool type": ({"tools": [{"type": "magic", "function": {"name": "f"}}]}, "magic"),
    "duplicate names": ({"tools": [CLOCK, CLOCK]}, "repeats the function name `time`"),
    "tool_choice names an absent function": (
        {"tools": [CLOCK], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "`nope`, which is not in `tools`",
    ),
    "required without tools": ({"tool_choice": "required"}, "no function `tools`"),
    "two built-in tools": (
        {
            "tools": [
                {"type": "llm", "function": {"description": "d", "model": "palmyra-x4"}},
                {"type": "web_search", "function": {"include_domains": [], "exclude_domains": []}},
            ]
        },
        "at most one built-in tool",
    ),
    "a built-in tool this server lacks": (
        {
            "tools": [
                {"type": "web_search", "function": {"include_domains": [], "exclude_domains": []}}
            ]
        },
        "`web_search` tool is not available",
    ),
    "json_schema without a schema": (
        {"response_format": {"type": "json_schema"}},
        "`json_schema` is required",
    ),
    "json_schema with only a name": (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "X"}}},
        "has no `schema`",
    ),
    "schema not an object": (
        {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
        "must be a JSON Schema object",
    ),
    "unsupported schema feature": (
        {"tools": [bad_tool(name="f", parameters={"type": "object", "not": {}})]},
        "`not`",
    ),
}


@pytest.mark.parametrize(("fields", "says"), BAD.values(), ids=BAD.keys())
async def test_bad_tool_input_is_a_400_naming_the_problem(client, fields, says):
    response = await client.post("/v1/chat", json=body(**fields))
    assert response.status_code == 400, response.text
    assert response.json()["tpe"] == "BadRequest"
    assert says in response.json()["errors"][0]["description"]


async def test_a_grammar_the_engine_refuses_is_a_400(client, backend):
    backend.refuse_grammars = True
    response = await client.post("/v1/chat", json=body(response_format={"type": "json_object"}))
    assert response.status_code == 400
    assert "grammar" in response.json()["errors"][0]["description"]


@pytest.mark.parametrize("where", ["tools", "response_format"])
async def test_integers_past_64_bits_in_a_schema_are_no_500(client, where):
    # Found by tests/api/test_contract.py: the planner's cache key could not encode them.
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**70}}}
    fields = {
        "tools": {"tools": [bad_tool(name="f", parameters=schema)]},
        "response_format": {"response_format": {"type": "json_schema", "json_schema": schema}},
    }[where]
    response = await client.post("/v1/chat", json=body(**fields))
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"

"""What shape the answer must take: tools, `tool_choice` and `response_format` -> an `OutputPlan`.

Everything here runs before generation, so every problem is a 400 naming it:

    tool_choice  none      no tools in the prompt, plain text
                 auto      tools in the prompt; the call grammar arms at the first `<tool_call>`
                 required  one or more calls, grammar from the first token
                 {name}    exactly one call to that function, grammar from the first token
    response_format json_schema / json_object: content follows the schema (grammar)

With `auto` and a JSON `response_format` together the grammar allows either calls or the
JSON answer, from the first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inkstand.chat.grammar import GrammarBuilder, GrammarLimits, check_schema
from inkstand.chat.prompt import ToolPrompt
from inkstand.chat.toolformat import Function, HermesFormat
from inkstand.errors import BadRequestError, UnsupportedFeatureError
from inkstand.schemas.chat import (
    BUILT_IN_TOOL_TYPES,
    ChatRequest,
    FunctionTool,
    NamedToolChoice,
    ResponseFormat,
)

SDK_SCHEMA_KEYS = {"name", "description", "strict", "schema"}


@dataclass(frozen=True)
class OutputPlan:
    tools: ToolPrompt | None = None  # what the prompt shows
    grammar: str | None = None
    triggers: tuple[str, ...] = ()  # the grammar arms at one of these words
    parse_calls: bool = False  # look for tool calls in the output


def plan_output(
    request: ChatRequest, fmt: HermesFormat, limits: GrammarLimits | None = None
) -> OutputPlan:
    functions = read_functions(request)
    choice = read_choice(request, functions)
    answer = read_response_schema(request.response_format)
    builder = GrammarBuilder(limits)
    if choice == "none" or not functions:
        if answer is None:
            return OutputPlan()
        builder.rule("root", builder.add(*answer))
        return OutputPlan(grammar=builder.text())
    forced = None if choice == "auto" else choice
    if forced not in (None, "required"):
        functions = [f for f in functions if f.name == forced]
    calls = fmt.add_calls(builder, functions, several=forced in (None, "required"))
    tools = ToolPrompt(tuple(functions), forced)
    if forced is None and answer is not None:  # a call or the JSON answer, from the start
        builder.rule("root", f"{calls} | {builder.add(*answer)}")
        return OutputPlan(tools, builder.text(), parse_calls=True)
    builder.rule("root", calls)
    triggers = (fmt.trigger,) if forced is None else ()
    return OutputPlan(tools, builder.text(), triggers, parse_calls=True)


# Built-in tools this server does not run, and what a caller can do instead.
UNAVAILABLE_TOOLS = {
    "web_search": ": it needs a web search service, and this server searches no web",
    "vision": (
        ": send the images as `image_url` fragments of a message to a model served by a "
        "vision engine (an upstream model with `vision = true`)"
    ),
}


def read_functions(request: ChatRequest) -> list[Function]:
    """The request's function tools, checked; 400 for built-in tools and bad definitions."""
    tools = request.tools or []
    built_in = [t.type for t in tools if t.type in BUILT_IN_TOOL_TYPES]
    if len(built_in) > 1:
        raise BadRequestError(
            f"A request may use at most one built-in tool; got {', '.join(built_in)}."
        )
    if built_in:
        why = UNAVAILABLE_TOOLS.get(built_in[0], "")
        raise UnsupportedFeatureError(
            f"The built-in `{built_in[0]}` tool is not available on this server{why}."
        )
    functions: list[Function] = []
    for i, tool in enumerate(tools):
        assert isinstance(tool, FunctionTool)
        functions.append(_read_function(i, tool, {f.name for f in functions}))
    return functions


def _read_function(i: int, tool: FunctionTool, seen: set[str]) -> Function:
    name = tool.function.name
    if name is None or not name.strip():
        state = "missing" if name is None else "empty"
        raise BadRequestError(f"`tools[{i}].function.name` is {state}; give the function a name.")
    if name in seen:
        raise BadRequestError(
            f"`tools[{i}]` repeats the function name `{name}`; function names must be unique."
        )
    params = tool.function.parameters
    if params is not None:
        where = f"`tools[{i}].function.parameters` (function `{name}`)"
        check_schema(params, where)  # a 400 unless it is a JSON Schema object
        if params.get("type", "object") != "object":
            raise BadRequestError(
                f'{where} must describe an object (`"type": "object"`), not '
                f"`{params.get('type')}`: arguments are a JSON object."
            )
    return Function(name, tool.function.description, params)


def read_choice(request: ChatRequest, functions: list[Function]) -> str:
    """`none`, `auto`, `required` or a function name; 400 if it cannot be honoured."""
    choice = request.tool_choice
    if choice is None:
        return "auto" if functions else "none"
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in {f.name for f in functions}:
            offered = ", ".join(f"`{f.name}`" for f in functions) or "none"
            raise BadRequestError(
                f"`tool_choice` names the function `{name}`, which is not in `tools` "
                f"(offered: {offered})."
            )
        return name
    if choice == "required" and not functions:
        raise BadRequestError(
            '`tool_choice` is "required" but the request has no function `tools` to call.'
        )
    return choice


def read_response_schema(fmt: ResponseFormat | None) -> tuple[dict[str, Any], str] | None:
    """The schema the content must follow and where it came from; None for text."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}, "`response_format`"
    payload = fmt.json_schema or {}
    if "schema" in payload:
        schema = payload["schema"]
        if not isinstance(schema, dict):
            raise BadRequestError(
                "`response_format.json_schema.schema` must be a JSON Schema object."
            )
        where = "`response_format.json_schema.schema`"
    elif set(payload) - SDK_SCHEMA_KEYS:  # the docs' other form: the schema itself
        schema, where = payload, "`response_format.json_schema`"
    else:
        raise BadRequestError(
            "`response_format.json_schema` has no `schema`: send "
            '`{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`.'
        )
    check_schema(schema, where)
    return schema, where

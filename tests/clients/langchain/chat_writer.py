"""langchain-writer's `ChatWriter` against Inkstand, run in the langchain venv (not ours).

    <langchain venv>/bin/python tests/clients/langchain/chat_writer.py \
        [--graph-id ID] [--only CHECK ...]

The server comes from WRITER_BASE_URL and WRITER_API_KEY, as for any langchain-writer
application. Every check runs (one failing does not stop the others) and the script prints
one JSON object: check name -> {"result": observations} or {"error": traceback}.
tests/e2e/test_langchain.py asserts on the observations: structure, never prose.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import traceback
from collections.abc import Callable

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_writer import ChatWriter
from langchain_writer.tools import GraphTool, LLMTool
from pydantic import BaseModel, Field

MODEL = "palmyra-x5"
ASK = [HumanMessage("Say hello to the reader.")]
WITH_SYSTEM = [SystemMessage("You are a terse assistant."), *ASK]
LONGER_SYSTEM = "You are a terse assistant who answers every question in French, politely."
CHECKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


class GetWeather(BaseModel):
    """Get the current weather in a city."""

    city: str = Field(description="The city, e.g. Oslo")


class GetTime(BaseModel):
    """Get the current time in a city."""

    city: str = Field(description="The city, e.g. Oslo")


class City(BaseModel):
    """A city and the country it is in."""

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)


def check(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    CHECKS[fn.__name__] = fn
    return fn


def chat(max_tokens: int = 8, model: str = MODEL) -> ChatWriter:
    # logprobs is ChatWriter's default (True): kept, since applications send it too.
    return ChatWriter(model=model, temperature=0, max_tokens=max_tokens, max_retries=1)


def describe(message: BaseMessage) -> dict:
    """What a test needs to know of an answer: its type, text, finish, usage and tool data."""
    raw_calls = message.additional_kwargs.get("tool_calls") or []
    return {
        "type": type(message).__name__,
        "content": message.content,
        "finish_reason": message.response_metadata.get("finish_reason"),
        "usage": message.usage_metadata,
        "tool_calls": [
            {"name": c["name"], "args": c["args"], "id": c["id"]} for c in message.tool_calls
        ],
        "invalid_tool_calls": [dict(c) for c in message.invalid_tool_calls],
        "raw_arguments": [c["function"]["arguments"] for c in raw_calls],
        "llm_data": message.additional_kwargs.get("llm_data"),
        "graph_data": message.additional_kwargs.get("graph_data"),
    }


def added(chunks: list[BaseMessageChunk]) -> BaseMessageChunk:
    """The chunks of a stream added up, as langchain applications do (`total += chunk`)."""
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return total


def kinds(chunks: list[BaseMessageChunk]) -> list[str]:
    return sorted({type(chunk).__name__ for chunk in chunks})


@check
def invoke_with_system(args: argparse.Namespace) -> dict:
    llm = chat()
    longer = [SystemMessage(LONGER_SYSTEM), *ASK]
    return {"short": describe(llm.invoke(WITH_SYSTEM)), "long": describe(llm.invoke(longer))}


@check
def stream(args: argparse.Namespace) -> dict:
    llm = chat()
    chunks = list(llm.stream(WITH_SYSTEM))
    return {
        "chunk_types": kinds(chunks),
        "pieces": [chunk.content for chunk in chunks],
        "total": describe(added(chunks)),
        "whole": describe(llm.invoke(WITH_SYSTEM)),
    }


@check
def batch(args: argparse.Namespace) -> dict:
    prompts = [[HumanMessage(f"Count to {n}.")] for n in (3, 4, 5)]
    return {"answers": [describe(m) for m in chat().batch(prompts)]}


@check
def ainvoke(args: argparse.Namespace) -> dict:
    async def both() -> tuple[AIMessage, str]:
        llm = chat()
        answer = await llm.ainvoke(WITH_SYSTEM)
        pieces = [chunk.content async for chunk in llm.astream(WITH_SYSTEM)]
        return answer, "".join(pieces)

    answer, streamed = asyncio.run(both())
    return {"answer": describe(answer), "astream_text": streamed}


@check
def named_tool_choice(args: argparse.Namespace) -> dict:
    llm = chat(max_tokens=40).bind_tools([GetWeather, GetTime], tool_choice="GetWeather")
    return describe(llm.invoke("What is the weather in Oslo?"))


@check
def streamed_tool_call(args: argparse.Namespace) -> dict:
    llm = chat(max_tokens=40).bind_tools([GetWeather, GetTime], tool_choice="GetWeather")
    chunks = list(llm.stream("What is the weather in Oslo?"))
    return {"chunk_types": kinds(chunks), "total": describe(added(chunks))}


@check
def required_tool_choice(args: argparse.Namespace) -> dict:
    llm = chat(max_tokens=40).bind_tools([GetWeather, GetTime], tool_choice="any")
    return describe(llm.invoke("What time is it in Lima?"))


def tool_loop(model: str) -> dict:
    llm = chat(max_tokens=40, model=model)
    forced = llm.bind_tools([GetWeather], tool_choice="GetWeather")
    question = HumanMessage("What is the weather in Oslo?")
    call = forced.invoke([question])
    results = [ToolMessage("12 C and sunny", tool_call_id=c["id"]) for c in call.tool_calls]
    answer = llm.bind_tools([GetWeather]).invoke([question, call, *results])
    return {"call": describe(call), "answer": describe(answer)}


@check
def tool_loop_x5(args: argparse.Namespace) -> dict:
    # ChatWriter replays a palmyra-x5 call with `parameters` (the args' Python repr).
    return tool_loop("palmyra-x5")


@check
def tool_loop_x4(args: argparse.Namespace) -> dict:
    # ... and any other model's call with `arguments`, the args' Python repr too.
    return tool_loop("palmyra-x4")


def structured(method: str) -> dict:
    llm = chat(max_tokens=80).with_structured_output(City, method=method, include_raw=True)
    out = llm.invoke("Name a city in Norway.")
    parsed = out["parsed"]
    return {
        "raw": describe(out["raw"]),
        "parsed_type": type(parsed).__name__,
        "parsed": parsed.model_dump() if isinstance(parsed, BaseModel) else parsed,
        "parsing_error": repr(out["parsing_error"]) if out["parsing_error"] else None,
    }


@check
def structured_by_function_calling(args: argparse.Namespace) -> dict:
    return structured("function_calling")


@check
def structured_by_json_schema(args: argparse.Namespace) -> dict:
    return structured("json_schema")


@check
def llm_tool(args: argparse.Namespace) -> dict:
    tool = LLMTool(model_name="palmyra-x5", description="An expert on skies")
    llm = chat(max_tokens=12).bind_tools([tool])
    question = [HumanMessage("Ask the expert which colour the sky is.")]
    whole = llm.invoke(question)
    return {"whole": describe(whole), "streamed": describe(added(list(llm.stream(question))))}


@check
def graph_tool(args: argparse.Namespace) -> dict:
    if not args.graph_id:
        raise ValueError("graph_tool needs --graph-id")
    llm = chat(max_tokens=16).bind_tools([GraphTool(graph_ids=[args.graph_id])])
    question = [HumanMessage("When does the Kessa ferry leave the quay?")]
    whole = llm.invoke(question)
    return {"whole": describe(whole), "streamed": describe(added(list(llm.stream(question))))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graph-id")
    parser.add_argument("--only", nargs="*", help="run these checks (default: all)")
    args = parser.parse_args()
    report = {}
    for name, fn in CHECKS.items():
        if args.only and name not in args.only:
            continue
        try:
            report[name] = {"result": fn(args)}
        except Exception:
            report[name] = {"error": traceback.format_exc()}
    print(json.dumps(report, default=repr))


if __name__ == "__main__":
    main()

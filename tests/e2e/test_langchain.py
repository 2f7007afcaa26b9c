"""langchain-writer's `ChatWriter` against the real server, from a venv of its own.

langchain-writer pins writer-sdk 2.x, which cannot share our venv, so scripts/client_suites.py
installs it apart (tests/clients/__init__.py). One run of tests/clients/langchain/
chat_writer.py makes every request, against a graph built here with our own SDK; each test
checks one behaviour in what it observed: message and chunk types, finish reasons, usage,
tool calls whose arguments parse, structured output, the built-in tools' data. Structure
only, never the model's prose. The embedded engine only: the client's side of the wire is
the same for every engine.
"""

from __future__ import annotations

import json
import time

import pytest
import writerai

from ..clients import LANGCHAIN_SCRIPT, ensure_langchain, observed, run_client

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

FERRY = b"The Kessa ferry leaves the quay at seven every morning.\n"


def wait_for_ingestion(client: writerai.Writer, file_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (status := client.files.retrieve(file_id).status) == "in_progress":
        assert time.monotonic() < deadline, "the file is still in progress"
        time.sleep(0.2)
    assert status == "completed"


@pytest.fixture(scope="module")
def harbour(client: writerai.Writer):
    """A graph holding one completed text file: (graph id, file id)."""
    graph = client.graphs.create(name="Harbour", description="Ferry times")
    uploaded = client.files.upload(
        content=FERRY,
        content_type="text/plain",
        content_disposition="attachment; filename=ferry.txt",
    )
    client.graphs.add_file_to_graph(graph.id, file_id=uploaded.id)
    wait_for_ingestion(client, uploaded.id)
    yield graph.id, uploaded.id
    client.graphs.delete(graph.id)
    client.files.delete(uploaded.id)


@pytest.fixture(scope="module")
def report(server, harbour) -> dict:
    python = ensure_langchain()
    return run_client(server, [str(python), str(LANGCHAIN_SCRIPT), "--graph-id", harbour[0]])


def assert_answer(message: dict) -> None:
    """`message` (as chat_writer.py describes it) is a finished text answer with usage."""
    assert message["type"] == "AIMessage"
    assert isinstance(message["content"], str) and message["content"]
    assert message["finish_reason"] in ("stop", "length")
    usage = message["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message["tool_calls"] == [] and message["invalid_tool_calls"] == []


def assert_calls(message: dict, names: set[str]) -> list[dict]:
    """`message` calls tools among `names`, with arguments that are JSON objects."""
    assert message["finish_reason"] == "tool_calls"
    assert message["invalid_tool_calls"] == []
    calls = message["tool_calls"]
    assert calls and {call["name"] for call in calls} <= names
    for call, raw in zip(calls, message["raw_arguments"], strict=True):
        assert call["id"]
        assert json.loads(raw) == call["args"]
        assert isinstance(call["args"]["city"], str)
    return calls


def test_invoke_sends_the_system_prompt(report):
    seen = observed(report, "invoke_with_system")
    assert_answer(seen["short"])
    assert_answer(seen["long"])
    # The longer system prompt reached the model: it cost more prompt tokens.
    assert seen["long"]["usage"]["input_tokens"] > seen["short"]["usage"]["input_tokens"] + 5


def test_stream_chunks_add_up_to_the_whole_answer(report):
    seen = observed(report, "stream")
    assert_answer(seen["whole"])
    assert "".join(seen["pieces"]) == seen["total"]["content"] == seen["whole"]["content"]
    assert seen["total"]["type"] == "AIMessageChunk"


@pytest.mark.parametrize("check", ["stream", "streamed_tool_call"])
def test_every_chunk_is_an_ai_message_chunk_and_the_total_has_finish_and_usage(report, check):
    """langchain-writer makes an AIMessageChunk, with finish reason and usage, only of a
    chunk whose delta has `role: "assistant"`; Writer puts the role in every chunk."""
    seen = observed(report, check)
    assert seen["chunk_types"] == ["AIMessageChunk"]
    total = seen["total"]
    assert total["finish_reason"] == ("length" if check == "stream" else "tool_calls")
    assert total["usage"] and total["usage"]["output_tokens"] > 0
    if check == "stream":
        assert total["usage"] == seen["whole"]["usage"]


def test_streamed_tool_call_adds_up_to_a_parsed_call(report):
    total = observed(report, "streamed_tool_call")["total"]
    assert [call["name"] for call in total["tool_calls"]] == ["GetWeather"]
    assert isinstance(total["tool_calls"][0]["args"]["city"], str)
    assert total["tool_calls"][0]["id"]


def test_batch_answers_every_prompt(report):
    answers = observed(report, "batch")["answers"]
    assert len(answers) == 3
    for answer in answers:
        assert_answer(answer)


def test_ainvoke_and_astream_agree(report):
    seen = observed(report, "ainvoke")
    assert_answer(seen["answer"])
    assert seen["astream_text"] == seen["answer"]["content"]


def test_a_named_tool_choice_calls_that_tool(report):
    (call,) = assert_calls(observed(report, "named_tool_choice"), {"GetWeather"})
    assert call["name"] == "GetWeather"


def test_a_required_tool_choice_calls_a_bound_tool(report):
    assert_calls(observed(report, "required_tool_choice"), {"GetWeather", "GetTime"})


@pytest.mark.parametrize("model", ["x5", "x4"])
def test_the_tool_loop_answers_after_a_tool_message(report, model):
    """ChatWriter replays its calls with the arguments' Python repr, under `parameters` for
    palmyra-x5 and `arguments` for other models; the server answers either."""
    seen = observed(report, f"tool_loop_{model}")
    assert_calls(seen["call"], {"GetWeather"})
    assert_answer(seen["answer"])
    # The call and the tool's result are in the follow-up's prompt.
    assert seen["answer"]["usage"]["input_tokens"] > seen["call"]["usage"]["input_tokens"] + 5


def test_structured_output_by_function_calling(report):
    seen = observed(report, "structured_by_function_calling")
    assert seen["parsing_error"] is None and seen["parsed_type"] == "City"
    (call,) = seen["raw"]["tool_calls"]
    assert call["name"] == "City" and call["args"] == seen["parsed"]
    assert seen["raw"]["finish_reason"] == "tool_calls"


def test_structured_output_by_json_schema(report):
    seen = observed(report, "structured_by_json_schema")
    assert seen["parsing_error"] is None and seen["parsed_type"] == "City"
    assert json.loads(seen["raw"]["content"]) == seen["parsed"]
    assert set(seen["parsed"]) == {"name", "country"}
    assert seen["raw"]["finish_reason"] == "stop"


def test_llm_tool_delegates_and_reports_llm_data_once(report):
    seen = observed(report, "llm_tool")
    whole = seen["whole"]
    assert_answer(whole)
    assert whole["llm_data"]["model"] == "palmyra-x5"
    assert isinstance(whole["llm_data"]["prompt"], str) and whole["llm_data"]["prompt"].strip()
    # Added-up chunks concatenate strings: llm_data sent more than once would double the prompt.
    assert seen["streamed"]["llm_data"] == whole["llm_data"]
    assert seen["streamed"]["content"] == whole["content"]


def test_graph_tool_answers_from_the_uploaded_file(report, harbour):
    seen = observed(report, "graph_tool")
    _, file_id = harbour
    for answer in (seen["whole"], seen["streamed"]):
        sources = answer["graph_data"]["sources"]
        assert sources and {source["file_id"] for source in sources} == {file_id}
        assert all(source["snippet"] for source in sources)
        assert answer["content"]
    assert_answer(seen["whole"])
    assert seen["streamed"]["graph_data"]["sources"] == seen["whole"]["graph_data"]["sources"]

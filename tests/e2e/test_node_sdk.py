"""The npm `writer-sdk` (Writer's TypeScript SDK) against the real server, run by node.

scripts/client_suites.py installs the pinned package outside the repository
(tests/clients/__init__.py). One run of tests/clients/node/writer_sdk.mjs makes every
request: chat whole and streamed, the `chat.stream` helper's events, a forced function call
and the loop with its result, errors as the SDK's typed exceptions, and a Knowledge Graph
built from a file the SDK uploads, asked with `client.graphs.question`. Each test checks one
behaviour in what it observed; structure only, never the model's prose. The embedded engine
only: the client's side of the wire is the same for every engine.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ..clients import node_workdir, observed, run_client
from .support import MODEL, assert_envelope

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]


@pytest.fixture(scope="module")
def report(server, tmp_path_factory) -> dict:
    node = shutil.which("node")
    assert node, "node is not installed: the node client tests need node 18+ and npm"
    script = node_workdir(tmp_path_factory.mktemp("node-client"))
    return run_client(server, [node, str(script)])


def assert_usage(usage: dict) -> None:
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_returns_a_completion(report):
    seen = observed(report, "chat_whole")
    assert seen["object"] == "chat.completion" and seen["id"] and seen["model"] == MODEL
    assert seen["role"] == "assistant" and isinstance(seen["content"], str) and seen["content"]
    assert seen["finish_reason"] in ("stop", "length")
    assert_usage(seen["usage"])


def test_streamed_chunks_add_up_to_the_whole_answer(report):
    seen = observed(report, "chat_streamed")
    assert seen["objects"] == ["chat.completion.chunk"] and len(seen["ids"]) == 1
    assert seen["text"] == seen["whole_content"]
    *running, last = seen["finish_reasons"]
    assert set(running) == {None} and last in ("stop", "length")
    assert_usage(seen["usage"])  # include_usage: on the last chunk, where the SDK looks


def test_stream_helper_emits_its_events_and_the_final_completion(report):
    seen = observed(report, "stream_helper")
    counts = seen["counts"]
    assert counts["chunk"] >= 3 and counts["content.delta"] == counts["content"] >= 1
    for once in ("content.done", "finalChatCompletion", "finalMessage", "finalContent", "end"):
        assert counts[once] == 1, once
    assert seen["deltas"] == seen["content_done"] == seen["final_content"]
    assert seen["final_role"] == "assistant" and seen["finish_reason"] in ("stop", "length")
    assert_usage(seen["usage"])
    assert counts["totalUsage"] == 1
    assert seen["total_usage"] == {k: seen["usage"][k] for k in seen["total_usage"]}


def test_stream_helper_assembles_a_tool_call(report):
    seen = observed(report, "stream_helper_tool_call")
    assert seen["finish_reason"] == "tool_calls" and seen["argument_deltas"] >= 1
    (done,) = seen["done"]
    (call,) = seen["tool_calls"]
    assert done["name"] == call["function"]["name"] == "get_weather" and done["index"] == 0
    assert done["arguments"] == call["function"]["arguments"]
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert call["id"].startswith("call_") and call["type"] == "function"


def test_function_tool_loop_completes(report):
    seen = observed(report, "tool_loop")
    assert seen["call_finish_reason"] == "tool_calls"
    (call,) = seen["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert seen["answer_finish_reason"] in ("stop", "length")
    assert isinstance(seen["answer_content"], str) and not seen["answer_tool_calls"]


@pytest.mark.parametrize(
    ("case", "cls", "status"),
    [
        ("bad_model", "BadRequestError", 400),
        ("bad_model_streamed", "BadRequestError", 400),
        ("bad_key", "AuthenticationError", 401),
    ],
)
def test_errors_are_the_sdks_typed_errors(report, case, cls, status):
    error = observed(report, "errors")[case]
    assert error["class"] == cls and error["status"] == status
    assert error["is_bad_request"] == (status == 400)
    assert error["is_authentication"] == (status == 401)
    assert_envelope(error["error"])


def test_uploaded_file_answers_a_graph_question(report):
    seen = observed(report, "knowledge_graph")
    file = seen["file"]
    assert file["name"] == "ferry.txt" and file["status"] == "completed"
    assert file["graph_ids"] == [seen["graph_id"]]
    answer = seen["answer"]
    assert isinstance(answer["answer"], str) and answer["answer"]
    assert {source["file_id"] for source in answer["sources"]} == {file["id"]}


def test_streamed_graph_question_sends_its_sources_once(report):
    seen = observed(report, "knowledge_graph")
    events = [event["data"] for event in seen["streamed"]]
    assert "".join(event["answer"] for event in events).strip()
    with_sources = [event["sources"] for event in events if event.get("sources")]
    assert len(with_sources) == 1
    assert {source["file_id"] for source in with_sources[0]} == {seen["file"]["id"]}

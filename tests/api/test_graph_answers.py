"""The `graph` tool's answers beyond plain grounding, in process on the fake engine:
sub-questions (`subqueries: true`), inline citations with `references`, snippets fitted to
the room the context leaves, and the sub-questions' tokens in `usage` and rate limits."""

import json
from types import SimpleNamespace

import pytest

from inkstand.chat.builtin import snippet_room_chars
from inkstand.knowledge.search import Snippet
from inkstand.schemas.chat import ChatRequest
from inkstand.tools.graph import fit

from .conftest import api_client, build_app, chat_body, settings
from .test_chat import sse_events
from .test_gateway import error_of, with_key
from .test_graph_tool import CHUNKS, QUESTION, RecordingBackend, graph, with_graph

SPLIT = '{"subqueries": ["When is the lamp lit?", "Who lights the lamp?"]}'


def message_of(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


async def post_chat(backend, body: dict):
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        return await client.post("/v1/chat", json=body)


async def test_subqueries_split_the_question_and_answer_each_part():
    backend = RecordingBackend(SPLIT, n_ctx=2048, n_seq_max=2)
    response = await post_chat(
        backend, chat_body(messages=QUESTION, tools=[graph(subqueries=True)])
    )
    subqueries = message_of(response)["graph_data"]["subqueries"]
    assert [s["query"] for s in subqueries] == ["When is the lamp lit?", "Who lights the lamp?"]
    for part in subqueries:
        assert part["answer"] == SPLIT  # the fake answers every prompt with its script
        assert {"file_id": "f1", "snippet": CHUNKS[0]} in part["sources"]
    asked = [text for text in backend.seen if "Who lights the lamp?" in text]
    assert asked, "each sub-question is asked of the model"


async def test_an_unreadable_split_falls_back_to_the_question_itself():
    backend = RecordingBackend("not json", n_ctx=2048, n_seq_max=2)
    response = await post_chat(
        backend, chat_body(messages=QUESTION, tools=[graph(subqueries=True)])
    )
    subqueries = message_of(response)["graph_data"]["subqueries"]
    assert [s["query"] for s in subqueries] == [QUESTION[0]["content"]]


async def test_the_sub_questions_tokens_count_in_usage():
    plain = await post_chat(
        RecordingBackend(SPLIT, n_ctx=2048, n_seq_max=2),
        chat_body(messages=QUESTION, tools=[graph()]),
    )
    split = await post_chat(
        RecordingBackend(SPLIT, n_ctx=2048, n_seq_max=2),
        chat_body(messages=QUESTION, tools=[graph(subqueries=True)]),
    )
    alone, more = plain.json()["usage"], split.json()["usage"]
    # three more generations (the split and two answers), each a prompt and a reply
    assert more["prompt_tokens"] > alone["prompt_tokens"] * 2
    assert more["completion_tokens"] >= alone["completion_tokens"] * 4
    assert more["total_tokens"] == more["prompt_tokens"] + more["completion_tokens"]


async def test_a_key_without_room_for_the_sub_questions_is_refused_before_they_run():
    backend = RecordingBackend(SPLIT, n_ctx=2048, n_seq_max=2)
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        key = app.state.keys.create("small", tpm=400)
        body = chat_body(messages=QUESTION, tools=[graph(subqueries=True)])
        refused = await client.post("/v1/chat", json=body, **with_key(client, key.secret))
    assert refused.status_code == 429, refused.text
    assert error_of(refused)["extras"]["limit"] == "tpm"
    assert not backend.seen, "nothing was generated"


CITING = "The keeper lit it [1], see also [2,3] and [9]."


async def test_inline_citations_become_links_and_references():
    config = {"inline_citations": True}
    question = [{"role": "user", "content": "lighthouse bees ferry"}]
    response = await post_chat(
        RecordingBackend(CITING, n_ctx=2048, n_seq_max=2),
        chat_body(messages=question, tools=[graph(query_config=config)]),
    )
    message = message_of(response)
    content, references = message["content"], message["graph_data"]["references"]["files"]
    assert "[coast.txt](cite-1)" in content and "[coast.txt](cite-2)[coast.txt](cite-3)" in content
    assert "[9]" in content  # names no source: left as written
    assert [r["cite"] for r in references] == ["cite-1", "cite-2", "cite-3"]
    assert {r["fileId"] for r in references} == {"f1"}
    assert sorted(r["text"] for r in references) == sorted(CHUNKS)
    assert all(0 <= r["score"] <= 1 for r in references)


async def test_a_stream_with_citations_gives_the_same_text_and_references_once():
    config = {"inline_citations": True}
    question = [{"role": "user", "content": "lighthouse bees"}]
    whole = await post_chat(
        RecordingBackend(CITING, n_ctx=2048, n_seq_max=2),
        chat_body(messages=question, tools=[graph(query_config=config)]),
    )
    streamed = await post_chat(
        RecordingBackend(CITING, n_ctx=2048, n_seq_max=2),
        chat_body(messages=question, tools=[graph(query_config=config)], stream=True),
    )
    chunks = [json.loads(e) for e in sse_events(streamed.text) if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == message_of(whole)["content"]
    carrying = [
        d["graph_data"]["references"] for d in deltas if "references" in d.get("graph_data", {})
    ]
    assert carrying == [message_of(whole)["graph_data"]["references"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_snippets_fit_the_room_the_context_leaves():
    spec = settings().models[0]  # 512 tokens of context, 256 of output
    served = SimpleNamespace(spec=spec)
    short = ChatRequest.model_validate(chat_body(max_tokens=20))
    long_answer = ChatRequest.model_validate(chat_body(max_tokens=256))
    long_talk = ChatRequest.model_validate(
        chat_body(messages=[{"role": "user", "content": "word " * 400}], max_tokens=20)
    )
    roomy = snippet_room_chars(served, short)
    assert roomy > snippet_room_chars(served, long_answer) > 0
    assert snippet_room_chars(served, long_talk) == 0
    snippets = [Snippet(i, "f1", text, None, 1.0) for i, text in enumerate(CHUNKS)]
    assert fit(snippets, roomy) == snippets
    assert fit(snippets, len(CHUNKS[0]) + 5) == snippets[:1]
    assert fit(snippets, 0) == []


@pytest.mark.parametrize("value", [0, 11, 2.5])
async def test_max_subquestions_out_of_range_is_a_400(value):
    response = await post_chat(
        RecordingBackend(SPLIT, n_ctx=2048, n_seq_max=2),
        chat_body(
            messages=QUESTION,
            tools=[graph(subqueries=True, query_config={"max_subquestions": value})],
        ),
    )
    assert response.status_code == 400
    assert "max_subquestions" in error_of(response)["description"]


async def test_a_question_with_citations_returns_its_references_whole_and_streamed():
    backend = RecordingBackend(CITING, n_ctx=2048, n_seq_max=2)
    app = build_app(backend, settings())
    ask = {
        "graph_ids": ["g1"],
        "question": "lighthouse bees",
        "query_config": {"inline_citations": True},
    }
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        whole = await client.post("/v1/graphs/question", json=ask)
        streamed = await client.post("/v1/graphs/question", json={**ask, "stream": True})
    answer = whole.json()
    assert "(cite-1)" in answer["answer"]
    assert answer["references"]["files"][0]["cite"] == "cite-1"
    events = [json.loads(e)["data"] for e in sse_events(streamed.text) if e != "[DONE]"]
    assert "".join(e["answer"] for e in events) == answer["answer"]
    assert [e["references"] for e in events if "references" in e] == [answer["references"]]

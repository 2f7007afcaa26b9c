"""Knowledge Graphs end to end with the official SDK: files of several formats uploaded,
ingested by the server's worker, grouped in a graph, and asked through the `graph` tool
(whole and streamed) and `/v1/graphs/question`; the snippet holding the answer is among the
sources. Structure and retrieval only, never the model's prose."""

from __future__ import annotations

import re
import time

import pytest
import writerai

from ..support import documents
from .support import MODEL

pytestmark = pytest.mark.e2e

FACTS = {
    "lighthouse.pdf": (
        documents.pdf(
            [
                "Harbour notes, page one: the tide tables.",
                "The Varnel lighthouse lamp is lit each evening at 19:40 by keeper Ansel Ruk.",
            ]
        ),  # fmt: skip
        "Varnel lighthouse",
    ),
    "bees.docx": (
        documents.docx(["Apiary", "The Orlen hives winter in the cellar below the mill."], [0]),
        "Orlen hives",
    ),
    "ferry.txt": (b"The Kessa ferry leaves the quay at seven every morning.\n", "Kessa ferry"),
}


def wait_for_ingestion(client: writerai.Writer, file_ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {f: client.files.retrieve(f).status for f in file_ids}
        if all(s != "in_progress" for s in statuses.values()):
            assert set(statuses.values()) == {"completed"}, statuses
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)


@pytest.fixture(scope="module")
def coast(client: writerai.Writer):
    graph = client.graphs.create(name="Coast", description="Harbour facts")
    ids = {}
    for name, (data, _) in FACTS.items():
        uploaded = client.files.upload(
            content=data,
            content_type="text/plain",
            content_disposition=f"attachment; filename={name}",
        )
        client.graphs.add_file_to_graph(graph.id, file_id=uploaded.id)
        ids[name] = uploaded.id
    wait_for_ingestion(client, list(ids.values()))
    yield graph, ids
    client.graphs.delete(graph.id)
    for file_id in ids.values():
        client.files.delete(file_id)


def graph_tool(graph_id: str, subqueries: bool = False, **config) -> dict:
    function = {"graph_ids": [graph_id], "subqueries": subqueries}
    if config:
        function["query_config"] = config
    return {"type": "graph", "function": function}


@pytest.mark.parametrize("name", list(FACTS))
def test_the_snippet_holding_the_answer_is_among_the_sources(client, coast, name):
    graph, ids = coast
    subject = FACTS[name][1]
    response = client.chat.chat(
        model=MODEL,
        messages=[{"role": "user", "content": f"Tell me about the {subject}."}],
        tools=[graph_tool(graph.id, max_snippets=5)],
        max_tokens=8,
        temperature=0,
    )
    data = response.choices[0].message.graph_data
    assert data.status == "finished"
    assert data.sources and data.sources[0].file_id == ids[name]
    assert subject in data.sources[0].snippet


def test_a_streamed_answer_carries_the_same_sources_once(client, coast):
    graph, ids = coast
    messages = [{"role": "user", "content": "When is the Varnel lighthouse lamp lit?"}]
    with client.chat.stream(
        model=MODEL, messages=messages, tools=[graph_tool(graph.id)], max_tokens=8, temperature=0
    ) as stream:
        for _ in stream:  # the SDK's accumulation must hold: sources sent once
            pass
        final = stream.current_completion_snapshot  # (max_tokens cuts it: no final parse)
    whole = client.chat.chat(
        model=MODEL, messages=messages, tools=[graph_tool(graph.id)], max_tokens=8, temperature=0
    )
    streamed_sources = final.choices[0].message.graph_data.sources
    assert [s.file_id for s in streamed_sources] == [
        s.file_id for s in whole.choices[0].message.graph_data.sources
    ]
    assert streamed_sources[0].file_id == ids["lighthouse.pdf"]


def test_subqueries_come_back_each_with_an_answer_and_sources(client, coast):
    graph, ids = coast
    question = "When is the Varnel lighthouse lamp lit, and where do the Orlen hives winter?"
    response = client.chat.chat(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        tools=[graph_tool(graph.id, subqueries=True, max_subquestions=2, max_snippets=5)],
        max_tokens=16,
        temperature=0,
    )
    data = response.choices[0].message.graph_data
    assert data.status == "finished"
    assert 1 <= len(data.subqueries) <= 2
    for part in data.subqueries:
        assert part.query.strip() and isinstance(part.answer, str)
        assert all(s.file_id in ids.values() for s in part.sources)
    alone = client.chat.chat(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        tools=[graph_tool(graph.id, max_snippets=5)],
        max_tokens=16,
        temperature=0,
    )
    assert response.usage.prompt_tokens > alone.usage.prompt_tokens  # the parts count


def test_inline_citations_link_only_to_listed_references(client, coast):
    graph, ids = coast
    messages = [{"role": "user", "content": "When is the Varnel lighthouse lamp lit?"}]
    tools = [graph_tool(graph.id, inline_citations=True, max_snippets=3)]
    response = client.chat.chat(
        model=MODEL, messages=messages, tools=tools, max_tokens=48, temperature=0
    )
    message = response.choices[0].message
    files = message.graph_data.references.files
    assert files and files[0].file_id == ids["lighthouse.pdf"]
    cites = {f.cite for f in files if f.cite}
    links = set(re.findall(r"\]\((cite-\d+)\)", message.content or ""))
    assert links == cites  # every link names a reference, every cited reference is linked
    with client.chat.stream(
        model=MODEL, messages=messages, tools=tools, max_tokens=48, temperature=0
    ) as stream:
        for _ in stream:
            pass
        streamed = stream.current_completion_snapshot.choices[0].message
    assert streamed.content == message.content  # greedy: the same text, rewritten alike
    assert streamed.graph_data.references.files == files


def test_a_question_to_the_graph(client, coast):
    graph, ids = coast
    answer = client.graphs.question(
        graph_ids=[graph.id], question="Where do the Orlen hives spend the winter?"
    )
    assert answer.sources[0].file_id == ids["bees.docx"]
    chunks = list(
        client.graphs.question(
            graph_ids=[graph.id], question="Where do the Orlen hives spend the winter?", stream=True
        )
    )
    assert chunks[0].data.sources[0].file_id == ids["bees.docx"]


def test_a_graph_that_does_not_exist_is_a_400_naming_it(client, coast):
    with pytest.raises(writerai.BadRequestError, match="no-such-graph"):
        client.chat.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            tools=[graph_tool("no-such-graph")],
            max_tokens=4,
        )


def test_an_unreadable_file_fails_with_a_reason(client):
    uploaded = client.files.upload(
        content=documents.image_only_pdf(),
        content_type="text/plain",
        content_disposition="attachment; filename=scan.pdf",
    )
    deadline = time.monotonic() + 60
    while (status := client.files.retrieve(uploaded.id).status) == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status == "failed"
    client.files.delete(uploaded.id)

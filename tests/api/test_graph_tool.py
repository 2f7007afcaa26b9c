"""The `graph` tool in /v1/chat, in process on the fake engine: the best snippets of the
asked graphs go ahead of the conversation and come back as `graph_data.sources` (once in a
stream); bad graph ids and `query_config` values get 400s naming them."""

import json

import pytest

from inkstand.backends.fake import FakeBackend

from .conftest import api_client, build_app, chat_body, settings
from .test_chat import sse_events
from .test_gateway import error_of

CHUNKS = [
    "The lighthouse keeper lit the lamp every evening at dusk.",
    "Honey bees keep their queen warm through the winter.",
    "The ferry to the island leaves at seven in the morning.",
]


class RecordingBackend(FakeBackend):
    """The fake, keeping every text it was asked to tokenize (the prompts)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []

    def tokenize(self, text: str, **options) -> list[int]:
        self.seen.append(text)
        return super().tokenize(text, **options)


@pytest.fixture
def backend():
    return RecordingBackend("The keeper lit it.", n_ctx=2048, n_seq_max=2)


async def with_graph(app) -> None:
    def fill(conn):
        conn.execute(
            "INSERT INTO graphs (id, name, created_at) "
            "VALUES ('g1', 'Coast', '2026-11-29T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) VALUES "
            "('f1', 'coast.txt', 'txt', 10, 'x', 'completed', '2026-11-29T00:00:00Z')"
        )
        conn.execute("INSERT INTO graph_files VALUES ('g1', 'f1', '2026-11-29T00:00:00Z')")
        for i, text in enumerate(CHUNKS):
            conn.execute(
                'INSERT INTO chunks (file_id, ord, text, start, "end") VALUES (?, ?, ?, 0, ?)',
                ("f1", i, text, len(text)),
            )

    await app.state.store.writer.run(fill)


def graph(**function) -> dict:
    return {"type": "graph", "function": {"graph_ids": ["g1"], "subqueries": False, **function}}


QUESTION = [{"role": "user", "content": "When does the lighthouse keeper light the lamp?"}]


async def test_the_answer_is_grounded_and_cites_its_sources(backend):
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        response = await client.post("/v1/chat", json=chat_body(messages=QUESTION, tools=[graph()]))
    assert response.status_code == 200, response.text
    data = response.json()["choices"][0]["message"]["graph_data"]
    assert data["status"] == "finished" and data["subqueries"] == []
    assert data["sources"][0] == {"file_id": "f1", "snippet": CHUNKS[0]}
    assert any(CHUNKS[0] in text for text in backend.seen)  # the model saw the snippet


async def test_a_stream_sends_graph_data_once_before_the_content(backend):
    app = build_app(backend, settings())
    body = chat_body(messages=QUESTION, tools=[graph()], stream=True)
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        response = await client.post("/v1/chat", json=body)
    chunks = [json.loads(e) for e in sse_events(response.text) if e != "[DONE]"]
    carrying = [
        c
        for c in chunks
        if (c["choices"][0].get("delta") or {}).get("graph_data", {}).get("sources")
    ]
    assert len(carrying) == 1 and carrying[0] is chunks[0]
    assert carrying[0]["choices"][0]["delta"]["graph_data"]["sources"][0]["file_id"] == "f1"


async def test_max_snippets_and_max_tokens_bound_the_sources(backend):
    app = build_app(backend, settings())
    question = [{"role": "user", "content": "lighthouse bees ferry island queen lamp"}]
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        capped = await client.post(
            "/v1/chat",
            json=chat_body(messages=question, tools=[graph(query_config={"max_snippets": 2})]),
        )
    assert len(capped.json()["choices"][0]["message"]["graph_data"]["sources"]) == 2


@pytest.mark.parametrize(
    ("function", "named"),
    [
        ({"graph_ids": ["nope"]}, "nope"),
        ({"query_config": {"max_snippets": 0}}, "max_snippets"),
        ({"query_config": {"keyword_threshold": 1.5}}, "keyword_threshold"),
        ({"query_config": {"max_tokens": "many"}}, "max_tokens"),
        ({"query_config": {"inline_citations": "yes"}}, "inline_citations"),
    ],
)
async def test_bad_graph_tools_are_400s_naming_what_is_wrong(backend, function, named):
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        response = await client.post(
            "/v1/chat", json=chat_body(messages=QUESTION, tools=[graph(**function)])
        )
    assert response.status_code == 400, response.text
    assert named in error_of(response)["description"]


async def test_two_built_in_tools_are_a_400(backend):
    llm = {"type": "llm", "function": {"description": "Ask", "model": "palmyra-x5"}}
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        response = await client.post("/v1/chat", json=chat_body(tools=[graph(), llm]))
    assert response.status_code == 400
    assert "at most one built-in tool" in error_of(response)["description"]


async def test_a_question_to_the_graphs_answers_with_its_sources(backend):
    app = build_app(backend, settings())
    ask = {"graph_ids": ["g1"], "question": "When does the lighthouse keeper light the lamp?"}
    async with api_client(app, lifespan=True) as client:
        await with_graph(app)
        whole = await client.post("/v1/graphs/question", json=ask)
        streamed = await client.post("/v1/graphs/question", json={**ask, "stream": True})
        unknown = await client.post("/v1/graphs/question", json={**ask, "graph_ids": ["nope"]})
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["question"] == ask["question"] and answer["answer"] == "The keeper lit it."
    assert answer["sources"][0] == {"file_id": "f1", "snippet": CHUNKS[0]}
    events = [json.loads(e)["data"] for e in sse_events(streamed.text) if e != "[DONE]"]
    assert events[0]["sources"] == answer["sources"] and events[0]["answer"] == ""
    assert all(e["sources"] == [] for e in events[1:])
    assert "".join(e["answer"] for e in events) == answer["answer"]
    assert unknown.status_code == 400
    assert error_of(unknown)["description"].startswith("`graph_ids` names graphs")
    assert "nope" in error_of(unknown)["description"]

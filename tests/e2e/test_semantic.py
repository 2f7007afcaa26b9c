"""Semantic search end to end: the real server with `--embedding-model embedded` embeds every
chunk of an uploaded file before the file is `completed`; a data dir whose files were
ingested by a server without an embedding model gets its vectors once one is configured
(backfill); the vectors it wrote serve `hybrid.retrieve`; the `graph` tool finds the right
source. Structure and retrieval only: nothing is held to a quality number."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import writerai

from inkstand.config import find_embedded_model
from inkstand.knowledge.embedding import LlamaEmbedder
from inkstand.knowledge.hybrid import retrieve
from inkstand.knowledge.semantic import SemanticSearch
from inkstand.store.db import DB_NAME

from .support import KEY, MODEL, Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

FLAGS = ("--ctx-size", "1024", "--threads", "1")
EMBEDDING = ("--embedding-model", "embedded")
FACTS = {
    "lighthouse.txt": "The Varnel lighthouse lamp is lit each evening by keeper Ansel Ruk.",
    "bees.txt": "The Orlen hives winter in the cellar below the old mill.",
    "ferry.txt": "The Kessa ferry leaves the quay at seven every morning.",
}
TIMEOUT = 120.0


def upload_all(server: Server) -> tuple[str, dict[str, str]]:
    with writerai.Writer(api_key=KEY, base_url=server.url, max_retries=0) as client:
        graph = client.graphs.create(name="Coast")
        ids = {}
        for name, text in FACTS.items():
            uploaded = client.files.upload(
                content=text.encode(),
                content_type="text/plain",
                content_disposition=f"attachment; filename={name}",
            )
            client.graphs.add_file_to_graph(graph.id, file_id=uploaded.id)
            ids[name] = uploaded.id
        return graph.id, ids


@contextmanager
def read_only(server: Server) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{server.data_dir / DB_NAME}?mode=ro", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def wait_for(server: Server, query: str, expected: object) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        with read_only(server) as conn:
            found = conn.execute(query).fetchall()
        if found == expected:
            return
        assert time.monotonic() < deadline, (found, server.dump())
        time.sleep(0.2)


STATUSES = "SELECT status, count(*) FROM files GROUP BY status"
VECTORS = (
    "SELECT count(*), count(DISTINCT v.model), min(length(v.vector)), max(length(v.vector)) "
    "FROM chunks AS c JOIN chunk_vectors AS v ON v.chunk_id = c.id"
)


def check_vectors(server: Server) -> str:
    """Every chunk has one 576-number vector of the embedded model; that model's name."""
    with read_only(server) as conn:
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        assert conn.execute(VECTORS).fetchone() == (chunks, 1, 576 * 4, 576 * 4)
        (model,) = conn.execute("SELECT DISTINCT model FROM chunk_vectors").fetchone()
    assert chunks == len(FACTS) and model.startswith("gguf:SmolLM2")
    return model


def test_chunks_get_vectors_and_the_graph_tool_finds_the_source(tmp_path: Path):
    with running_server(tmp_path, *FLAGS, *EMBEDDING, key=KEY) as server:
        graph_id, ids = upload_all(server)
        wait_for(server, STATUSES, [("completed", len(FACTS))])
        check_vectors(server)  # written before each file was marked completed
        with writerai.Writer(api_key=KEY, base_url=server.url, max_retries=0) as client:
            response = client.chat.chat(
                model=MODEL,
                messages=[{"role": "user", "content": "When is the Varnel lighthouse lamp lit?"}],
                tools=[
                    {
                        "type": "graph",
                        "function": {
                            "graph_ids": [graph_id],
                            "subqueries": False,
                            "query_config": {"search_weight": 50, "max_snippets": 3},
                        },
                    }
                ],
                max_tokens=8,
                temperature=0,
            )
        sources = response.choices[0].message.graph_data.sources
        assert sources[0].file_id == ids["lighthouse.txt"]
        assert "semantic search: embedding with gguf:SmolLM2" in server.log()
        assert "Traceback" not in server.log(), server.dump()


def test_turning_semantic_search_on_later_embeds_what_was_ingested(tmp_path: Path):
    data_dir = tmp_path / "data"
    with running_server(tmp_path / "before", *FLAGS, key=KEY, data_dir=data_dir) as server:
        graph_id, ids = upload_all(server)
        wait_for(server, STATUSES, [("completed", len(FACTS))])
        with read_only(server) as conn:
            assert conn.execute("SELECT count(*) FROM chunk_vectors").fetchone() == (0,)
    with running_server(
        tmp_path / "after", *FLAGS, *EMBEDDING, key=KEY, data_dir=data_dir
    ) as server:
        wait_for(server, "SELECT count(*) FROM chunk_vectors", [(len(FACTS),)])
        check_vectors(server)
        # The server's vectors answer a search made with the same model elsewhere.
        embedder = LlamaEmbedder(find_embedded_model())
        try:
            semantic = SemanticSearch(embedder)
            with read_only(server) as conn:
                for name, text in FACTS.items():
                    (best, *_) = retrieve(
                        conn, [graph_id], text, semantic=semantic, search_weight=0
                    )
                    assert (best.file_id, best.score) == (ids[name], 1.0)
        finally:
            embedder.close()
        assert "Traceback" not in server.log(), server.dump()

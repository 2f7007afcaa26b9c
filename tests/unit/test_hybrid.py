"""Hybrid retrieval: without an embedder (or at search_weight 100) exactly keyword search;
otherwise keyword and semantic scores merged by the weight, each threshold honoured by the
documented rule, only the asked graphs' completed files, and keyword results when the
question cannot be embedded. Vectors come from a scripted embedder (the seam), so every
score here is known; the real GGUF is exercised in test_embedding.py and test_semantic.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from inkstand.knowledge.embedding import EmbeddingError
from inkstand.knowledge.hybrid import retrieve
from inkstand.knowledge.search import search
from inkstand.knowledge.semantic import SemanticSearch, vector_blob
from inkstand.store import open_store

LAMP = "The lighthouse keeper lit the lamp at dusk."
SHIPS = "Ships passed the reef safely."
HONEY = "Bees make honey from the nectar of flowers."
HIVE = "The hive keeps its queen warm."
PAINT = "The lighthouse lamp was painted red."
OTHER = "Lighthouse lamps of another graph."

# file -> (status, graphs, chunks); each chunk's vector is in VECTORS.
FILES = {
    "f1": ("completed", ("g1",), [LAMP, SHIPS]),
    "f2": ("completed", ("g1",), [HONEY, HIVE]),
    "f3": ("failed", ("g1",), [PAINT]),
    "f4": ("completed", ("g2",), [OTHER]),
}
VECTORS = {
    LAMP: [1, 0, 0],
    SHIPS: [0.6, 0.8, 0],
    HONEY: [0, 1, 0],
    HIVE: [0, 0.6, 0.8],
    PAINT: [0, 1, 0],
    OTHER: [0, 1, 0],
}
QUESTION = "Who lit the lamp?"  # its words match LAMP only; its vector is HONEY's
QUESTIONS = {QUESTION: [0, 1, 0], "lighthouse reef bees hive queen": [0.6, 0.8, 0]}


class ScriptedEmbedder:
    """Known vectors for known texts; counts calls; `failure` makes every call fail."""

    name = "scripted"
    dimensions = 3

    def __init__(self) -> None:
        self.calls = 0
        self.failure: str | None = None

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.failure:
            raise EmbeddingError(self.failure)
        rows = np.array([(VECTORS | QUESTIONS)[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def close(self) -> None:
        pass


@pytest.fixture
def store():
    store = open_store(None)
    conn = store.conn
    conn.execute("BEGIN")
    for file_id, (status, graphs, texts) in FILES.items():
        conn.execute(
            "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
            "VALUES (?, ?, 'txt', 1, 'x', ?, '2026-11-29T00:00:00Z')",
            (file_id, f"{file_id}.txt", status),
        )
        for graph in graphs:
            conn.execute(
                "INSERT INTO graph_files VALUES (?, ?, '2026-11-29T00:00:00Z')", (graph, file_id)
            )
        for ord_, text in enumerate(texts):
            cursor = conn.execute(
                'INSERT INTO chunks (file_id, ord, text, page, start, "end") '
                "VALUES (?, ?, ?, NULL, 0, ?)",
                (file_id, ord_, text, len(text)),
            )
            vector = np.array(VECTORS[text], dtype=np.float32)
            conn.execute(
                "INSERT INTO chunk_vectors VALUES (?, 'scripted', ?)",
                (cursor.lastrowid, vector_blob(vector / np.linalg.norm(vector))),
            )
    conn.execute("COMMIT")
    yield store
    store.close()


@pytest.fixture
def semantic() -> SemanticSearch:
    return SemanticSearch(ScriptedEmbedder())


def ask(store, semantic, question=QUESTION, **options):
    found = retrieve(store.conn, ["g1"], question, semantic=semantic, **options)
    return [(s.text, round(s.score, 6)) for s in found]


@pytest.mark.parametrize("question", [QUESTION, "lighthouse reef bees hive queen", "nothing"])
@pytest.mark.parametrize("options", [{}, {"max_snippets": 2}, {"keyword_threshold": 0.5}])
def test_without_an_embedder_it_is_keyword_search(store, question, options):
    expected = search(store.conn, ["g1"], question, **options)
    assert expected or question == "nothing"
    found = retrieve(store.conn, ["g1"], question, semantic=None, semantic_threshold=0.9, **options)
    assert found == expected


@pytest.mark.parametrize("options", [{}, {"max_snippets": 1}, {"keyword_threshold": 0.9}])
def test_weight_100_is_keyword_search_and_embeds_nothing(store, semantic, options):
    question = "lighthouse reef bees hive queen"
    found = retrieve(store.conn, ["g1"], question, semantic=semantic, search_weight=100, **options)
    assert found == search(store.conn, ["g1"], question, **options)
    assert semantic.embedder.calls == 0


def test_weight_0_ranks_by_meaning_alone(store, semantic):
    # Cosines with the question: honey 1, ships .8, hive .6, lamp 0 -> spread 0..1 as they are.
    assert ask(store, semantic, search_weight=0) == [
        (HONEY, 1.0),
        (SHIPS, 0.8),
        (HIVE, 0.6),
        (LAMP, 0.0),
    ]


def test_weight_50_averages_the_two_scores(store, semantic):
    # lamp: keyword 1, semantic 0; the others match no word of the question (keyword 0).
    assert ask(store, semantic, search_weight=50) == [
        (LAMP, 0.5),  # ties keep the keyword order
        (HONEY, 0.5),
        (SHIPS, 0.4),
        (HIVE, 0.3),
    ]
    assert ask(store, semantic, search_weight=80)[:2] == [(LAMP, 0.8), (HONEY, 0.2)]


def test_a_chunk_passes_on_the_threshold_of_either_weighted_side(store, semantic):
    strict = {"keyword_threshold": 1.0, "semantic_threshold": 0.7}
    assert ask(store, semantic, search_weight=50, **strict) == [
        (LAMP, 0.5),  # keyword 1 >= 1.0
        (HONEY, 0.5),  # semantic 1 >= 0.7
        (SHIPS, 0.4),  # semantic 0.8 >= 0.7; hive (0.6, no word) is out
    ]
    # At 0 the keyword side has no weight, so its threshold lets nothing in.
    assert ask(store, semantic, search_weight=0, **strict) == [(HONEY, 1.0), (SHIPS, 0.8)]
    assert ask(store, semantic, search_weight=50, max_snippets=2, **strict) == [
        (LAMP, 0.5),
        (HONEY, 0.5),
    ]


def test_only_the_asked_graphs_completed_files_are_found(store, semantic):
    # PAINT (a failed file) and OTHER (graph g2) have the question's vector and words.
    texts = {text for text, _ in ask(store, semantic, search_weight=0)}
    texts |= {text for text, _ in ask(store, semantic, search_weight=50)}
    assert texts == {LAMP, SHIPS, HONEY, HIVE}
    assert retrieve(store.conn, ["g2"], QUESTION, semantic=semantic, search_weight=0)[0].text == (
        OTHER
    )
    assert retrieve(store.conn, ["nope"], QUESTION, semantic=semantic) == []
    assert retrieve(store.conn, ["g1"], "  ", semantic=semantic) == []


def test_a_chunk_with_no_vector_yet_is_found_by_its_words(store, semantic):
    store.conn.execute(
        "DELETE FROM chunk_vectors WHERE chunk_id = (SELECT id FROM chunks WHERE text = ?)",
        (LAMP,),
    )
    # Spread over ships .8, honey 1, hive .6: 0.5, 1, 0; lamp has keyword 1 and no vector.
    assert ask(store, semantic, search_weight=50) == [
        (LAMP, 0.5),
        (HONEY, 0.5),
        (SHIPS, 0.25),
        (HIVE, 0.0),
    ]
    assert LAMP not in {text for text, _ in ask(store, semantic, search_weight=0)}


def test_vectors_of_another_model_are_not_compared(store, semantic):
    store.conn.execute("UPDATE chunk_vectors SET model = 'other' WHERE chunk_id % 2 = 0")
    found = ask(store, semantic, search_weight=0)
    rows = store.conn.execute(
        "SELECT c.text FROM chunks AS c JOIN chunk_vectors AS v ON v.chunk_id = c.id "
        "WHERE v.model = 'scripted' AND c.file_id IN ('f1', 'f2')"
    ).fetchall()
    assert {text for text, _ in found} == {row[0] for row in rows}


def test_deleted_chunks_take_their_vectors_and_leave_the_cache(store, semantic):
    assert ask(store, semantic, search_weight=0)[0] == (HONEY, 1.0)
    loaded = semantic._vectors
    assert ask(store, semantic, search_weight=0)[0] == (HONEY, 1.0)
    assert semantic._vectors is loaded  # nothing changed: not read again
    store.conn.execute("DELETE FROM chunks WHERE file_id = 'f2'")  # as a file delete does
    assert store.conn.execute(
        "SELECT count(*) FROM chunk_vectors AS v LEFT JOIN chunks AS c ON c.id = v.chunk_id "
        "WHERE c.id IS NULL"
    ).fetchone() == (0,)
    assert ask(store, semantic, search_weight=0) == [(SHIPS, 1.0), (LAMP, 0.0)]


def test_when_the_question_cannot_be_embedded_keyword_results_answer(store, semantic, caplog):
    semantic.embedder.failure = "the embedding engine is down"
    question = "lighthouse reef bees hive queen"
    with caplog.at_level(logging.WARNING, logger="inkstand.retrieval"):
        found = retrieve(
            store.conn, ["g1"], question, semantic=semantic, keyword_threshold=0.5, max_snippets=2
        )
    assert found == search(store.conn, ["g1"], question, keyword_threshold=0.5, max_snippets=2)
    assert "the embedding engine is down" in caplog.text

"""Keyword retrieval over the store's chunks: only the asked graphs' completed files, best
first, scores normalised to the best, the threshold and the cap honoured, and nothing in a
question read as FTS syntax."""

import pytest

from inkstand.knowledge.search import match_expression, search
from inkstand.store import open_store

CHUNKS = {
    "f1": ["The lighthouse keeper lit the lamp at dusk.", "Ships passed the reef safely."],
    "f2": ["Bees make honey from the nectar of flowers.", "The hive keeps its queen warm."],
    "f3": ["The lighthouse was painted red and white in 1902."],
}


@pytest.fixture
def store():
    store = open_store(None)
    conn = store.conn
    conn.execute("BEGIN")
    for file_id, texts in CHUNKS.items():
        status = "failed" if file_id == "f3" else "completed"
        conn.execute(
            "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
            "VALUES (?, ?, 'txt', 1, 'x', ?, '2026-11-29T00:00:00Z')",
            (file_id, f"{file_id}.txt", status),
        )
        for graph in ("g1", "g2") if file_id == "f1" else ("g2",):
            conn.execute(
                "INSERT INTO graph_files VALUES (?, ?, '2026-11-29T00:00:00Z')", (graph, file_id)
            )
        for ord_, text in enumerate(texts):
            conn.execute(
                'INSERT INTO chunks (file_id, ord, text, page, start, "end") '
                "VALUES (?, ?, ?, NULL, 0, ?)",
                (file_id, ord_, text, len(text)),
            )
    conn.execute("COMMIT")
    yield store
    store.close()


def test_the_best_chunk_comes_first_with_score_one(store):
    (best, *rest) = search(store.conn, ["g2"], "Who lit the lamp of the lighthouse?")
    assert best.file_id == "f1" and "lamp" in best.text and best.score == 1.0
    assert all(0 <= s.score <= 1 for s in rest)


def test_only_the_asked_graphs_and_completed_files_are_searched(store):
    found = search(store.conn, ["g1"], "bees honey lighthouse painted")
    assert {s.file_id for s in found} == {"f1"}  # f2 is in g2 only; f3 failed
    assert search(store.conn, ["nope"], "lighthouse") == []


def test_threshold_and_cap(store):
    everything = search(store.conn, ["g2"], "the lighthouse keeper and the bees hive")
    assert len(everything) >= 3
    assert (
        len(search(store.conn, ["g2"], "the lighthouse keeper and the bees hive", max_snippets=2))
        == 2
    )
    strict = search(
        store.conn, ["g2"], "the lighthouse keeper and the bees hive", keyword_threshold=1.0
    )
    assert [s.score for s in strict] == [1.0]


@pytest.mark.parametrize("question", ['"unbalanced', "NEAR(a b)", "a* OR -b", "col:value", "^x"])
def test_fts_syntax_in_a_question_is_just_words(store, question):
    search(store.conn, ["g2"], question)  # no sqlite3.OperationalError


def test_a_question_of_only_stop_words_still_searches_them():
    assert match_expression("the") == '"the"'
    assert match_expression("...") is None


def test_a_graph_whose_chunks_rank_below_other_graphs_still_gets_them(store, monkeypatch):
    from inkstand.knowledge import search as module

    monkeypatch.setattr(module, "CANDIDATES", 1)  # the index's best match is g2's bees
    found = search(store.conn, ["g1"], "bees honey hive queen lighthouse")
    assert [s.file_id for s in found] == ["f1"]

"""Keyword retrieval over the store's chunks: only the asked graphs' completed files, best
first, scores normalised to the best, the threshold and the cap honoured, nothing in a
question read as FTS syntax; a rare word required when the question has one, common words
and adjacent pairs adding score, and the OR of the words when no chunk holds a rare word."""

import pytest

from inkstand.knowledge.search import (
    MAX_QUESTION_WORDS,
    match_expression,
    plan_query,
    question_words,
    search,
)
from inkstand.store import open_store

CHUNKS = {
    "f1": ["The lighthouse keeper lit the lamp at dusk.", "Ships passed the reef safely."],
    "f2": ["Bees make honey from the nectar of flowers.", "The hive keeps its queen warm."],
    "f3": ["The lighthouse was painted red and white in 1902."],
}
MARKET = "The market opened at dawn and was busy."
BRIDGE = "The old bridge over the river was busy."
TOWN = {  # 40 chunks: the rare cut is 2 (5 %), so "bridge" and "market" are common
    "town": ["Varnel is by the coast.", "The Varnel Bridge was built in 1902."],
    "filler": [MARKET] * 27 + [BRIDGE] * 10,
    "elsewhere": ["Ostra lies far away, beyond the hills."],
}
GRAPHS = {"f1": ("g1", "g2"), "town": ("g1",), "filler": ("g1",), "elsewhere": ("g2",)}


def fill(store, chunks):
    conn = store.conn
    conn.execute("BEGIN")
    for file_id, texts in chunks.items():
        status = "failed" if file_id == "f3" else "completed"
        conn.execute(
            "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
            "VALUES (?, ?, 'txt', 1, 'x', ?, '2026-11-29T00:00:00Z')",
            (file_id, f"{file_id}.txt", status),
        )
        for graph in GRAPHS.get(file_id, ("g2",)):
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
    return store


@pytest.fixture
def store():
    store = fill(open_store(None), CHUNKS)
    yield store
    store.close()


@pytest.fixture
def town():
    store = fill(open_store(None), TOWN)
    yield store
    store.close()


def assert_scored(found):
    assert found and found[0].score == 1.0
    assert all(0 <= s.score <= 1 for s in found)
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)


def test_the_best_chunk_comes_first_with_score_one(store):
    found = search(store.conn, ["g2"], "Who lit the lamp of the lighthouse?")
    assert found[0].file_id == "f1" and "lamp" in found[0].text
    assert_scored(found)


def test_only_the_asked_graphs_and_completed_files_are_searched(store):
    found = search(store.conn, ["g1"], "bees honey lighthouse painted")
    assert {s.file_id for s in found} == {"f1"}  # f2 is in g2 only; f3 failed
    assert search(store.conn, ["nope"], "lighthouse") == []
    assert search(store.conn, [], "lighthouse") == []


def test_threshold_and_cap(store):
    question = "the lighthouse keeper and the bees hive"
    everything = search(store.conn, ["g2"], question)
    assert len(everything) >= 3
    assert len(search(store.conn, ["g2"], question, max_snippets=2)) == 2
    strict = search(store.conn, ["g2"], question, keyword_threshold=1.0)
    assert [s.score for s in strict] == [1.0]


@pytest.mark.parametrize("question", ['"unbalanced', "NEAR(a b)", "a* OR -b", "col:value", "^x"])
def test_fts_syntax_in_a_question_is_just_words(store, question):
    search(store.conn, ["g2"], question)  # no sqlite3.OperationalError


def test_a_question_of_only_stop_words_still_searches_them(store):
    assert match_expression("the") == '"the"'
    assert match_expression("...") is None
    assert search(store.conn, ["g2"], "...") == []
    assert_scored(search(store.conn, ["g2"], "the"))


def test_a_graph_whose_chunks_rank_below_other_graphs_still_gets_them(store, monkeypatch):
    from inkstand.knowledge import search as module

    monkeypatch.setattr(module, "CANDIDATES", 1)  # the index's best match is g2's bees
    found = search(store.conn, ["g1"], "bees honey hive queen lighthouse")
    assert [s.file_id for s in found] == ["f1"]


def test_the_query_requires_a_rare_word_and_scores_the_rest(town):
    query = plan_query(town.conn, "Who built the Varnel Bridge?")
    assert query is not None
    assert query.strict == (
        '("built" OR "varnel") AND ("built" OR "varnel" OR "bridge" OR "varnel bridge")'
    )
    assert query.wide == '"built" OR "varnel" OR "bridge"'


def test_chunks_without_a_rare_word_are_left_out(town):
    found = search(town.conn, ["g1"], "Who built the Varnel Bridge?")
    assert [s.text for s in found] == TOWN["town"][::-1]  # not the 10 others with "bridge"
    assert_scored(found)


def test_common_words_add_score_among_the_chunks_with_a_rare_word(town):
    found = search(town.conn, ["g1"], "Is Varnel by the coast or by the bridge?")
    assert [s.text for s in found] == TOWN["town"]  # Varnel and coast, then Varnel and bridge
    found = search(town.conn, ["g1"], "the bridge of Varnel")  # no pair: "of" between
    assert [s.text for s in found] == TOWN["town"][::-1]  # the longer, first by "bridge"


def test_adjacent_words_in_order_score_as_a_phrase():
    store = fill(
        open_store(None),
        {
            "a": ["The bridge near Varnel.", "The Varnel Bridge is old and long."],
            "b": [MARKET] * 38,
        },
    )
    try:
        found = search(store.conn, ["g2"], "Varnel Bridge")
        assert found[0].text == "The Varnel Bridge is old and long."  # longer, yet first
        assert_scored(found)
    finally:
        store.close()


def test_a_question_of_only_common_words_matches_them_all(town):
    assert plan_query(town.conn, "market bridge").strict is None
    found = search(town.conn, ["g1"], "When did the market by the bridge open?")
    assert len(found) == 30  # of the 38 chunks holding one of the words
    assert_scored(found)


def test_words_no_chunk_holds_are_dropped(town):
    query = plan_query(town.conn, "Who built the Zzyzx bridge?")
    assert query is not None and "zzyzx" not in query.strict + query.wide
    assert search(town.conn, ["g1"], "Who built the Zzyzx bridge?")[0].text == TOWN["town"][1]


def test_no_chunk_of_the_graphs_with_a_rare_word_widens_to_every_word(town):
    assert plan_query(town.conn, "Ostra market").strict is not None  # "ostra" is rare
    found = search(town.conn, ["g1"], "Ostra market")  # Ostra is only in g2
    assert found and {s.file_id for s in found} == {"filler"}
    assert [s.file_id for s in search(town.conn, ["g2"], "Ostra market")] == ["elsewhere"]


def test_the_cap_does_not_change_the_ranking(town):
    question = "Who built the Varnel Bridge?"
    assert (
        search(town.conn, ["g1"], question, max_snippets=1)
        == search(town.conn, ["g1"], question)[:1]
    )


def test_a_long_question_is_searched_by_its_first_words_only():
    words = [f"word{i}" for i in range(500)]
    assert question_words(" ".join(words)) == words[:MAX_QUESTION_WORDS]

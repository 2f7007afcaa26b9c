"""Retrieval: the chunks of some graphs' completed files that best match a question.

The keyword index is SQLite FTS5 over `chunks` (porter stemming, diacritics folded), ranked
by BM25. The question's words are quoted (nothing in it is FTS syntax); stop words are
dropped unless nothing else is left, and so are words no chunk holds.

A word is *rare* if at most `RARE_SHARE` (5 %) of all chunks hold it, *common* otherwise
(its document frequency is counted over the whole index, every graph's, up to that cut;
the chunk count is taken as the largest chunk id, an upper bound). With a rare word the
query is strict: a chunk must hold one, and then every question word it holds adds to its
score, common ones included, as does every pair of adjacent question words with a rare
one, searched as a phrase ("Varnel Bridge" in that order scores above "Varnel" elsewhere
beside "bridge"). "Who built the Varnel Bridge?", where only "varnel" is rare:

    ("varnel") AND ("built" OR "varnel" OR "bridge" OR "varnel bridge")

Rare words are in both halves, so they count twice. FTS5 scores only the chunks holding a
rare word, where the OR of all words made it score every chunk holding any (ten times
slower at 100,000 chunks in bench/kg.py: docs/benchmarks.md). When the question has no
rare word, or no chunk of the asked graphs holds one, the query is the OR of its words: a
chunk without a rare word is returned only when no chunk of the graphs has one.

Scores are normalised per query to 0..1: a chunk's BM25 divided by the best chunk's (the
best scores 1; BM25 is additive over the matched words and phrases, so 0.5 means half the
best's evidence). `keyword_threshold` keeps the chunks at or above it; `max_snippets` caps
how many, and never changes which query runs.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

WORD = re.compile(r"\w+", re.UNICODE)
CANDIDATES = 200  # chunks ranked by the index before the threshold and the cap
FEW = 60  # fewer of the top candidates in the asked graphs: rank those graphs' alone
RARE_SHARE = 0.05  # a word in at most this share of the chunks is rare: a chunk must hold one
_STOP_TEXT = """a about above after again all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into
is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
yours yourself yourselves"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

Row = tuple[int, str, str, int | None, float]  # chunk id, file id, text, page, BM25 rank


@dataclass(frozen=True)
class Snippet:
    chunk_id: int
    file_id: str
    text: str
    page: int | None
    score: float  # 0..1, relative to the best match of this query


MAX_QUESTION_WORDS = 64


@dataclass(frozen=True)
class Query:
    """A question's FTS5 expressions: `strict` needs a rare word (None: it has none)."""

    strict: str | None
    wide: str  # the OR of its words


def question_words(question: str) -> list[str]:
    """The question's words, lower-cased and unique, stop words out unless nothing is left;
    the first `MAX_QUESTION_WORDS` of them (each costs a count query: a long message must
    not cost thousands)."""
    words = [w.lower() for w in WORD.findall(question)]
    kept = [w for w in words if w not in STOP_WORDS] or words
    return list(dict.fromkeys(kept))[:MAX_QUESTION_WORDS]


def match_expression(question: str) -> str | None:
    """The FTS5 query for `question`: its words, quoted, joined by OR; None if it has none."""
    return _any_of(question_words(question)) or None


def plan_query(conn: sqlite3.Connection, question: str) -> Query | None:
    """The strict and the wide query for `question` over this index; None if it has no word."""
    words = question_words(question)
    if not words:
        return None
    cut = _rare_cut(conn)
    counts = document_counts(conn, words, cut)
    known = [w for w in words if counts[w]]
    rare = [w for w in known if counts[w] <= cut]
    if not rare:
        return Query(None, _any_of(known or words))
    pairs = [
        f"{a} {b}"
        for a, b in adjacent_pairs(question)
        if (a in rare or b in rare) and counts.get(a) and counts.get(b)
    ]
    strict = f"({_any_of(rare)}) AND ({_any_of(known + pairs)})"
    return Query(strict, _any_of(known))


def document_counts(conn: sqlite3.Connection, words: list[str], cut: int) -> dict[str, int]:
    """How many chunks hold each word, counted up to `cut` + 1 (enough to tell rare words)."""
    sql = "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)"
    return {w: conn.execute(sql, (f'"{w}"', cut + 1)).fetchone()[0] for w in words}


def adjacent_pairs(question: str) -> list[tuple[str, str]]:
    """Words next to each other in the question, neither a stop word, in order, unique."""
    words = [w.lower() for w in WORD.findall(question)]
    pairs = zip(words, words[1:], strict=False)
    return list(dict.fromkeys((a, b) for a, b in pairs if not {a, b} & STOP_WORDS))


def _rare_cut(conn: sqlite3.Connection) -> int:
    # max(id) is read in O(log n) where count(*) walks the table (1-2 ms at 100,000 chunks);
    # deleted chunks leave gaps, which only make the cut more lenient.
    largest = conn.execute("SELECT max(id) FROM chunks").fetchone()[0] or 0
    return max(1, int(largest * RARE_SHARE))


def _any_of(terms: list[str]) -> str:
    return " OR ".join(f'"{t}"' for t in terms)


def search(
    conn: sqlite3.Connection,
    graph_ids: list[str],
    question: str,
    *,
    max_snippets: int = 30,
    keyword_threshold: float = 0.0,
) -> list[Snippet]:
    """The best chunks of the graphs' completed files for `question`, best first."""
    query = plan_query(conn, question) if graph_ids else None
    if query is None:
        return []
    rows = _ranked_in_graphs(conn, query.strict, graph_ids) if query.strict else []
    if not rows:
        rows = _ranked_in_graphs(conn, query.wide, graph_ids)
    if not rows:
        return []
    best = rows[0][4]  # BM25 in FTS5 is negative: lower is better
    snippets = [
        Snippet(chunk_id, file_id, text, page, _normalised(rank, best))
        for chunk_id, file_id, text, page, rank in rows
    ]
    kept = [s for s in snippets if s.score >= keyword_threshold]
    return kept[:max_snippets]


def _ranked_in_graphs(conn: sqlite3.Connection, expression: str, graph_ids: list[str]) -> list[Row]:
    """The best `CANDIDATES` matches in the graphs' completed files, best first.

    FTS5 ranks the whole index first (cheap: it reads no chunk rows), and only the top
    candidates are joined and filtered by graph; when the graphs hold few of them (the top
    were mostly other graphs' chunks), the filter runs over every match instead.
    """
    top = conn.execute(
        "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
        (expression, CANDIDATES),
    ).fetchall()
    if not top:
        return []
    ranks = dict(top)
    marks = ",".join("?" * len(graph_ids))
    ids = ",".join("?" * len(top))
    kept = conn.execute(
        f"""
        SELECT c.id, c.file_id, c.text, c.page FROM chunks AS c
        WHERE c.id IN ({ids}) AND EXISTS (
            SELECT 1 FROM graph_files AS gf JOIN files AS f ON f.id = gf.file_id
            WHERE gf.file_id = c.file_id AND gf.graph_id IN ({marks})
              AND f.status = 'completed')
        """,
        (*ranks, *graph_ids),
    ).fetchall()
    if len(top) == CANDIDATES and len(kept) < FEW:
        return _ranked_filtered_first(conn, expression, graph_ids)
    rows = [(i, f, t, p, ranks[i]) for i, f, t, p in kept]
    return sorted(rows, key=lambda row: row[4])


def _ranked_filtered_first(
    conn: sqlite3.Connection, expression: str, graph_ids: list[str]
) -> list[Row]:
    """The best `CANDIDATES` matches among the graphs' completed files' chunks only."""
    marks = ",".join("?" * len(graph_ids))
    return conn.execute(
        f"""
        SELECT c.id, c.file_id, c.text, c.page, bm25(chunks_fts) AS rank
        FROM chunks_fts JOIN chunks AS c ON c.id = chunks_fts.rowid
        WHERE chunks_fts MATCH ?
          AND c.file_id IN (
              SELECT gf.file_id FROM graph_files AS gf JOIN files AS f ON f.id = gf.file_id
              WHERE gf.graph_id IN ({marks}) AND f.status = 'completed')
        ORDER BY rank LIMIT ?
        """,
        (expression, *graph_ids, CANDIDATES),
    ).fetchall()


def _normalised(rank: float, best: float) -> float:
    if best >= 0:  # every match scored 0 (tiny corpora): all equally good
        return 1.0
    return max(0.0, min(1.0, rank / best))

"""Retrieval: the chunks of some graphs' completed files that best match a question.

The keyword index is SQLite FTS5 over `chunks` (porter stemming, diacritics folded), ranked
by BM25. The question becomes an OR of its words (each quoted, so nothing in it is FTS
syntax; stop words dropped unless nothing else is left), so a chunk need not hold every word.

Scores are normalised per query to 0..1: a chunk's BM25 divided by the best chunk's (the
best scores 1; BM25 is additive over the matched words, so 0.5 means half the best's
evidence). `keyword_threshold` keeps the chunks at or above it; `max_snippets` caps how many.
Semantic search (embeddings) is not built yet: `search_weight` and `semantic_threshold` are
accepted and have no effect on keyword-only retrieval.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

WORD = re.compile(r"\w+", re.UNICODE)
CANDIDATES = 200  # chunks ranked by the index before the threshold and the cap
FEW = 60  # fewer of the top candidates in the asked graphs: rank those graphs' alone
_STOP_TEXT = """a about above after again all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into
is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
yours yourself yourselves"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True)
class Snippet:
    chunk_id: int
    file_id: str
    text: str
    page: int | None
    score: float  # 0..1, relative to the best match of this query


def match_expression(question: str) -> str | None:
    """The FTS5 query for `question`: its words, quoted, joined by OR; None if it has none."""
    words = [w.lower() for w in WORD.findall(question)]
    kept = [w for w in words if w not in STOP_WORDS] or words
    unique = list(dict.fromkeys(kept))
    if not unique:
        return None
    return " OR ".join(f'"{w}"' for w in unique)


def search(
    conn: sqlite3.Connection,
    graph_ids: list[str],
    question: str,
    *,
    max_snippets: int = 30,
    keyword_threshold: float = 0.0,
) -> list[Snippet]:
    """The best chunks of the graphs' completed files for `question`, best first."""
    expression = match_expression(question)
    if expression is None or not graph_ids:
        return []
    rows = _ranked_in_graphs(conn, expression, graph_ids)
    if not rows:
        return []
    best = rows[0][4]  # BM25 in FTS5 is negative: lower is better
    snippets = [
        Snippet(chunk_id, file_id, text, page, _normalised(rank, best))
        for chunk_id, file_id, text, page, rank in rows
    ]
    kept = [s for s in snippets if s.score >= keyword_threshold]
    return kept[:max_snippets]


def _ranked_in_graphs(
    conn: sqlite3.Connection, expression: str, graph_ids: list[str]
) -> list[tuple[int, str, str, int | None, float]]:
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
) -> list[tuple[int, str, str, int | None, float]]:
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

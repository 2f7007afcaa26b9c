"""Hybrid retrieval: the keyword index and, when an embedding model is configured, the
vectors, merged by `query_config.search_weight`. The one call the `graph` tool makes.

    snippets = retrieve(conn, graph_ids, question, semantic=runtime.semantic,
                        max_snippets=30, keyword_threshold=0.0, semantic_threshold=0.0,
                        search_weight=50)

Without an embedding model (`semantic=None`, the default server) this is exactly the keyword
`search()` (knowledge/search.py), and so it is at `search_weight` 100. Otherwise, with
w = search_weight / 100:

- keyword score k: BM25 over the best match's (0..1; `search()`'s score); semantic score s:
  the cosine spread over the asked graphs' chunks, nearest 1, farthest 0
  (knowledge/semantic.py). Both are per query. The candidates are the best
  `CANDIDATES` of each; a chunk missing from one side scores 0 there (no word of the
  question, or no vector yet).
- a chunk passes if it meets the threshold of a side that has weight: (w > 0, it matched
  a word and k >= keyword_threshold) or (w < 1, it has a vector and s >= semantic_threshold).
  So at 0 only the vectors decide, and a chunk needs no word of the question.
- its score is w * k + (1 - w) * s (`Snippet.score`), best first (ties keep the keyword
  order), at most `max_snippets`.

If the question cannot be embedded (the embedding engine is down), the keyword result is
returned and a warning logged: retrieval degrades, the request does not fail. Blocks (the
question is embedded here): call it off the event loop, as the `graph` tool does.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

from inkstand.knowledge.embedding import EmbeddingError
from inkstand.knowledge.search import Snippet, search
from inkstand.knowledge.semantic import SemanticSearch

CANDIDATES = 200  # from each side, before the thresholds and the cap

log = logging.getLogger("inkstand.retrieval")


def retrieve(
    conn: sqlite3.Connection,
    graph_ids: list[str],
    question: str,
    *,
    semantic: SemanticSearch | None,
    max_snippets: int = 30,
    keyword_threshold: float = 0.0,
    semantic_threshold: float = 0.0,
    search_weight: int = 50,
) -> list[Snippet]:
    """The graphs' best chunks for `question`, best first, scored 0..1 (see the module)."""
    if semantic is None or search_weight >= 100:
        return search(
            conn,
            graph_ids,
            question,
            max_snippets=max_snippets,
            keyword_threshold=keyword_threshold,
        )
    if not graph_ids or not question.strip():
        return []
    keyword = search(conn, graph_ids, question, max_snippets=CANDIDATES)
    try:
        near = semantic.similarities(conn, graph_ids, question)
    except EmbeddingError as exc:
        log.warning("semantic search is unavailable, keyword results only: %s", exc)
        return [s for s in keyword if s.score >= keyword_threshold][:max_snippets]
    weight = max(0, search_weight) / 100
    scored: dict[int, tuple[float | None, float | None]] = {
        s.chunk_id: (s.score, near.score(s.chunk_id)) for s in keyword
    }
    for chunk_id, score in near.top(CANDIDATES):
        scored.setdefault(chunk_id, (None, score))
    kept = [
        (chunk_id, weight * (k or 0.0) + (1 - weight) * (s or 0.0))
        for chunk_id, (k, s) in scored.items()
        if _passes(k, s, weight, keyword_threshold, semantic_threshold)
    ]
    kept.sort(key=lambda item: -item[1])  # stable: ties keep the keyword order
    return _snippets(conn, kept[:max_snippets], {s.chunk_id: s for s in keyword})


def _passes(
    keyword: float | None,
    semantic: float | None,
    weight: float,
    keyword_threshold: float,
    semantic_threshold: float,
) -> bool:
    by_keyword = weight > 0 and keyword is not None and keyword >= keyword_threshold
    by_meaning = weight < 1 and semantic is not None and semantic >= semantic_threshold
    return by_keyword or by_meaning


def _snippets(
    conn: sqlite3.Connection, ranked: list[tuple[int, float]], known: dict[int, Snippet]
) -> list[Snippet]:
    """`ranked` (chunk id, score) as snippets; the rows keyword search did not return are read."""
    missing = [chunk_id for chunk_id, _ in ranked if chunk_id not in known]
    rows: dict[int, tuple[str, str, int | None]] = {}
    if missing:
        marks = ",".join("?" * len(missing))
        for chunk_id, file_id, text, page in conn.execute(
            f"SELECT id, file_id, text, page FROM chunks WHERE id IN ({marks})", missing
        ):
            rows[chunk_id] = (file_id, text, page)
    snippets = []
    for chunk_id, score in ranked:
        if chunk_id in known:
            snippets.append(replace(known[chunk_id], score=score))
        elif chunk_id in rows:  # else deleted since it was scored
            file_id, text, page = rows[chunk_id]
            snippets.append(
                Snippet(chunk_id=chunk_id, file_id=file_id, text=text, page=page, score=score)
            )
    return snippets

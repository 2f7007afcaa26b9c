"""The `graph` tool: answer grounded in a request's Knowledge Graphs, with the sources cited.

Before generation: the graph ids are checked (400 naming unknown ones), `query_config` is
read (400 naming a field out of its range), and the chunks that best match the latest user
message are retrieved (`knowledge/search.py`, off the event loop). They become a system
message ahead of the conversation, numbered, within `query_config.max_tokens` (counted at
four characters a token; the prompt size check and the context limit still apply after).
Generation is then the model's normal one; the answer's `graph_data` carries the snippets
used as `sources` and `status: "finished"`. Retrieval does not count in `usage` beyond the
prompt tokens the snippets add (what the model processed).

Not built yet: `subqueries` (answered as false), inline citations and `references`, and
semantic search (`search_weight`, `semantic_threshold` are checked and otherwise ignored).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inkstand.chat.prompt import message_text
from inkstand.errors import BadRequestError
from inkstand.knowledge.search import Snippet, search
from inkstand.schemas.chat import ChatMessage, ChatRequest, GraphTool

CHARS_PER_TOKEN = 4
# Writer's documented ranges and defaults (spec 1.8).
RANGES: dict[str, tuple[type, float, float, Any]] = {
    "max_subquestions": (int, 1, 10, 6),
    "search_weight": (int, 0, 100, 50),
    "grounding_level": (float, 0.0, 1.0, 0.0),
    "max_snippets": (int, 1, 60, 30),
    "max_tokens": (int, 100, 8000, 4000),
    "keyword_threshold": (float, 0.0, 1.0, 0.7),
    "semantic_threshold": (float, 0.0, 1.0, 0.7),
}
# FTS5 scores are relative to the best match; Writer's default threshold (0.7) is meant for
# its own scores, so a missing threshold keeps every match the cap allows.
DEFAULT_KEYWORD_THRESHOLD = 0.0


@dataclass(frozen=True)
class QueryConfig:
    max_snippets: int = 30
    max_tokens: int = 4000
    keyword_threshold: float = DEFAULT_KEYWORD_THRESHOLD
    inline_citations: bool = False


@dataclass(frozen=True)
class Grounded:
    request: ChatRequest  # the request to generate from: the snippets ahead, no graph tool
    graph_data: dict[str, Any]


def read_query_config(raw: dict[str, Any] | None) -> QueryConfig:
    """`query_config` checked against Writer's ranges; 400 naming the field otherwise."""
    raw = raw or {}
    for key, value in raw.items():
        if key == "inline_citations":
            if not isinstance(value, bool):
                raise BadRequestError("`query_config.inline_citations` must be true or false.")
            continue
        if key not in RANGES:
            continue  # unknown keys are ignored, as everywhere in Writer's API
        kind, low, high, _ = RANGES[key]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (kind is int and not float(value).is_integer()):
            raise BadRequestError(f"`query_config.{key}` must be a number from {low} to {high}.")
        if not low <= value <= high:
            raise BadRequestError(
                f"`query_config.{key}` is {value}; it must be from {low} to {high}."
            )
    return QueryConfig(
        max_snippets=int(raw.get("max_snippets", 30)),
        max_tokens=int(raw.get("max_tokens", 4000)),
        keyword_threshold=float(raw.get("keyword_threshold", DEFAULT_KEYWORD_THRESHOLD)),
        inline_citations=bool(raw.get("inline_citations", False)),
    )


def graph_tool(request: ChatRequest) -> GraphTool | None:
    for tool in request.tools or ():
        if isinstance(tool, GraphTool):
            return tool
    return None


def latest_question(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message_text(message)
    return ""


async def ground(
    request: ChatRequest, tool: GraphTool, connect: Callable[[], sqlite3.Connection]
) -> Grounded:
    """`request` with the graphs' best snippets ahead of it, and the `graph_data` to send."""
    config = read_query_config(tool.function.query_config)
    question = latest_question(request.messages)
    snippets = await asyncio.to_thread(
        _retrieve, connect, tool.function.graph_ids, question, config
    )
    used = fit(snippets, config.max_tokens * CHARS_PER_TOKEN)
    messages = [_sources_message(used), *request.messages]
    tools = [t for t in request.tools or () if not isinstance(t, GraphTool)] or None
    grounded = request.model_copy(update={"messages": messages, "tools": tools})
    if tools is None and request.tool_choice is not None:
        grounded = grounded.model_copy(update={"tool_choice": None})
    graph_data = {
        "sources": [{"file_id": s.file_id, "snippet": s.text} for s in used],
        "status": "finished",
        "subqueries": [],
    }
    return Grounded(grounded, graph_data)


def _retrieve(
    connect: Callable[[], sqlite3.Connection],
    graph_ids: list[str],
    question: str,
    config: QueryConfig,
) -> list[Snippet]:
    conn = connect()
    try:
        unknown = _unknown_graphs(conn, graph_ids)
        if unknown:
            raise BadRequestError(
                f"`tools[].function.graph_ids` names graphs this server does not have: "
                f"{', '.join(unknown)}."
            )
        return search(
            conn,
            graph_ids,
            question,
            max_snippets=config.max_snippets,
            keyword_threshold=config.keyword_threshold,
        )
    finally:
        conn.close()


def _unknown_graphs(conn: sqlite3.Connection, graph_ids: list[str]) -> list[str]:
    marks = ",".join("?" * len(graph_ids))
    known = {
        row[0] for row in conn.execute(f"SELECT id FROM graphs WHERE id IN ({marks})", graph_ids)
    }
    return [g for g in graph_ids if g not in known]


def fit(snippets: list[Snippet], budget_chars: int) -> list[Snippet]:
    """The best snippets whose text fits `budget_chars` together (at least the best one,
    cut to the budget if it alone is larger)."""
    used: list[Snippet] = []
    total = 0
    for snippet in snippets:
        if total + len(snippet.text) > budget_chars:
            if not used:
                cut = snippet.text[:budget_chars]
                used.append(
                    Snippet(snippet.chunk_id, snippet.file_id, cut, snippet.page, snippet.score)
                )
            break
        used.append(snippet)
        total += len(snippet.text)
    return used


def _sources_message(snippets: list[Snippet]) -> ChatMessage:
    if not snippets:
        text = (
            "The knowledge base has nothing on this question. Say that you could not find "
            "it in the provided sources."
        )
    else:
        listed = "\n\n".join(f"[{i}] {s.text}" for i, s in enumerate(snippets, 1))
        text = (
            "Answer the user's question using only these sources from the knowledge base. "
            "If they do not hold the answer, say so.\n\n" + listed
        )
    return ChatMessage(role="system", content=text)

"""The `graph` tool: answer grounded in a request's Knowledge Graphs, with the sources cited.

Before generation: the graph ids are checked (400 naming unknown ones), `query_config` is
read (400 naming a field out of its range), and the chunks that best match the latest user
message are retrieved (`knowledge/hybrid.py`: the keyword index, merged with semantic
search by `search_weight` when an embedding model is configured; off the event loop).
They become one system message ahead of the conversation, numbered, within
`query_config.max_tokens` and within the room the model's context leaves (`room_chars`,
from `chat/builtin.py`: the context less the conversation and the answer's room), counted
at four characters a token; the prompt size check and the context limit still apply
after. With `subqueries: true` the question is first split and each part answered from
its own retrieval (`tools/subqueries.py`); those answers join the system message and
`graph_data.subqueries`. With `query_config.inline_citations` the model is asked to cite
by number and its markers become links (`tools/citations.py`).

Generation is then the model's normal one; the answer's `graph_data` carries the snippets
used as `sources` and `status: "finished"`. `usage` counts what the model processed: the
snippets in the prompt, and the sub-question generations (`Grounded.spent`). Retrieval
itself costs no tokens.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from inkstand.chat.prompt import message_text
from inkstand.errors import BadRequestError
from inkstand.knowledge.hybrid import retrieve
from inkstand.knowledge.search import Snippet
from inkstand.knowledge.semantic import SemanticSearch
from inkstand.schemas.chat import ChatMessage, ChatRequest, GraphTool
from inkstand.tools.citations import Citations, Source
from inkstand.tools.subqueries import (
    SUBANSWER_SNIPPETS,
    Ask,
    Spent,
    decomposition_request,
    read_subquestions,
    subanswer_request,
)

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
# Scores are relative to the best match of the query; Writer's default thresholds (0.7) are
# meant for its own scores, so a missing threshold keeps every match the cap allows.
DEFAULT_THRESHOLD = 0.0

Connect = Callable[[], sqlite3.Connection]


@dataclass(frozen=True)
class Knowledge:
    """What retrieval reads: a new read connection to the store per call, and the semantic
    search when an embedding model is configured (`knowledge/hybrid.py`)."""

    connect: Connect
    semantic: SemanticSearch | None = None


class UnknownGraphsError(BadRequestError):
    """Graph ids the store does not have (400: they come in a body, not the path)."""

    def __init__(self, graph_ids: list[str], field: str = "tools[].function.graph_ids") -> None:
        listed = ", ".join(graph_ids[:10]) + (" ..." if len(graph_ids) > 10 else "")
        super().__init__(
            f"`{field}` names graphs this server does not have: {listed}.",
            extras={"graph_ids": graph_ids[:100]},
        )
        self.graph_ids = graph_ids

    def naming(self, field: str) -> UnknownGraphsError:
        """The same error, naming the field as the caller spelt it."""
        return UnknownGraphsError(self.graph_ids, field)


@dataclass(frozen=True)
class QueryConfig:
    max_snippets: int = 30
    max_tokens: int = 4000
    keyword_threshold: float = DEFAULT_THRESHOLD
    semantic_threshold: float = DEFAULT_THRESHOLD
    search_weight: int = 50
    max_subquestions: int = 6
    inline_citations: bool = False


@dataclass
class Found:
    """Retrieved snippets and the names of their files."""

    snippets: list[Snippet] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Grounded:
    request: ChatRequest  # the request to generate from: the snippets ahead, no graph tool
    graph_data: dict[str, Any]
    citations: Citations | None  # set with `inline_citations`
    spent: Spent  # tokens of the sub-question generations


def read_query_config(raw: dict[str, Any] | None) -> QueryConfig:
    """`query_config` checked against Writer's ranges; 400 naming the field otherwise."""
    raw = raw or {}
    for key, value in raw.items():
        if key == "inline_citations":
            if not isinstance(value, bool):
                raise BadRequestError("`query_config.inline_citations` must be true or false.")
            continue
        if key in RANGES:
            _check_range(key, value)
        # unknown keys are ignored, as everywhere in Writer's API
    return QueryConfig(
        max_snippets=int(raw.get("max_snippets", 30)),
        max_tokens=int(raw.get("max_tokens", 4000)),
        keyword_threshold=float(raw.get("keyword_threshold", DEFAULT_THRESHOLD)),
        semantic_threshold=float(raw.get("semantic_threshold", DEFAULT_THRESHOLD)),
        search_weight=int(raw.get("search_weight", 50)),
        max_subquestions=int(raw.get("max_subquestions", 6)),
        inline_citations=bool(raw.get("inline_citations", False)),
    )


def _check_range(key: str, value: Any) -> None:
    kind, low, high, _ = RANGES[key]
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (kind is int and not float(value).is_integer()):
        raise BadRequestError(f"`query_config.{key}` must be a number from {low} to {high}.")
    if not low <= value <= high:
        raise BadRequestError(f"`query_config.{key}` is {value}; it must be from {low} to {high}.")


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
    request: ChatRequest, tool: GraphTool, knowledge: Knowledge, ask: Ask, room_chars: int
) -> Grounded:
    """`request` with the graphs' best snippets ahead of it, and the `graph_data` to send."""
    config = read_query_config(tool.function.query_config)
    question = latest_question(request.messages)
    graph_ids = tool.function.graph_ids
    found = await asyncio.to_thread(_retrieve, knowledge, graph_ids, question, config)
    budget = max(0, min(config.max_tokens * CHARS_PER_TOKEN, room_chars))
    spent = Spent()
    subqueries: list[dict[str, Any]] = []
    answered: list[tuple[str, str]] = []
    if tool.function.subqueries:
        parts = Subqueries(request.model, knowledge, graph_ids, config, ask, spent)
        subqueries, answered, more = await parts.run(question, budget)
        found = _merged(found, more)
    used = fit(found.snippets, budget)
    citations = None
    if config.inline_citations:
        citations = Citations(tuple(_source(s, found.names) for s in used))
    context = sources_message(used, cite=config.inline_citations, answered=answered)
    grounded = _without_graph_tool(request).model_copy(
        update={"messages": [context, *request.messages]}
    )
    graph_data = {
        "sources": [{"file_id": s.file_id, "snippet": s.text} for s in used],
        "status": "finished",
        "subqueries": subqueries,
    }
    return Grounded(grounded, graph_data, citations, spent)


def _without_graph_tool(request: ChatRequest) -> ChatRequest:
    tools = [t for t in request.tools or () if not isinstance(t, GraphTool)] or None
    update: dict[str, Any] = {"tools": tools}
    if tools is None:
        update["tool_choice"] = None
    return request.model_copy(update=update)


@dataclass
class Subqueries:
    """Splits a question, retrieves and answers each part (see `tools/subqueries.py`)."""

    model: str
    knowledge: Knowledge
    graph_ids: list[str]
    config: QueryConfig
    ask: Ask
    spent: Spent

    async def run(
        self, question: str, budget: int
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]], Found]:
        limit = self.config.max_subquestions
        split = await self.ask(decomposition_request(self.model, question, limit))
        self.spent.add(split)
        parts = read_subquestions(split.text, question, limit)
        config = replace(
            self.config, max_snippets=min(self.config.max_snippets, SUBANSWER_SNIPPETS)
        )
        founds = await asyncio.gather(
            *(
                asyncio.to_thread(_retrieve, self.knowledge, self.graph_ids, q, config)
                for q in parts
            )
        )
        share = max(1000, budget // 2)
        used = [fit(f.snippets, share) for f in founds]
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self.ask(subanswer_request(self.model, sources_message(u), q)))
                for q, u in zip(parts, used, strict=True)
            ]
        answers = [task.result() for task in tasks]
        for asked in answers:
            self.spent.add(asked)
        listed = [
            {"query": q, "answer": a.text, "sources": [_source_body(s) for s in u]}
            for q, a, u in zip(parts, answers, used, strict=True)
        ]
        merged = Found()
        for f in founds:
            merged = _merged(merged, f)
        return listed, [(q, a.text) for q, a in zip(parts, answers, strict=True)], merged


def _merged(first: Found, second: Found) -> Found:
    """`first`'s snippets, then `second`'s not already among them."""
    seen = {s.chunk_id for s in first.snippets}
    extra = [s for s in second.snippets if s.chunk_id not in seen]
    return Found([*first.snippets, *extra], {**first.names, **second.names})


def _source_body(snippet: Snippet) -> dict[str, str]:
    return {"file_id": snippet.file_id, "snippet": snippet.text}


def _source(snippet: Snippet, names: dict[str, str]) -> Source:
    name = names.get(snippet.file_id, snippet.file_id)
    return Source(snippet.file_id, name, snippet.text, snippet.score, snippet.page)


def _retrieve(
    knowledge: Knowledge, graph_ids: list[str], question: str, config: QueryConfig
) -> Found:
    conn = knowledge.connect()
    try:
        unknown = _unknown_graphs(conn, graph_ids)
        if unknown:
            raise UnknownGraphsError(unknown)
        snippets = retrieve(
            conn,
            graph_ids,
            question,
            semantic=knowledge.semantic,
            max_snippets=config.max_snippets,
            keyword_threshold=config.keyword_threshold,
            semantic_threshold=config.semantic_threshold,
            search_weight=config.search_weight,
        )
        return Found(snippets, _file_names(conn, {s.file_id for s in snippets}))
    finally:
        conn.close()


def _unknown_graphs(conn: sqlite3.Connection, graph_ids: list[str]) -> list[str]:
    marks = ",".join("?" * len(graph_ids))
    known = {
        row[0] for row in conn.execute(f"SELECT id FROM graphs WHERE id IN ({marks})", graph_ids)
    }
    return [g for g in graph_ids if g not in known]


def _file_names(conn: sqlite3.Connection, file_ids: set[str]) -> dict[str, str]:
    if not file_ids:
        return {}
    ids = list(file_ids)
    marks = ",".join("?" * len(ids))
    return dict(conn.execute(f"SELECT id, name FROM files WHERE id IN ({marks})", ids).fetchall())


def fit(snippets: list[Snippet], budget_chars: int) -> list[Snippet]:
    """The best snippets whose text fits `budget_chars` together (at least the best one,
    cut to the budget if it alone is larger; none when there is no room at all)."""
    used: list[Snippet] = []
    total = 0
    for snippet in snippets:
        if total + len(snippet.text) > budget_chars:
            if not used and budget_chars > 0:
                used.append(replace(snippet, text=snippet.text[:budget_chars]))
            break
        used.append(snippet)
        total += len(snippet.text)
    return used


def sources_message(
    snippets: list[Snippet],
    *,
    cite: bool = False,
    answered: Sequence[tuple[str, str]] = (),
) -> ChatMessage:
    """The system message the model answers from: the numbered snippets, and the
    sub-questions' answers when there are any."""
    if not snippets:
        text = (
            "The knowledge base has nothing on this question. Say that you could not find "
            "it in the provided sources."
        )
    else:
        listed = "\n\n".join(f"[{i}] {s.text}" for i, s in enumerate(snippets, 1))
        how = " Cite each source you use by its number in brackets, like [1]." if cite else ""
        text = (
            "Answer the user's question using only these sources from the knowledge base. "
            f"If they do not hold the answer, say so.{how}\n\n{listed}"
        )
    if answered:
        parts = "\n".join(f"- {q}\n  {a.strip()}" for q, a in answered)
        text += f"\n\nAnswers found for parts of the question:\n{parts}"
    return ChatMessage(role="system", content=text)

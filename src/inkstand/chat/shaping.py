"""A built-in tool's hand on an answer after generation: `Shaping`.

Generation is always the engine's normal one; a tool that must change what the caller sees
(inline citations rewrite `[n]` markers, translation sends its text in one chunk) gives the
plan a `Shaping`, which the chat service applies to a whole answer's choices and to a
stream's chunks. `CitationShaping` and `WholeTextShaping` are the two there are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from inkstand.chat.chunks import ChoiceResult, ChunkFactory
from inkstand.tools.citations import Citations, cited_chunks
from inkstand.tools.translate import whole_chunks


class Shaping(Protocol):
    opening_data: bool  # whether the plan's tool data goes in the opening chunk

    def whole(self, choice: ChoiceResult) -> None:
        """Shape one finished choice of a whole answer, in place."""

    def stream(
        self, chunks: AsyncIterator[dict[str, Any]], n: int, factory: ChunkFactory
    ) -> AsyncIterator[dict[str, Any]]:
        """A stream's chunks, shaped."""


@dataclass
class CitationShaping:
    """`[n]` markers become links; each choice's `graph_data.references` lists the sources."""

    citations: Citations
    graph_data: dict[str, Any]
    opening_data: bool = True

    def whole(self, choice: ChoiceResult) -> None:
        choice.text, references = self.citations.rewrite_whole(choice.text)
        choice.tool_data = {"graph_data": {**self.graph_data, "references": references}}

    def stream(
        self, chunks: AsyncIterator[dict[str, Any]], n: int, factory: ChunkFactory
    ) -> AsyncIterator[dict[str, Any]]:
        return cited_chunks(chunks, self.citations, n, factory.content)


@dataclass
class WholeTextShaping:
    """The text is sent whole, in one chunk with `data` and a fixed finish reason (the
    translation tool's documented behaviour); a choice cut by `max_tokens` keeps `length`."""

    data: dict[str, Any]  # e.g. {"translation_data": {...}}
    finish_reason: str
    opening_data: bool = False

    def whole(self, choice: ChoiceResult) -> None:
        if choice.finish_reason != "length":
            choice.finish_reason = self.finish_reason

    def stream(
        self, chunks: AsyncIterator[dict[str, Any]], n: int, factory: ChunkFactory
    ) -> AsyncIterator[dict[str, Any]]:
        return whole_chunks(chunks, self.data, self.finish_reason)

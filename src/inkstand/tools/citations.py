"""Inline citations for the `graph` tool (`query_config.inline_citations: true`).

The sources go to the model numbered `[1]`, `[2]` ... and it is asked to cite them so. Its
markers are rewritten as the answer is produced into Writer's Markdown links,
`[<file name>](<cite id>)`, and `graph_data.references.files` lists every source with its
`cite` id when the answer cited it (null otherwise). A marker naming no source (`[7]` of
five) stays as the model wrote it. In a stream, text that may be the start of a marker
(`[1` at a chunk's end) is held until the marker closes or cannot be one, so a link is never
split across chunks; the references go out once, in the choice's closing chunk.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
OPEN_MARKER = re.compile(r"\[[\d,\s]{0,24}$")  # a marker that may still be coming


@dataclass(frozen=True)
class Source:
    """One numbered source as the model saw it."""

    file_id: str
    file_name: str
    text: str
    score: float
    page: int | None

    def reference(self, cite: str | None) -> dict[str, Any]:
        """Writer's `file_ref` (`fileId` in camel case on the wire)."""
        ref: dict[str, Any] = {
            "text": self.text,
            "fileId": self.file_id,
            "score": round(self.score, 4),
            "cite": cite,
        }
        if self.page is not None:
            ref["page"] = self.page
        return ref


def cite_id(number: int) -> str:
    return f"cite-{number}"


@dataclass(frozen=True)
class Citations:
    """The numbered sources of one answer; `rewriter()` gives one per choice."""

    sources: tuple[Source, ...]

    def rewriter(self) -> CitationRewriter:
        return CitationRewriter(self.sources)

    def references(self, cited: set[int]) -> dict[str, Any]:
        """`graph_data.references`: every source, its `cite` set when the answer cited it."""
        files = [
            source.reference(cite_id(n) if n in cited else None)
            for n, source in enumerate(self.sources, 1)
        ]
        return {"files": files} if files else {}

    def rewrite_whole(self, text: str) -> tuple[str, dict[str, Any]]:
        """A finished answer's text with links, and its references."""
        rewriter = self.rewriter()
        rewritten = rewriter.feed(text) + rewriter.flush()
        return rewritten, self.references(rewriter.cited)


@dataclass
class CitationRewriter:
    """Rewrites `[n]` markers into links as text arrives; `cited` collects the numbers."""

    sources: tuple[Source, ...]
    cited: set[int] = field(default_factory=set)
    _held: str = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        tail = OPEN_MARKER.search(text)
        if tail is not None:
            self._held, text = text[tail.start() :], text[: tail.start()]
        else:
            self._held = ""
        return MARKER.sub(self._link, text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return MARKER.sub(self._link, text)

    def _link(self, match: re.Match[str]) -> str:
        numbers = [int(part) for part in match.group(1).split(",")]
        if not all(1 <= n <= len(self.sources) for n in numbers):
            return match.group(0)
        self.cited.update(numbers)
        return "".join(f"[{self.sources[n - 1].file_name}]({cite_id(n)})" for n in numbers)


async def cited_chunks(
    chunks: AsyncIterator[dict[str, Any]],
    citations: Citations,
    n: int,
    content: Callable[[int, str, None], dict[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    """A stream's chunks with each choice's markers rewritten; text held at a choice's end
    goes out (`content(index, text, None)` builds its chunk) before the closing chunk, which
    carries the choice's `graph_data.references`."""
    rewriters = [citations.rewriter() for _ in range(n)]
    async for chunk in chunks:
        choices = chunk["choices"]
        if len(choices) != 1:  # the opening chunk, or a usage-only chunk
            yield chunk
            continue
        choice = choices[0]
        rewriter, delta = rewriters[choice["index"]], choice["delta"]
        if choice["finish_reason"] is not None:
            held = rewriter.flush()
            if held:
                yield content(choice["index"], held, None)
            delta["graph_data"] = {"references": citations.references(rewriter.cited)}
        elif isinstance(delta.get("content"), str) and delta.get("tool_calls") is None:
            text = rewriter.feed(delta["content"])
            if not text and choice["logprobs"] is None:
                continue  # all held: the next chunk carries it
            delta["content"] = choice["message"]["content"] = text
        yield chunk

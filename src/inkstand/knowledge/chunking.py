"""A `Document` -> chunks for retrieval that follow its structure and keep their place.

The document's full text is its sections' texts joined with "\\n\\n" (`full_text`). A chunk
never crosses a section (so never a page). Each section is first broken into atoms, the
largest units that fit in `max_chars`: its paragraphs (split at blank lines); a paragraph too
long for that, its sentences; a sentence too long, its lines; then its words; and a word too
long is cut where it must. Consecutive atoms are then packed while they fit, so short
paragraphs share a chunk and a long paragraph fills chunks sentence by sentence.

Offsets and headings:

    full_text(document)[chunk.start:chunk.end]    the chunk's body: a slice of the section,
                                                  without leading or trailing whitespace,
                                                  at most `max_chars` long
    chunk.text == body                            when the section has no heading, or the
                                                  body's first line already holds it
    chunk.text == heading + "\\n" + body          otherwise: the heading line gives a chunk from
                                                  deep in a section its context

so `chunk.text.endswith(full_text[chunk.start:chunk.end])` always holds, and the body is the
last `chunk.end - chunk.start` characters of `chunk.text`. Whitespace between bodies belongs to
no chunk; every other character of the full text is in exactly one, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from inkstand.knowledge.extract import Document

SECTION_SEPARATOR = "\n\n"

# Where a too-long piece may be cut, coarsest first. Each pattern's group 1 is the separator,
# always whitespace, so a cut drops nothing but whitespace.
CUTS = (
    re.compile(r"(\n[^\S\n]*\n\s*)"),  # paragraph break: a blank line
    re.compile(r"[.!?…。！？][\"'”’)\]]*(\s+)"),  # sentence end: punctuation, closers, space
    re.compile(r"(\n\s*)"),  # line end
    re.compile(r"(\s+)"),  # any whitespace
)

Span = tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    text: str  # the body, with the section's heading line first when the body lacks it
    page: int | None
    start: int  # character offsets of the body in `full_text(document)`
    end: int


def full_text(document: Document) -> str:
    """The document's sections' texts, joined with a blank line."""
    return SECTION_SEPARATOR.join(section.text for section in document.sections)


def chunk(document: Document, *, max_chars: int = 1200) -> list[Chunk]:
    """The document cut into chunks of at most `max_chars` body characters, in order."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    chunks = []
    offset = 0
    for section in document.sections:
        text = section.text
        whole = _trimmed(text, 0, len(text))
        for start, end in _spans(text, whole, max_chars) if whole else ():
            body = text[start:end]
            labelled = _with_heading(section.heading, body)
            chunks.append(Chunk(labelled, section.page, offset + start, offset + end))
        offset += len(text) + len(SECTION_SEPARATOR)
    return chunks


def _with_heading(heading: str | None, body: str) -> str:
    first_line = body.split("\n", 1)[0]
    return f"{heading}\n{body}" if heading and heading not in first_line else body


def _spans(text: str, span: Span, max_chars: int) -> Iterator[Span]:
    """`span` as chunk bodies: its atoms, packed greedily while they fit in `max_chars`."""
    packed: Span | None = None
    for atom in _atoms(text, span, 0, max_chars):
        if packed and atom[1] - packed[0] <= max_chars:
            packed = (packed[0], atom[1])
        else:
            if packed:
                yield packed
            packed = atom
    if packed:
        yield packed


def _atoms(text: str, span: Span, level: int, max_chars: int) -> Iterator[Span]:
    """`span` (trimmed, non-empty) whole if it fits, else the atoms of its parts between the
    separators of `CUTS[level]` (the next level's if it has none)."""
    start, end = span
    if end - start <= max_chars:
        yield span
    elif level == len(CUTS):  # one run of non-whitespace: cut it anywhere
        yield from ((cut, min(cut + max_chars, end)) for cut in range(start, end, max_chars))
    else:
        for piece in _pieces(text, span, CUTS[level]):
            yield from _atoms(text, piece, level + 1, max_chars)


def _pieces(text: str, span: Span, cut: re.Pattern[str]) -> Iterator[Span]:
    """The trimmed, non-empty parts of `span` between the separators `cut` finds in it."""
    start, end = span
    for match in cut.finditer(text, start, end):
        piece = _trimmed(text, start, match.start(1))
        if piece:
            yield piece
        start = match.end(1)
    piece = _trimmed(text, start, end)
    if piece:
        yield piece


def _trimmed(text: str, start: int, end: int) -> Span | None:
    """`text[start:end]` without the whitespace at its ends; None if nothing else is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None

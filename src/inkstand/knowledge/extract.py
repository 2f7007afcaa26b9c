"""Text out of an uploaded file: `extract(data, name)` -> a `Document` of `Section`s.

The type comes from the name (`filetypes.type_from_name`); the content is then checked against
it, so `report.pdf` that is not a PDF fails with a reason naming the type. Every failure is one
`ExtractionError` whose `.reason` is a sentence the uploader can act on; foreign exceptions from
the parsing libraries are translated once, in `_reading`, and chained.

    text.py    txt, md, csv, srt, json, html, eml     (the stdlib, charset_normalizer)
    pdf.py     pdf, one section per page              (pypdf)
    office.py  docx, pptx, xlsx: zip containers       (python-docx, python-pptx, openpyxl)

Each module says how its formats become sections, and what it bounds (unpacked zip size,
workbook rows and cells, PDF pages). `document.py` holds the types they share.

Section text is normalised here: "\\n" line ends, no trailing spaces, at most one blank line
in a row (a blank line is a paragraph break, which chunking splits at first); a heading is
one line of at most MAX_HEADING_CHARS.

The parsing libraries are imported where they are used: only ingestion needs them, and the
server should not pay for loading them at start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from inkstand.knowledge.document import LABELS, Document, ExtractionError, Section
from inkstand.knowledge.filetypes import SUPPORTED_TYPES, type_from_name
from inkstand.knowledge.office import extract_docx, extract_pptx, extract_xlsx
from inkstand.knowledge.pdf import extract_pdf
from inkstand.knowledge.text import (
    extract_csv,
    extract_eml,
    extract_html,
    extract_json,
    extract_md,
    extract_srt,
    extract_txt,
)

__all__ = ["Document", "ExtractionError", "Section", "extract"]

log = logging.getLogger("inkstand.knowledge")

MAX_HEADING_CHARS = 200
NO_TEXT = "the file holds no text"

EXTRACTORS: dict[str, Callable[[bytes], Iterable[Section]]] = {
    "txt": extract_txt,
    "md": extract_md,
    "html": extract_html,
    "pdf": extract_pdf,
    "docx": extract_docx,
    "pptx": extract_pptx,
    "xlsx": extract_xlsx,
    "csv": extract_csv,
    "eml": extract_eml,
    "srt": extract_srt,
    "json": extract_json,
}


def extract(data: bytes, name: str) -> Document:
    """The text of the file `name` holding `data`, in sections; raises ExtractionError."""
    kind = type_from_name(name)
    if kind is None:
        accepted = ", ".join(SUPPORTED_TYPES)
        raise ExtractionError(f"Inkstand cannot read {name!r}; upload one of: {accepted}")
    if not data.strip():
        raise ExtractionError(NO_TEXT)
    with _reading(kind):
        found = EXTRACTORS[kind](data)
        sections = tuple(_clean_section(section) for section in found)
    sections = tuple(section for section in sections if section.text)
    if not sections:
        raise ExtractionError(NO_TEXT)
    return Document(kind, sections)


@contextmanager
def _reading(kind: str) -> Iterator[None]:
    """Translate whatever a parsing library raises on a damaged file into ExtractionError."""
    try:
        yield
    except ExtractionError:
        raise
    except Exception as error:
        log.info("could not read a %s file", kind, exc_info=True)
        label = LABELS.get(kind, f"a .{kind} file")
        raise ExtractionError(
            f"the file could not be read as {label}; it may be damaged "
            f"({type(error).__name__}): open it, save it again and upload it once more"
        ) from error


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n").rstrip()


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_HEADING_CHARS else line[: MAX_HEADING_CHARS - 1] + "…"


def _clean_section(section: Section) -> Section:
    heading = _one_line(section.heading) if section.heading else None
    return Section(_clean(section.text), section.page, heading or None)

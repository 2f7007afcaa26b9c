"""What extraction makes of a file, and how it fails: the types every format's reader shares.

    Document(type, sections)          a file's text, in the order it is read
    Section(text, page, heading)      one part: a page, a slide, a sheet, or text under a heading
    ExtractionError(reason)           the file's text cannot be had; `reason` says why, in a
                                      sentence the uploader can act on

`extract.py` dispatches on the file type; `text.py`, `pdf.py` and `office.py` read the formats.
"""

from __future__ import annotations

from dataclasses import dataclass

# How a reason names each type, where "a .<type> file" would say less.
LABELS = {
    "pdf": "a PDF",
    "docx": "a Word document (.docx)",
    "pptx": "a PowerPoint presentation (.pptx)",
    "xlsx": "an Excel workbook (.xlsx)",
    "eml": "an email message (.eml)",
    "srt": "an SRT subtitle file",
    "json": "a JSON document",
}


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None  # 1-based page (pdf), slide (pptx) or sheet index (xlsx)
    heading: str | None = None  # the heading this section sits under, when the format has them


@dataclass(frozen=True)
class Document:
    type: str
    sections: tuple[Section, ...]


class ExtractionError(Exception):
    """The file's text cannot be had; `reason` says why in a sentence a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mismatch(kind: str) -> ExtractionError:
    """The error for content that is not of the type its name says."""
    return ExtractionError(
        f"the file is not {LABELS[kind]}, though its name says so; check that it is the right file"
    )

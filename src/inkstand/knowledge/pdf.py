"""PDF: one section per page, read with pypdf.

A PDF encrypted with an owner password only (editing and printing restricted) opens with
the empty user password and is read; one that needs a password to open is refused, and so
is one whose pages hold no text (a scan needs OCR, which Inkstand does not do). A PDF is
read up to MAX_PDF_PAGES pages, the rest dropped with a log line; pypdf bounds each
decompressed stream itself (75 MB by default).
"""

from __future__ import annotations

import io
import logging

from inkstand.knowledge.document import ExtractionError, Section, mismatch

log = logging.getLogger("inkstand.knowledge")

MAX_PDF_PAGES = 5_000


def extract_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    if b"%PDF-" not in data[:1024]:
        raise mismatch("pdf")
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:  # an owner password alone leaves the file readable with the empty user password
            decrypted = reader.decrypt("")
        except (DependencyError, PdfReadError, NotImplementedError) as error:
            raise _encrypted() from error
        if not decrypted:
            raise _encrypted()
    pages = reader.pages
    if len(pages) > MAX_PDF_PAGES:
        log.info("a PDF has %d pages; reading the first %d", len(pages), MAX_PDF_PAGES)
    sections = [
        Section(pages[index].extract_text(), page=index + 1)
        for index in range(min(len(pages), MAX_PDF_PAGES))
    ]
    if not any(section.text.strip() for section in sections):
        raise ExtractionError(
            "the PDF holds no text, only images (a scan?); it needs OCR, which Inkstand does not "
            "do: upload a PDF with a text layer, or the text itself"
        )
    return sections


def _encrypted() -> ExtractionError:
    return ExtractionError("the PDF is encrypted; upload it without a password")

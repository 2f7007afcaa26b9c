"""Office formats, all zip containers: Word (docx), PowerPoint (pptx) and Excel (xlsx).

    docx  python-docx: paragraphs in order, a "Heading N" or "Title" paragraph starts a
          section, a table's rows become lines of " | "-joined cells
    pptx  python-pptx: one section per slide, its title as heading, then the text of its
          shapes (groups and tables included) and its speaker notes
    xlsx  openpyxl: one section per worksheet, its name as heading, rows as tab-joined lines

A container is checked before any library opens it: an old binary (OLE2) Office file gets
a reason of its own, a zip without its type's main part is not of that type, and one over
MAX_UNCOMPRESSED_BYTES unpacked is refused. A workbook is read up to MAX_SHEET_ROWS rows or
MAX_SHEET_CELLS cells, the rest dropped with a log line.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING

from inkstand.knowledge.document import LABELS, ExtractionError, Section, mismatch

if TYPE_CHECKING:
    from docx.table import Table
    from pptx.shapes.base import BaseShape

log = logging.getLogger("inkstand.knowledge")

MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_SHEET_ROWS = 200_000
MAX_SHEET_CELLS = 2_000_000
# The part every real file of a zip-based type has.
ZIP_PARTS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _open_zip(data: bytes, kind: str) -> io.BytesIO:
    """`data` as a file, once it is known to be a `kind` container of bounded unpacked size."""
    if data.startswith(OLE2_MAGIC):
        raise ExtractionError(
            f"the file is an old binary Office file or a password-protected one, not "
            f"{LABELS[kind]}; open it in Office and save it as .{kind} without a password"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise mismatch(kind)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    if ZIP_PARTS[kind] not in {member.filename for member in members}:
        raise mismatch(kind)
    # zipfile stops reading a member at its declared size, so the declared sizes are a real bound.
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_UNCOMPRESSED_BYTES:
        raise ExtractionError(
            f"the file unpacks to {unpacked // 2**20} MB, over Inkstand's limit of "
            f"{MAX_UNCOMPRESSED_BYTES // 2**20} MB; split it into smaller files"
        )
    return io.BytesIO(data)


def extract_docx(data: bytes) -> list[Section]:
    """Paragraphs in order; a "Heading N" or "Title" paragraph starts a section; a table's
    rows become lines of " | "-joined cells."""
    import docx
    from docx.table import Table

    document = docx.Document(_open_zip(data, "docx"))
    # `Paragraph.style` scans every style of the document on each call (quadratic on a long
    # document), so heading styles are found once, by id, and each paragraph's id is read.
    heading_ids = {
        style.style_id
        for style in document.styles
        if style.name and re.fullmatch(r"Heading \d|Title", style.name)
    }
    sections: list[Section] = []
    heading: str | None = None
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.append(_docx_table(block))
            continue
        text = block.text
        if block._p.style in heading_ids and text.strip():
            sections.append(Section("\n\n".join(blocks), heading=heading))
            heading, blocks = text, []
        blocks.append(text)
    sections.append(Section("\n\n".join(blocks), heading=heading))
    return sections


def _docx_table(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # A merged cell is listed once per grid column it spans; its XML element is shared.
            if id(cell._tc) not in seen:
                seen.add(id(cell._tc))
                cells.append(" ".join(cell.text.split()))
        rows.append(" | ".join(cells))
    return "\n".join(rows)


def extract_pptx(data: bytes) -> list[Section]:
    """One section per slide, its title as heading and first line, then the text of its other
    shapes (groups and tables included) and its speaker notes."""
    from pptx import Presentation

    presentation = Presentation(_open_zip(data, "pptx"))
    sections = []
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        title = title_shape.text_frame.text if title_shape is not None else ""
        title_id = title_shape.shape_id if title_shape is not None else None
        texts = [title]
        for shape in slide.shapes:
            if shape.shape_id != title_id:
                texts.extend(_shape_texts(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            texts.append(slide.notes_slide.notes_text_frame.text)
        sections.append(Section("\n\n".join(texts), page=number, heading=title))
    return sections


def _shape_texts(shape: BaseShape) -> Iterator[str]:
    from pptx.shapes.autoshape import Shape
    from pptx.shapes.graphfrm import GraphicFrame
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        for inner in shape.shapes:
            yield from _shape_texts(inner)
    elif isinstance(shape, Shape) and shape.has_text_frame:
        yield shape.text_frame.text
    elif isinstance(shape, GraphicFrame) and shape.has_table:
        rows = shape.table.rows
        yield "\n".join(" | ".join(cell.text for cell in row.cells) for row in rows)


def extract_xlsx(data: bytes) -> list[Section]:
    """One section per worksheet (its name as heading), non-empty rows as tab-joined lines,
    cached formula results rather than formulas."""
    import openpyxl

    workbook = openpyxl.load_workbook(_open_zip(data, "xlsx"), read_only=True, data_only=True)
    try:
        budget = _Budget(MAX_SHEET_ROWS, MAX_SHEET_CELLS)
        return [
            Section("\n".join(_sheet_lines(sheet, budget)), page=index, heading=sheet.title)
            for index, sheet in enumerate(workbook.worksheets, start=1)
        ]
    finally:
        workbook.close()


@dataclass
class _Budget:
    """What is left of the rows and cells one workbook may have read."""

    rows: int
    cells: int
    spent: bool = False


def _sheet_lines(sheet: object, budget: _Budget) -> Iterator[str]:
    # Declared dimensions may be wrong (or huge); without them rows are not padded to them.
    sheet.reset_dimensions()  # type: ignore[attr-defined]
    for row in sheet.iter_rows(values_only=True):  # type: ignore[attr-defined]
        budget.rows -= 1
        budget.cells -= len(row)
        if budget.rows < 0 or budget.cells < 0:
            if not budget.spent:
                limits = (MAX_SHEET_ROWS, MAX_SHEET_CELLS)
                log.info("a workbook is over %d rows or %d cells; the rest is not read", *limits)
            budget.spent = True
            return
        cells = [_cell_text(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            yield "\t".join(cells)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return " ".join(str(value).split())

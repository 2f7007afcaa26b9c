"""Text out of an uploaded file: `extract(data, name)` -> a `Document` of `Section`s.

The type comes from the name (`filetypes.type_from_name`); the content is then checked against
it, so `report.pdf` that is not a PDF fails with a reason naming the type. Every failure is one
`ExtractionError` whose `.reason` is a sentence the uploader can act on; foreign exceptions from
the parsing libraries are translated once, in `_reading`, and chained.

    pdf   pypdf, one section per page            docx  python-docx, "Heading N" starts a section
    pptx  python-pptx, one section per slide     xlsx  openpyxl, one section per sheet
    csv   stdlib csv, rows as tab-joined lines   md    `#` headings start sections
    html  stdlib html.parser, h1-h6 start sections
    eml   stdlib email, subject as heading       srt   the spoken lines, no numbers or timings
    json  every key path and scalar as "path: value"

Section text is normalised: "\\n" line ends, no trailing spaces, at most one blank line in a
row (a blank line is a paragraph break, which chunking splits at first).

Limits: a zip container (docx, pptx, xlsx) over MAX_UNCOMPRESSED_BYTES unpacked is refused
before any library opens it; a workbook is read up to MAX_SHEET_ROWS rows or MAX_SHEET_CELLS
cells and a PDF up to MAX_PDF_PAGES pages, the rest is dropped with a log line. pypdf bounds
each decompressed stream itself (75 MB by default).
"""

from __future__ import annotations

import csv
import email
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from inkstand.knowledge.filetypes import SUPPORTED_TYPES, type_from_name

if TYPE_CHECKING:
    from docx.table import Table
    from pptx.shapes.base import BaseShape

# The parsing libraries are imported where they are used: only ingestion needs them, and the
# server should not pay for loading them at start.

log = logging.getLogger("inkstand.knowledge")

MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_SHEET_ROWS = 200_000
MAX_SHEET_CELLS = 2_000_000
MAX_PDF_PAGES = 5_000
MAX_HEADING_CHARS = 200

NO_TEXT = "the file holds no text"
LABELS = {
    "pdf": "a PDF",
    "docx": "a Word document (.docx)",
    "pptx": "a PowerPoint presentation (.pptx)",
    "xlsx": "an Excel workbook (.xlsx)",
    "eml": "an email message (.eml)",
    "srt": "an SRT subtitle file",
    "json": "a JSON document",
}
# The part every real file of a zip-based type has.
ZIP_PARTS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


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


def _mismatch(kind: str) -> ExtractionError:
    return ExtractionError(
        f"the file is not {LABELS[kind]}, though its name says so; check that it is the right file"
    )


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


# --- text formats ------------------------------------------------------------------------


def decode_text(data: bytes, kind: str) -> str:
    """`data` as text: a BOM's encoding, else UTF-8, else what charset_normalizer detects."""
    for bom, codec in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = _mostly_utf8(data) or _detected(data)
    if text is None or "\x00" in text:
        raise ExtractionError(
            f"the file is not text in an encoding Inkstand recognises (is it really a .{kind} "
            "file?); save it as UTF-8 text and upload it again"
        )
    return text


def _mostly_utf8(data: bytes) -> str | None:
    """`data` as UTF-8 with its few bad bytes replaced, when UTF-8 it clearly is: a stray byte
    in a long UTF-8 file must not make a detector read the whole file as mojibake. Legacy
    8-bit text almost never forms valid multi-byte sequences, so their count decides."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - bad
    return text if bad * 20 < multibyte else None


def _detected(data: bytes) -> str | None:
    """`data` decoded as charset_normalizer guesses, preferring Windows-1252 among the
    guesses that read as cleanly as the best: on short Western European text its first
    guess is often a cousin (cp1250, mac_iceland) that turns "à" into "ŕ"."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    cleanest = [match for match in matches if match.chaos == best.chaos]
    if any("cp1252" in match.could_be_from_charset for match in cleanest):
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return str(best)


def extract_txt(data: bytes) -> list[Section]:
    return [Section(decode_text(data, "txt"))]


def extract_md(data: bytes) -> list[Section]:
    """ATX headings (`# Title`) start sections; `#` lines inside code fences do not."""
    sections: list[Section] = []
    heading: str | None = None
    lines: list[str] = []
    fence: str | None = None
    for line in decode_text(data, "md").splitlines():
        marker = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            fence = None if fence else marker.group(1)[:3]
        title = None if fence else re.match(r" {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", line)
        if title and title.group(1):
            sections.append(Section("\n".join(lines), heading=heading))
            heading, lines = title.group(1), []
        lines.append(line)
    sections.append(Section("\n".join(lines), heading=heading))
    return sections


def extract_csv(data: bytes) -> list[Section]:
    text = decode_text(data, "csv")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], ",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [
            "\t".join(cell.strip() for cell in row)
            for row in csv.reader(io.StringIO(text), dialect)
        ]
    except csv.Error:
        log.info("a csv file is not well formed; its text is kept as it is", exc_info=True)
        return [Section(text)]
    return [Section("\n".join(rows))]


def extract_srt(data: bytes) -> list[Section]:
    timing = re.compile(r"\s*\d+:\d+:\d+[,.]\d+\s*-->")
    blocks = re.split(r"\n\s*\n", decode_text(data, "srt").replace("\r\n", "\n"))
    if not any(timing.match(line) for block in blocks for line in block.split("\n")):
        raise _mismatch("srt")
    cues = []
    for block in blocks:
        spoken = [
            line for line in block.split("\n") if not (timing.match(line) or line.strip().isdigit())
        ]
        text = re.sub(r"<[^>]+>|\{\\[^}]*\}", "", " ".join(line.strip() for line in spoken))
        cues.append(text.strip())
    return [Section("\n".join(cue for cue in cues if cue))]


def extract_json(data: bytes) -> list[Section]:
    """Each top-level entry's "path: value" lines make one paragraph, so chunks keep records
    together; nulls are left out."""
    try:
        value = json.loads(decode_text(data, "json"))
    except (ValueError, RecursionError) as error:
        raise ExtractionError(
            f"the file is not valid JSON ({error}); fix it and upload it again"
        ) from error
    if isinstance(value, dict):
        entries = list(value.items())
    elif isinstance(value, list):
        entries = [(f"[{index}]", item) for index, item in enumerate(value)]
    else:
        entries = [("", value)]
    paragraphs = ["\n".join(_json_lines(path, item)) for path, item in entries]
    return [Section("\n\n".join(paragraph for paragraph in paragraphs if paragraph))]


def _json_lines(path: str, value: object) -> Iterator[str]:
    """`path: value` for every scalar under `value`, depth first, without recursion (the
    decoder allows nesting deeper than Python's stack would)."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(
                reversed(
                    [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
                )
            )
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{index}]", item) for index, item in enumerate(value)]))
        elif value is not None:
            shown = json.dumps(value) if isinstance(value, bool) else str(value)
            yield f"{path}: {shown}" if path else shown


# --- html and email ----------------------------------------------------------------------

# Not "head": HTML lets a page leave it unclosed. Its <title> heads the page's first section.
SKIPPED_TAGS = {"script", "style", "noscript", "template", "svg", "title"}
PARAGRAPH_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote",
    "pre", "table", "ul", "ol", "dl", "figure", "form", "address", "hr", "body",
}  # fmt: skip
LINE_TAGS = {"br", "li", "tr", "dt", "dd", "figcaption", "caption", "option"}
HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


class _HTMLText(HTMLParser):
    """Collects sections of visible text: h1-h6 start one, block elements break lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.heading: str | None = None
        self.parts: list[str] = []
        self.title: list[str] | None = None  # the h1-h6 being read
        self.page_title: list[str] | None = None  # the <title> being read
        self.page_titles: list[str] = []
        self.skipping = 0
        self.preformatted = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.page_title = []
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag in HEADING_TAGS and not self.skipping:
            self.sections.append(Section("".join(self.parts), heading=self.heading))
            self.heading, self.parts, self.title = None, [], []
        self._break(tag)
        self.preformatted += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._break(tag)  # <br/>, <hr/>: a void element opens nothing to skip or close

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.page_title is not None:
            self.page_titles.append("".join(self.page_title))
            self.page_title = None
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in HEADING_TAGS and self.title is not None:
            self.heading, self.title = "".join(self.title), None
        elif tag in ("td", "th"):
            self.parts.append("\t")
        self.preformatted = max(0, self.preformatted - (tag == "pre"))
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self.page_title is not None:
            self.page_title.append(data)
        if self.skipping:
            return
        text = data if self.preformatted else re.sub(r"\s+", " ", data)
        self.parts.append(text)
        if self.title is not None:
            self.title.append(text)

    def _break(self, tag: str) -> None:
        if tag in PARAGRAPH_TAGS or tag in HEADING_TAGS:
            self.parts.append("\n\n")
        elif tag in LINE_TAGS:
            self.parts.append("\n")

    def finish(self) -> list[Section]:
        self.close()
        if self.title is not None:
            self.heading = "".join(self.title)
        self.sections.append(Section("".join(self.parts), heading=self.heading))
        first = self.sections[0]
        if first.heading is None:
            self.sections[0] = Section(first.text, heading=next(iter(self.page_titles), None))
        return [Section(_strip_lines(s.text), s.page, s.heading) for s in self.sections]


def _strip_lines(text: str) -> str:
    return "\n".join(line.strip(" ") for line in text.split("\n"))


def html_sections(markup: str) -> list[Section]:
    parser = _HTMLText()
    parser.feed(markup)
    return parser.finish()


def extract_html(data: bytes) -> list[Section]:
    return html_sections(decode_text(data, "html"))


def extract_eml(data: bytes) -> list[Section]:
    """The subject is the heading; From, To and Date lead the text, then the plain body, or
    the text of the HTML one. Attachments are not read."""
    message = email.message_from_bytes(data, policy=policy.default)
    if not isinstance(message, EmailMessage) or not message.keys():
        raise _mismatch("eml")
    header = "\n".join(
        f"{field}: {message[field]}" for field in ("From", "To", "Date") if message[field]
    )
    body_part = message.get_body(preferencelist=("plain", "html"))
    body = _part_text(body_part) if isinstance(body_part, EmailMessage) else ""
    if body_part is not None and body_part.get_content_subtype() == "html":
        body = "\n\n".join(section.text for section in html_sections(body))
    return [
        Section(
            f"{header}\n\n{body}" if body.strip() else "", heading=str(message["Subject"] or "")
        )
    ]


def _part_text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError):  # an unknown or lying charset parameter
        payload = part.get_payload(decode=True)
        return decode_text(payload, "eml") if isinstance(payload, bytes) else ""


# --- pdf ---------------------------------------------------------------------------------


def extract_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    if b"%PDF-" not in data[:1024]:
        raise _mismatch("pdf")
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


# --- office (zip) formats ----------------------------------------------------------------


def _open_zip(data: bytes, kind: str) -> io.BytesIO:
    """`data` as a file, once it is known to be a `kind` container of bounded unpacked size."""
    if data.startswith(OLE2_MAGIC):
        raise ExtractionError(
            f"the file is an old binary Office file or a password-protected one, not "
            f"{LABELS[kind]}; open it in Office and save it as .{kind} without a password"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise _mismatch(kind)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    if ZIP_PARTS[kind] not in {member.filename for member in members}:
        raise _mismatch(kind)
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

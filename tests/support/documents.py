"""Real, small documents as bytes, built from given text, for extraction tests and benchmarks.

pdf(["page one", "page two"])            a hand-written PDF, Helvetica, one page per string
encrypted_pdf() / image_only_pdf()       the PDFs extraction must refuse
docx(["Intro", "Text."], headings={0})   python-docx; the paragraphs at `headings` are
                                         styled "Heading 1"
pptx([("Title", "Body")])                python-pptx, one "Title and Content" slide each
xlsx({"Sheet": [["a", 1]]})              openpyxl, one worksheet per entry
eml("Subject", "Body")                   stdlib email, text/plain (or text/html)
html([("Heading", "Paragraph")])         h1 + p per pair, with a script and a style that
                                         extraction must leave out
srt(["first line", "second line"])       one numbered, timed cue per line
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from email.message import EmailMessage
from html import escape

# --- pdf ---------------------------------------------------------------------------------


def pdf(pages: Sequence[str]) -> bytes:
    """A PDF with one page per string; each line of a string is a line of 12 pt Helvetica.

    Text is drawn with `Tj` and `T*` (next line) in WinAnsi encoding, so it must be Latin-1;
    backslashes and parentheses are escaped as PDF string syntax requires."""
    contents = []
    for text in pages:
        lines = b" T* ".join(b"(" + _pdf_string(line) + b") Tj" for line in text.split("\n"))
        contents.append(b"BT /F1 12 Tf 14 TL 72 720 Td " + lines + b" ET")
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    return _pdf_file(contents, b"/Font << /F1 " + _ref(_FIRST_PAGE_OBJECT - 1) + b" >>", font)


def image_only_pdf() -> bytes:
    """A one-page PDF that draws a 1x1 grey image and holds no text, as a scan would."""
    image = _pdf_stream(
        b"/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8",
        b"\x80",
    )
    resources = b"/XObject << /Im1 " + _ref(_FIRST_PAGE_OBJECT - 1) + b" >>"
    return _pdf_file([b"q 200 0 0 200 72 500 cm /Im1 Do Q"], resources, image)


def encrypted_pdf(text: str = "secret text", user_password: str = "hunter2") -> bytes:
    """`pdf([text])` encrypted by pypdf (RC4, which pypdf does without the optional
    `cryptography` package). With an empty `user_password` anyone may open it: only the
    owner password, which restricts editing and printing, is set."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf([text]))))
    writer.encrypt(user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# Objects: 1 catalog, 2 page tree, 3 the shared resource (font or image), then for each page
# its page object and its content stream.
_FIRST_PAGE_OBJECT = 4


def _pdf_file(contents: Sequence[bytes], resources: bytes, shared: bytes) -> bytes:
    page_numbers = [_FIRST_PAGE_OBJECT + 2 * index for index in range(len(contents))]
    kids = b" ".join(_ref(number) for number in page_numbers)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(contents),
        shared,
    ]
    for number, content in zip(page_numbers, contents, strict=True):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << "
            + resources
            + b" >> /Contents "
            + _ref(number + 1)
            + b" >>"
        )
        objects.append(_pdf_stream(b"", content))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _pdf_stream(entries: bytes, data: bytes) -> bytes:
    return b"<< " + entries + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return escaped.encode("cp1252")


def _ref(number: int) -> bytes:
    return b"%d 0 R" % number


# --- office ------------------------------------------------------------------------------


def docx(
    paragraphs: Sequence[str],
    headings: Collection[int] = (),
    table: Sequence[Sequence[str]] = (),
) -> bytes:
    """A Word document of `paragraphs`; those whose index is in `headings` are "Heading 1".
    A `table`, when given, follows the paragraphs."""
    import docx as python_docx

    document = python_docx.Document()
    for index, text in enumerate(paragraphs):
        document.add_paragraph(text, style="Heading 1" if index in headings else None)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=False):
                cell.text = value
    return _saved(document)


def pptx(slides: Sequence[tuple[str, str]]) -> bytes:
    """A presentation with one "Title and Content" slide per (title, body) pair."""
    from pptx import Presentation

    presentation = Presentation()
    layout = presentation.slide_layouts[1]
    for title, body in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    return _saved(presentation)


def xlsx(sheets: Mapping[str, Sequence[Sequence[object]]]) -> bytes:
    """A workbook with one worksheet per name, holding its rows of values."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    return _saved(workbook)


def _saved(document: object) -> bytes:
    out = io.BytesIO()
    document.save(out)  # type: ignore[attr-defined]
    return out.getvalue()


# --- text formats ------------------------------------------------------------------------


def eml(subject: str, body: str, *, html: bool = False, sender: str = "ann@example.com") -> bytes:
    """An email message with one text part: `body` as text/plain, or as text/html."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = "bob@example.com"
    message.set_content(body, subtype="html" if html else "plain")
    return message.as_bytes()


def html(sections: Sequence[tuple[str, str]], *, title: str = "A page") -> bytes:
    """An HTML page with an <h1> and a <p> per (heading, paragraph) pair. Its <head> holds a
    style and a script, its body another script: text extraction must drop all three."""
    body = "".join(f"<h1>{escape(h)}</h1>\n<p>{escape(p)}</p>\n" for h, p in sections)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>p {{ color: red }}</style>"
        "<script>var hidden = 'script text';</script></head>\n"
        f"<body>\n{body}<script>document.write('more script text')</script>\n</body></html>\n"
    ).encode()


def srt(lines: Sequence[str]) -> bytes:
    """Subtitles with one cue per line, two seconds each."""
    cues = []
    for index, line in enumerate(lines):
        start, end = _timestamp(2 * index), _timestamp(2 * index + 2)
        cues.append(f"{index + 1}\n{start} --> {end}\n{line}\n")
    return "\n".join(cues).encode()


def _timestamp(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d},000"

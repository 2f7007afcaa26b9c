"""Extraction: each format's text comes out with its pages and headings; each failure is an
ExtractionError whose reason tells the uploader what to do."""

import io
import logging
import pickle
import zipfile

import pytest

from inkstand.knowledge import office
from inkstand.knowledge.extract import Document, ExtractionError, Section, extract
from tests.support import documents


def failure(data: bytes, name: str) -> str:
    with pytest.raises(ExtractionError) as caught:
        extract(data, name)
    return caught.value.reason


def headings(document: Document) -> list[str | None]:
    return [section.heading for section in document.sections]


# --- pdf ---------------------------------------------------------------------------------


def test_pdf_gives_one_section_per_page():
    data = documents.pdf(["Alpha (first) page\nwith a back\\slash", "Beta page"])
    document = extract(data, "report.pdf")
    assert document.type == "pdf"
    assert [section.page for section in document.sections] == [1, 2]
    first, second = (section.text for section in document.sections)
    assert "Alpha (first) page" in first and "back\\slash" in first
    assert "Beta page" in second


def test_pdf_keeps_the_page_number_of_a_page_after_a_blank_one():
    document = extract(documents.pdf(["", "Late text"]), "a.pdf")
    assert document.sections == (Section("Late text", page=2),)


def test_encrypted_pdf_asks_for_a_copy_without_a_password():
    reason = failure(documents.encrypted_pdf(), "secret.pdf")
    assert reason == "the PDF is encrypted; upload it without a password"


def test_pdf_with_only_an_owner_password_is_read():
    document = extract(documents.encrypted_pdf("Open to all", user_password=""), "a.pdf")
    assert document.sections == (Section("Open to all", page=1),)


def test_image_only_pdf_says_it_needs_ocr():
    reason = failure(documents.image_only_pdf(), "scan.pdf")
    assert "only images" in reason and "OCR" in reason


def test_a_pdf_name_on_other_content_names_the_type():
    assert "not a PDF" in failure(b"Hello, I am plain text.", "report.pdf")


def test_damaged_pdf_says_it_may_be_damaged():
    data = documents.pdf(["Some text"])
    reason = failure(data[: len(data) // 2], "cut.pdf")
    assert "could not be read as a PDF" in reason and "damaged" in reason


# --- office ------------------------------------------------------------------------------


def test_docx_heading_styles_start_sections():
    data = documents.docx(
        ["Preface words.", "Method", "We measured twice.", "Results", "It worked."],
        headings={1, 3},
    )
    document = extract(data, "paper.docx")
    assert headings(document) == [None, "Method", "Results"]
    assert document.sections[1].text == "Method\n\nWe measured twice."
    assert "It worked." in document.sections[2].text


def test_docx_tables_become_rows_of_text():
    data = documents.docx(["Prices"], table=[["item", "price"], ["tea", "3"]])
    assert "item | price\ntea | 3" in extract(data, "a.docx").sections[0].text


def test_pptx_gives_one_section_per_slide_under_its_title():
    data = documents.pptx([("Quarterly plan", "Hire two people"), ("Risks", "Budget cuts")])
    document = extract(data, "deck.pptx")
    assert headings(document) == ["Quarterly plan", "Risks"]
    assert [section.page for section in document.sections] == [1, 2]
    assert "Hire two people" in document.sections[0].text
    assert "Budget cuts" in document.sections[1].text


def test_xlsx_gives_one_section_per_sheet_with_tab_separated_rows():
    data = documents.xlsx(
        {
            "Prices": [["item", "price"], ["tea", 3.0], [None, None], ["cake", 2.5]],
            "Notes": [["ok"]],
        }
    )
    document = extract(data, "book.xlsx")
    assert headings(document) == ["Prices", "Notes"]
    assert [section.page for section in document.sections] == [1, 2]
    assert document.sections[0].text == "item\tprice\ntea\t3\ncake\t2.5"


def test_xlsx_reading_stops_at_the_row_cap_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setattr(office, "MAX_SHEET_ROWS", 3)
    rows = [[f"row {number}"] for number in range(10)]
    with caplog.at_level(logging.INFO, logger="inkstand.knowledge"):
        document = extract(documents.xlsx({"Big": rows}), "big.xlsx")
    assert document.sections[0].text == "row 0\nrow 1\nrow 2"
    assert "the rest is not read" in caplog.text


@pytest.mark.parametrize("kind", ["docx", "pptx", "xlsx"])
def test_an_office_name_on_other_content_names_the_type(kind):
    label = {"docx": "Word document", "pptx": "PowerPoint", "xlsx": "Excel workbook"}[kind]
    assert label in failure(b"plain words, not a zip", f"a.{kind}")
    other = documents.docx(["x"]) if kind != "docx" else documents.xlsx({"S": [["x"]]})
    assert label in failure(other, f"a.{kind}")


def test_an_old_binary_office_file_is_asked_for_in_the_new_format():
    ole2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    assert "save it as .docx" in failure(ole2, "old.docx")


def test_a_zip_that_unpacks_too_large_is_refused_before_parsing(monkeypatch):
    monkeypatch.setattr(office, "MAX_UNCOMPRESSED_BYTES", 10_000)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w/>")
        archive.writestr("padding.bin", bytes(50_000))
    assert "over Inkstand's limit" in failure(out.getvalue(), "bomb.docx")


# --- text formats ------------------------------------------------------------------------


def test_md_headings_start_sections_but_not_inside_code_fences():
    text = "Intro line.\n# Setup\nRun it.\n```\n# a shell comment\n```\n## Use ##\nCall it."
    document = extract(text.encode(), "guide.md")
    assert headings(document) == [None, "Setup", "Use"]
    assert "# a shell comment" in document.sections[1].text


def test_html_drops_scripts_and_styles_and_h_tags_start_sections():
    data = documents.html([("Tea", "Green & black."), ("Cake", "Sponge.")], title="Menu")
    document = extract(data, "menu.html")
    text = "\n".join(section.text for section in document.sections)
    assert headings(document) == ["Tea", "Cake"]
    assert "Green & black." in text and "Sponge." in text
    assert "script text" not in text and "color" not in text


def test_html_blocks_break_lines_and_the_title_heads_text_before_any_heading():
    markup = "<title>Page</title><body><div>one</div><div>two<br>three</div><li>four</li>"
    document = extract(markup.encode(), "page.htm")
    assert document.sections == (Section("one\n\ntwo\nthree\n\nfour", heading="Page"),)


def test_eml_has_the_subject_as_heading_and_the_plain_body():
    document = extract(documents.eml("Lunch on Friday", "Shall we meet at noon?"), "mail.eml")
    (section,) = document.sections
    assert section.heading == "Lunch on Friday"
    assert "Shall we meet at noon?" in section.text and "From: ann@example.com" in section.text


def test_eml_with_only_an_html_body_gives_its_text():
    data = documents.eml("News", "<p>Big <b>news</b> today.</p><script>x()</script>", html=True)
    (section,) = extract(data, "news.eml").sections
    assert "Big news today." in section.text and "x()" not in section.text


def test_srt_keeps_only_the_spoken_lines():
    data = documents.srt(["Hello <i>there</i>.", "General Kenobi."])
    (section,) = extract(data, "film.srt").sections
    assert section.text == "Hello there.\nGeneral Kenobi."


def test_json_gives_a_line_per_value_with_its_path():
    data = b'{"shop": {"name": "Tea Corner", "open": true, "tags": ["tea", null]}, "n": 2}'
    (section,) = extract(data, "shop.json").sections
    assert section.text == "shop.name: Tea Corner\nshop.open: true\nshop.tags[0]: tea\n\nn: 2"


def test_invalid_json_says_where_it_breaks():
    assert "not valid JSON" in failure(b'{"a": ', "bad.json")


def test_csv_rows_become_lines_whatever_the_delimiter():
    data = b'name;note\nAnn;"likes; tea"\nBob;"two\nlines"\n'
    (section,) = extract(data, "people.csv").sections
    assert section.text.split("\n")[:2] == ["name\tnote", "Ann\tlikes; tea"]


@pytest.mark.parametrize(
    "data",
    [
        "Le café était très bon, à bientôt.".encode("cp1252"),
        "\ufeffLe café était très bon, à bientôt.".encode(),
        "\ufeffLe café était très bon, à bientôt.".encode("utf-16-le"),
    ],
    ids=["windows-1252", "utf-8-bom", "utf-16-bom"],
)
def test_text_is_decoded_from_its_encoding(data):
    (section,) = extract(data, "note.txt").sections
    assert section.text == "Le café était très bon, à bientôt."


def test_a_stray_byte_in_utf8_text_does_not_turn_it_into_mojibake():
    data = "Le café était très bon, à bientôt.\n".encode() * 20 + b"\xff"
    (section,) = extract(data, "note.txt").sections
    assert section.text.startswith("Le café était") and section.text.endswith("\ufffd")


def test_binary_content_in_a_text_type_is_refused():
    reason = failure(bytes(range(256)) * 4, "data.txt")
    assert "not text" in reason and "UTF-8" in reason


def test_srt_without_timings_names_the_type():
    assert "not an SRT subtitle file" in failure(b"just words", "film.srt")


# --- any type ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b" \n\t ", b"<p> </p>"], ids=["empty", "blank", "no-text"])
def test_a_file_without_text_says_so(data):
    assert failure(data, "empty.html") == "the file holds no text"


def test_a_docx_without_text_says_so():
    assert failure(documents.docx([""]), "blank.docx") == "the file holds no text"


def test_an_unsupported_type_lists_the_supported_ones():
    reason = failure(b"MZ...", "tool.exe")
    assert "'tool.exe'" in reason and "pdf" in reason and "docx" in reason


def test_extraction_error_survives_pickling():
    # Ingestion extracts in a worker process; the error comes back pickled.
    error = pickle.loads(pickle.dumps(ExtractionError("the file holds no text")))
    assert isinstance(error, ExtractionError) and error.reason == "the file holds no text"

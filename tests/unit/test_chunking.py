"""Chunking: chunks follow the document's structure, fit `max_chars` and point back into the
full text; a property test holds those invariants for any document."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inkstand.knowledge.chunking import Chunk, chunk, full_text
from inkstand.knowledge.extract import Document, Section, extract
from tests.support import documents


def bodies(document: Document, chunks: list[Chunk]) -> list[str]:
    text = full_text(document)
    return [text[piece.start : piece.end] for piece in chunks]


def test_full_text_joins_sections_with_a_blank_line():
    document = Document("txt", (Section("one"), Section("two")))
    assert full_text(document) == "one\n\ntwo"


def test_small_paragraphs_of_a_section_share_a_chunk():
    document = Document("txt", (Section("First.\n\nSecond.\n\nThird."),))
    (only,) = chunk(document, max_chars=100)
    assert only == Chunk("First.\n\nSecond.\n\nThird.", None, 0, 23)


def test_a_long_section_is_cut_at_paragraph_breaks_first():
    text = "Tea is good. It warms.\n\nCake is sweet. It fills."
    assert bodies(
        Document("txt", (Section(text),)), chunk(Document("txt", (Section(text),)), max_chars=30)
    ) == [
        "Tea is good. It warms.",
        "Cake is sweet. It fills.",
    ]


def test_a_long_paragraph_is_cut_at_sentence_ends_then_whitespace():
    document = Document("txt", (Section("One two three. Four five six. Sevenandeightandnine ten"),))
    assert bodies(document, chunk(document, max_chars=16)) == [
        "One two three.",
        "Four five six.",
        "Sevenandeightand",
        "nine ten",
    ]


def test_chunks_never_cross_pages():
    data = documents.pdf(["Page one text.", "Page two text."])
    chunks = chunk(extract(data, "a.pdf"), max_chars=1000)
    assert [(piece.text, piece.page) for piece in chunks] == [
        ("Page one text.", 1),
        ("Page two text.", 2),
    ]


def test_the_heading_leads_chunks_whose_first_line_lacks_it():
    section = Section("Method\n\nWe measured the length twice.", heading="Method")
    document = Document("docx", (Section("Preface."), section))
    first, second, third = chunk(document, max_chars=20)
    assert first.text == "Preface."
    assert second == Chunk("Method\n\nWe measured", None, 10, 29)
    assert third.text == "Method\nthe length twice."
    assert full_text(document)[third.start : third.end] == "the length twice."


def test_max_chars_must_be_positive():
    with pytest.raises(ValueError):
        chunk(Document("txt", (Section("x"),)), max_chars=0)


text = st.text(alphabet="ab .!?”\n\t\u00a0\u3002", max_size=300)
sections = st.builds(
    Section,
    text=text,
    page=st.none() | st.integers(1, 9),
    heading=st.none() | st.text(alphabet="Hab .", min_size=1, max_size=8),
)


@given(st.lists(sections, max_size=5), st.integers(1, 60))
def test_chunks_fit_point_into_the_full_text_and_cover_it_in_order(section_list, max_chars):
    document = Document("txt", tuple(section_list))
    whole = full_text(document)
    ranges, offset = [], 0
    for section in section_list:
        ranges.append((offset, offset + len(section.text), section))
        offset += len(section.text) + 2
    covered = set()
    previous_end = 0
    for piece in chunk(document, max_chars=max_chars):
        body = whole[piece.start : piece.end]
        assert body and body == body.strip() and len(body) <= max_chars
        assert piece.start >= previous_end
        previous_end = piece.end
        (section,) = [s for start, end, s in ranges if start <= piece.start and piece.end <= end]
        assert piece.page == section.page
        assert piece.text in (body, f"{section.heading}\n{body}")
        covered.update(range(piece.start, piece.end))
    assert all(char.isspace() or index in covered for index, char in enumerate(whole))

"""Text-based formats: plain text, Markdown, CSV, SRT subtitles, JSON, HTML and email.

    txt   the text as it is                    md    ATX (`#`) headings start sections
    csv   stdlib csv, rows as tab-joined lines srt   the spoken lines, no numbers or timings
    json  every key path and scalar as "path: value", a paragraph per top-level entry
    html  stdlib html.parser, h1-h6 start sections; scripts, styles and the like left out
    eml   stdlib email, the subject as heading; the plain body, or the text of the HTML one

Bytes become text by `decode_text`: a BOM's encoding, else UTF-8, else a detected one.
"""

from __future__ import annotations

import csv
import email
import io
import json
import logging
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser

from inkstand.knowledge.document import ExtractionError, Section, mismatch

log = logging.getLogger("inkstand.knowledge")

# --- plain text and text-based data ------------------------------------------------------


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
        raise mismatch("srt")
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
        raise mismatch("eml")
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

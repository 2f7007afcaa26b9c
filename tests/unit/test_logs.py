"""The server's log formatter: one record is one line, whatever its fields hold; a traceback
it appends keeps its own lines."""

import io
import logging
import sys

import pytest

from inkstand.logs import EscapingFormatter, configure_logging, escape_control

FORGED = "/v1/chat\n2026-01-01 00:00:00 INFO inkstand.access: GET /admin 200\r\x1b[2J\x00\u2028"


def formatted(record_message: str, *args, exc_info=None) -> str:
    record = logging.LogRecord("inkstand.access", logging.INFO, __file__, 1, record_message,
                               args, exc_info)  # fmt: skip
    return EscapingFormatter("%(name)s: %(message)s").format(record)


def test_control_characters_in_a_field_are_escaped_onto_one_line():
    line = formatted("%s %s %d", "GET", FORGED, 200)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert line == (
        "inkstand.access: GET /v1/chat\\n2026-01-01 00:00:00 INFO inkstand.access: "
        "GET /admin 200\\r\\x1b[2J\\x00\\u2028 200"
    )


@pytest.mark.parametrize("char", [chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B, 0x2028)])
def test_every_control_character_is_escaped(char):
    escaped = escape_control(f"a{char}b")
    assert escaped.startswith("a\\") and escaped.endswith("b") and escaped.isprintable()


def test_printable_text_is_unchanged():
    text = "GET /v1/chat 200 12.5ms key=key_0123 é ü 漢字 \\n"
    assert escape_control(text) == text


def test_a_traceback_stays_multi_line_with_its_lines_escaped():
    try:
        raise ValueError("bad\x1b[31m value")
    except ValueError:
        text = formatted("failed on %s", "/x\ny", exc_info=sys.exc_info())
    first, *trace = text.split("\n")
    assert first == "inkstand.access: failed on /x\\ny"
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == "ValueError: bad\\x1b[31m value"


def test_the_server_logging_routes_every_logger_through_the_formatter():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", stream)
        logging.getLogger("uvicorn.error").warning("bad request %s", "x\ny")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().rstrip("\n").endswith("uvicorn.error: bad request x\\ny")

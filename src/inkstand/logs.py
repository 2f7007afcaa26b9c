"""The server's logging: one line per record, with control characters escaped.

A request path may carry `%0A` or `%1b`, which the HTTP layer decodes into a real newline or
escape in `scope["path"]`; logged as is, it would forge log lines or drive a terminal. So the
formatter escapes every control character in a record's line (`\\n` becomes the two
characters `\\` `n`, ESC becomes `\\x1b`), whoever logged it: our code, uvicorn or a
library. A traceback the formatter appends keeps its lines.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_table() -> dict[int, str]:
    # C0 controls, DEL, C1 controls (NEL among them) and Unicode's line and paragraph
    # separators: every character a terminal or a log reader may take as a line break or a
    # command.
    codes = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
    table = {}
    for code in codes:
        char = chr(code)
        if char in _NAMED:
            table[code] = _NAMED[char]
        elif code <= 0xFF:
            table[code] = f"\\x{code:02x}"
        else:
            table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _escape_table()


def escape_control(text: str) -> str:
    """`text` with every control character written as a Python-style escape."""
    return text.translate(_ESCAPES)


class EscapingFormatter(logging.Formatter):
    """Formats a record's line with control characters escaped; tracebacks stay multi-line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return _escape_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


def _escape_lines(text: str) -> str:
    """Escape control characters within each line of a traceback, keeping its line breaks."""
    return "\n".join(escape_control(line) for line in text.split("\n"))


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) through the escaping formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EscapingFormatter(LINE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every upstream request at INFO; Inkstand logs what matters about them.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))

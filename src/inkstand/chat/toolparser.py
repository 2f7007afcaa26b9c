"""Incremental parser for tool calls in generated text, fed one fragment at a time.

The format (`chat/toolformat.py`):

    optional text<tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`feed(text)` returns events as soon as they are certain: `Text` (content), `CallStart`
(the call's name, once it is complete), `Arguments` (fragments of the arguments' JSON text,
as they arrive) and `CallEnd`. Text that may be the start of the opening marker is held
back until it is not. The concatenated result is the same under every split of the input
(tests/unit/test_toolparser.py checks that with Hypothesis).

Output that is not a well-formed call (possible only where no grammar constrains it) is
content: an opening marker followed by something else is text. Whitespace after a call is
dropped unless more content follows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    name: str


@dataclass(frozen=True)
class Arguments:
    index: int
    text: str


@dataclass(frozen=True)
class CallEnd:
    index: int


ToolEvent = Text | CallStart | Arguments | CallEnd


class Match(Enum):
    FAIL = 0
    PREFIX = 1  # the text so far could still match
    DONE = 2


WS = object()  # any run of whitespace
STRING = object()  # a JSON string, captured
HEAD = (WS, "{", WS, '"name"', WS, ":", WS, STRING, WS, ",", WS, '"arguments"', WS, ":")
TAIL = (WS, "}", WS, CLOSE)


def match_steps(text: str, steps: tuple) -> tuple[Match, int, list[str]]:
    """Match `steps` (literals, `WS`, `STRING`) at the start of `text`: status, end, captures."""
    at, captures = 0, list[str]()
    for step in steps:
        if step is WS:
            while at < len(text) and text[at].isspace():
                at += 1
            continue
        if at == len(text):
            return Match.PREFIX, at, captures
        if step is STRING:
            end = _string_end(text, at)
            if end is None:
                return (Match.PREFIX if text[at] == '"' else Match.FAIL), at, captures
            captures.append(text[at:end])
            at = end
            continue
        part = text[at : at + len(step)]
        if not step.startswith(part):
            return Match.FAIL, at, captures
        if len(part) < len(step):
            return Match.PREFIX, len(text), captures
        at += len(step)
    return Match.DONE, at, captures


def _string_end(text: str, at: int) -> int | None:
    """The end of the JSON string starting at `at`, or None if it is not (yet) complete."""
    if text[at] != '"':
        return None
    i = at + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return None


class _ValueScanner:
    """Finds where one JSON value ends, one character at a time (after leading whitespace)."""

    def __init__(self) -> None:
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def take(self, char: str) -> bool:
        """Whether `char` belongs to the value; `done` once the value is complete."""
        if not self.started:
            if char.isspace():
                return False
            self.started = True
        elif self.depth == 0 and not self.in_string and char in ",}] \t\r\n":
            self.done = True  # the end of a bare scalar
            return False
        self._advance(char)
        return True

    def _advance(self, char: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                self.done = self.depth == 0
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            self.done = self.depth <= 0


class ToolCallParser:
    def __init__(self) -> None:
        self._state = "text"
        self._pending = ""
        self._held_space = ""  # whitespace after a call, emitted only if text follows
        self._scanner = _ValueScanner()
        self.calls = 0

    def feed(self, text: str) -> list[ToolEvent]:
        self._pending += text
        events: list[ToolEvent] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> list[ToolEvent]:
        """Events for whatever is left when generation ends."""
        events: list[ToolEvent] = []
        if self._state == "text":
            self._emit_text(self._pending, events, final=True)
        elif self._state == "head":
            self._emit_text(OPEN + self._pending, events, final=True)
        else:  # cut off inside a call
            events.append(CallEnd(self.calls - 1))
        self._pending = ""
        self._state = "text"
        return events

    def _step(self, events: list[ToolEvent]) -> bool:
        """Consume what can be decided now; True while progress is possible."""
        if self._state == "text":
            return self._step_text(events)
        if self._state == "head":
            return self._step_head(events)
        if self._state == "arguments":
            return self._step_arguments(events)
        return self._step_tail(events)

    def _step_text(self, events: list[ToolEvent]) -> bool:
        at = self._pending.find(OPEN)
        if at >= 0:
            self._emit_text(self._pending[:at], events)
            self._pending = self._pending[at + len(OPEN) :]
            self._state = "head"
            return True
        keep = _partial_suffix(self._pending, OPEN)
        self._emit_text(self._pending[: len(self._pending) - keep], events)
        self._pending = self._pending[len(self._pending) - keep :]
        return False

    def _step_head(self, events: list[ToolEvent]) -> bool:
        status, end, captures = match_steps(self._pending, HEAD)
        if status is Match.PREFIX:
            return False
        name = _json_string(captures[0]) if status is Match.DONE else None
        if name is None:  # not a call after all: the marker was text
            self._emit_text(OPEN, events)
            self._state = "text"
            return True
        events.append(CallStart(self.calls, name))
        self.calls += 1
        self._pending = self._pending[end:]
        self._scanner = _ValueScanner()
        self._state = "arguments"
        return True

    def _step_arguments(self, events: list[ToolEvent]) -> bool:
        scanner, taken, used = self._scanner, [], 0
        for char in self._pending:
            if scanner.take(char):
                taken.append(char)
            elif scanner.done:
                break  # the delimiter after a bare scalar belongs to the tail
            used += 1
            if scanner.done:
                break
        if taken:
            events.append(Arguments(self.calls - 1, "".join(taken)))
        self._pending = self._pending[used:]
        if scanner.done:
            self._state = "tail"
        return scanner.done

    def _step_tail(self, events: list[ToolEvent]) -> bool:
        status, end, _ = match_steps(self._pending, TAIL)
        if status is Match.PREFIX:
            return False
        events.append(CallEnd(self.calls - 1))
        if status is Match.DONE:
            self._pending = self._pending[end:]
        self._state = "text"  # a malformed tail is text
        return True

    def _emit_text(self, text: str, events: list[ToolEvent], *, final: bool = False) -> None:
        if self.calls:  # after a call, trailing whitespace waits for more text
            text = self._held_space + text
            body = text.rstrip()
            self._held_space = "" if final else text[len(body) :]
            text = body
        if text:
            events.append(Text(text))


def _json_string(text: str) -> str | None:
    try:
        return json.loads(text)
    except ValueError:  # e.g. an invalid escape, where no grammar constrained the output
        return None


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper start of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0

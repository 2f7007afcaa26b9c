"""A forced tool call written as JSON content (`{"name": ..., "arguments": {...}}`, see
`translate.forced_call_body`) read back into call fragments as it streams.

The head (`{"name": "x", "arguments": `) gives the call's name; the arguments object then
streams through as it arrives, its end found by counting brackets outside strings; what
follows it (the outer `}`) is dropped. An answer that never shows the head is parsed whole
at the end; one that holds no call at all is an error, never an empty success.
"""

from __future__ import annotations

import json
import re
import uuid

from inkstand.engine.types import CallEvent
from inkstand.errors import EngineError

HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


class JsonCallReader:
    def __init__(self, index: int, names: tuple[str, ...] = ()) -> None:
        self.index = index
        self.names = names  # the functions the call may name (empty: any)
        self.head = ""  # text before the arguments began
        self.started = False
        self.done = False
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> list[CallEvent]:
        if self.done:
            return []
        if self.started:
            return self._arguments(text)
        self.head += text
        match = HEAD.match(self.head)
        if match is None:
            return []
        self.started = True
        name = self._offered(json.loads(match.group(1)))
        rest = self.head[match.end() :]
        first = CallEvent(0, id=_call_id(), name=name, index=self.index)
        return [first, *self._arguments(rest)]

    def _arguments(self, text: str) -> list[CallEvent]:
        end = self._end_of_value(text)
        piece = text if end is None else text[:end]
        if end is not None:
            self.done = True
        return [CallEvent(0, piece, index=self.index)] if piece else []

    def _end_of_value(self, text: str) -> int | None:
        """Where in `text` the arguments object ends (exclusive), if it does."""
        for i, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return None

    def finish(self) -> list[CallEvent]:
        """The call if the head never showed (parsed whole); an error if there is none."""
        if self.started:
            return []
        try:
            value = json.loads(self.head)
        except ValueError:
            value = None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("name"), str)
            or not isinstance(value.get("arguments"), dict)
        ):
            raise _no_call()
        arguments = json.dumps(value["arguments"], ensure_ascii=False)
        name = self._offered(value["name"])
        return [CallEvent(0, arguments, id=_call_id(), name=name, index=self.index)]

    def _offered(self, name: str) -> str:
        if self.names and name not in self.names:
            raise _no_call()
        return name


def _no_call() -> EngineError:
    return EngineError("The model's engine did not produce the tool call `tool_choice` requires.")


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"

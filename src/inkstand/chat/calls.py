"""Tool calls in generated text -> Writer's `message.tool_calls` and streamed fragments.

Both paths run the text through the same `ToolCallParser`, so a streamed answer and a
whole one carry the same calls. Ids are `call_` plus 24 hex digits, unique per call.
"""

from __future__ import annotations

import uuid

from inkstand.chat.chunks import ChoiceResult, ChunkFactory, tool_call_body
from inkstand.chat.toolparser import Arguments, CallStart, Text, ToolCallParser, ToolEvent


def extract_calls(choice: ChoiceResult) -> None:
    """Move the tool calls in a finished choice's text into `tool_calls`."""
    parser = ToolCallParser()
    events = parser.feed(choice.text) + parser.finish()
    choice.text = "".join(e.text for e in events if isinstance(e, Text))
    calls: list[dict] = []
    for event in events:
        if isinstance(event, CallStart):
            calls.append(tool_call_body(event.index, new_call_id(), event.name, ""))
        elif isinstance(event, Arguments):
            calls[event.index]["function"]["arguments"] += event.text
    if calls:
        choice.tool_calls = calls
        choice.finish_reason = finish_reason(choice.finish_reason, True)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def finish_reason(engine_reason: str, called: bool) -> str:
    """`tool_calls` when the model ended its turn with calls; a cut-off stays `length`."""
    return "tool_calls" if called and engine_reason == "stop" else engine_reason


class CallChunks:
    """One streamed choice's text through the tool-call parser, as Writer chunks."""

    def __init__(self, factory: ChunkFactory, index: int) -> None:
        self.factory = factory
        self.index = index
        self.parser = ToolCallParser()

    def feed(self, text: str, tokens: list | None) -> list[dict]:
        chunks = self._chunks(self.parser.feed(text))
        if tokens is not None:  # log-probabilities ride on a content chunk of their own
            chunks.append(self.factory.content(self.index, "", tokens))
        return chunks

    def finish(self) -> list[dict]:
        return self._chunks(self.parser.finish())

    def _chunks(self, events: list[ToolEvent]) -> list[dict]:
        out = []
        for event in events:
            if isinstance(event, Text):
                out.append(self.factory.content(self.index, event.text, None))
            elif isinstance(event, CallStart):
                call_id = new_call_id()
                out.append(self.factory.call_start(self.index, event.index, call_id, event.name))
            elif isinstance(event, Arguments):
                out.append(self.factory.call_arguments(self.index, event.index, event.text))
        return out

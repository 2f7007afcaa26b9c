"""Render Writer messages into a prompt with the model's own chat template.

Templates come from GGUF metadata, so they are untrusted: they run in Jinja2's immutable
sandbox. A model without a template gets ChatML.

Control tokens come only from the template. Every string a caller sent (message contents,
names, tool descriptions and schemas, call arguments, tool results) is text: where one
holds a control token's text (`<|im_end|>`), that text is swapped for a marker before the
template runs, and the rendered `Prompt` keeps it as a part to tokenize without special
parsing. Anyone who can put text in a conversation therefore cannot forge a turn.

Tools (`ToolPrompt`) and the tool loop's history (assistant `tool_calls`, `tool` results)
go through the template when it renders them in our tool format; otherwise the tool
format's generic prompt joins the system message, replayed calls become the assistant's
text and results become a user turn (`chat/toolformat.py`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inkstand.chat.toolformat import (
    Function,
    HermesFormat,
    ReplayedCall,
    arguments_value,
    tool_format,
)
from inkstand.errors import BadRequestError, ChatTemplateError
from inkstand.schemas.chat import ChatMessage, FunctionTool, TextFragment, Tool


@dataclass(frozen=True)
class ToolPrompt:
    """The functions to show the model, and whether (and which) a call is forced."""

    functions: tuple[Function, ...]
    forced: str | None = None  # "required", a function name, or None (the model decides)


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt as parts: (text, whether control-token text in it is a token)."""

    parts: tuple[tuple[str, bool], ...]

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)


class TextGuard:
    """Keeps control-token text in untrusted strings out of the template's reach.

    `text()` swaps each occurrence for a marker that no caller can forge (a random nonce
    between two private-use characters); `split()` cuts the rendered prompt at the markers
    into template text (special parsing on) and the swapped-out text (off).
    """

    def __init__(self, specials: tuple[str, ...]) -> None:
        ordered = sorted(specials, key=len, reverse=True)  # the longest match wins
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._nonce = secrets.token_hex(8)
        self._marker = re.compile(f"\ue000{self._nonce}:(\\d+)\ue001")
        self._found: list[str] = []

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(self._swap, value)

    def _swap(self, match: re.Match[str]) -> str:
        self._found.append(match.group())
        return f"\ue000{self._nonce}:{len(self._found) - 1}\ue001"

    def strings(self, value: Any) -> Any:
        """`value` with `text()` applied to every string inside it (dicts, lists)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.strings(k): self.strings(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.strings(v) for v in value]
        return value

    def split(self, rendered: str) -> Prompt:
        if not self._found:
            return Prompt(((rendered, True),))
        parts: list[tuple[str, bool]] = []
        at = 0
        for match in self._marker.finditer(rendered):
            parts.append((rendered[at : match.start()], True))
            parts.append((self._found[int(match.group(1))], False))
            at = match.end()
        parts.append((rendered[at:], True))
        return Prompt(tuple(part for part in parts if part[0]))


class TemplateRaisedError(Exception):
    """A chat template called `raise_exception`: the conversation breaks its rules."""


def _raise_exception(message: str) -> None:
    raise TemplateRaisedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # As Hugging Face renders templates: non-ASCII text stays as it is.
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, indent=indent, ensure_ascii=False
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from exc


def message_text(message: ChatMessage) -> str:
    """The text of a message; fragments are joined with newlines."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(f.text for f in message.content if isinstance(f, TextFragment))


def caller_text_size(messages: list[ChatMessage], tools: list[Tool] | None) -> int:
    """Characters of the caller's text a prompt will hold (the template adds its own):
    contents, names, replayed calls and function definitions, counted before any of it is
    rendered or parsed."""
    size = 0
    for message in messages:
        size += len(message_text(message)) + len(message.name or "")
        size += len(message.tool_call_id or "")
        for call in message.tool_calls or ():
            size += len(call.id) + len(call.function.name or "") + len(call.function.arguments)
    for tool in tools or ():
        if isinstance(tool, FunctionTool):
            function = tool.function
            size += len(function.name or "") + len(function.description or "")
            size += len(json.dumps(function.parameters, ensure_ascii=False))
    return size


def template_message(message: ChatMessage) -> dict[str, Any]:
    # Arguments as a mapping: templates written for Hugging Face's convention expect one.
    return wire_message(message, message_text(message), arguments_value)


def wire_message(
    message: ChatMessage, content: Any, arguments: Callable[[str], Any]
) -> dict[str, Any]:
    """`message` in the OpenAI / Hugging Face shape: `content` as given, each replayed
    call's arguments through `arguments`."""
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.function.name,
                    "arguments": arguments(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return out


def generic_messages(
    messages: list[ChatMessage], fmt: HermesFormat, tools: ToolPrompt | None
) -> list[dict[str, Any]]:
    """Messages for a template that knows nothing of tools: everything becomes text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            result = fmt.result_text(message.name, message_text(message))
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        elif message.role == "assistant" and message.tool_calls:
            calls = [
                ReplayedCall(c.function.name or "", c.function.arguments)
                for c in message.tool_calls
            ]
            text = "\n".join(t for t in (message_text(message), fmt.calls_text(calls)) if t)
            out.append({"role": "assistant", "content": text})
        else:
            out.append(template_message(message))
    if tools and tools.functions:
        _add_instructions(out, fmt.instructions(list(tools.functions), tools.forced))
    for entry in out:
        entry.pop("tool_results", None)
    return out


def _add_instructions(messages: list[dict[str, Any]], instructions: str) -> None:
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instructions}".lstrip()
    else:
        messages.insert(0, {"role": "system", "content": instructions})


def render_prompt(
    template: str | None,
    messages: list[ChatMessage],
    *,
    bos: str = "",
    eos: str = "",
    tools: ToolPrompt | None = None,
    specials: tuple[str, ...] = (),
) -> Prompt:
    """The prompt for `messages`; `specials` are the model's control-token texts, which
    the callers' strings may contain only as text."""
    compiled = _compile(template or CHATML)
    fmt = tool_format(template)
    extra: dict[str, Any] = {}
    if fmt.native(template):
        rendered = [template_message(m) for m in messages]
        if tools and tools.functions:
            extra["tools"] = [{"type": "function", "function": f.spec()} for f in tools.functions]
    else:
        rendered = generic_messages(messages, fmt, tools)
    guard = TextGuard(specials)
    try:
        text = compiled.render(
            messages=guard.strings(rendered),
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
            **guard.strings(extra),
        )
    except TemplateRaisedError as exc:
        raise BadRequestError(
            f"The conversation does not fit the model's chat format: {exc}"
        ) from exc
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template failed: {exc}") from exc
    return guard.split(text)


def turn_tail(template: str | None, *, bos: str = "", eos: str = "") -> str:
    """What the template writes between an assistant's answer and the next user message.

    For ChatML, "<|im_end|>\\n<|im_start|>user\\n". A conversation's next prompt repeats the
    answer and continues with this, so the engine can decode it ahead of time. Found by
    rendering a probe conversation; "" when the probe does not show it plainly (a template
    that rewrites, reorders or refuses the messages).
    """
    answer, question = "INKSTAND-ANSWER-PROBE", "INKSTAND-QUESTION-PROBE"
    probe = [
        ChatMessage(role="user", content="INKSTAND-FIRST-PROBE"),
        ChatMessage(role="assistant", content=answer),
        ChatMessage(role="user", content=question),
    ]
    try:
        text = render_prompt(template, probe, bos=bos, eos=eos).text
    except (BadRequestError, ChatTemplateError):
        return ""
    start, end = text.find(answer), text.find(question)
    if start < 0 or end < start:
        return ""
    return text[start + len(answer) : end]

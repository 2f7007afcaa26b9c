"""Render Writer messages into a prompt with the model's own chat template.

Templates come from GGUF metadata, so they are untrusted: they run in Jinja2's immutable
sandbox. A model without a template gets ChatML.

Tools (`ToolPrompt`) and the tool loop's history (assistant `tool_calls`, `tool` results)
go through the template when it renders them in our tool format; otherwise the tool
format's generic prompt joins the system message, replayed calls become the assistant's
text and results become a user turn (`chat/toolformat.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inkstand.chat.toolformat import Function, HermesFormat, ReplayedCall, tool_format
from inkstand.errors import BadRequestError, EngineError
from inkstand.schemas.chat import ChatMessage, TextFragment


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


class TemplateRaisedError(Exception):
    """A chat template called `raise_exception`: the conversation breaks its rules."""


def _raise_exception(message: str) -> None:
    raise TemplateRaisedError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise EngineError(f"the model's chat template does not compile: {exc}") from exc


def message_text(message: ChatMessage) -> str:
    """The text of a message; fragments are joined with newlines."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(f.text for f in message.content if isinstance(f, TextFragment))


def template_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message_text(message)}
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
                    "arguments": _arguments_value(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return out


def _arguments_value(arguments: str) -> Any:
    # Templates written for Hugging Face's convention expect arguments as a mapping.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


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
) -> str:
    compiled = _compile(template or CHATML)
    fmt = tool_format(template)
    extra: dict[str, Any] = {}
    if fmt.native(template):
        rendered = [template_message(m) for m in messages]
        if tools and tools.functions:
            extra["tools"] = [{"type": "function", "function": f.spec()} for f in tools.functions]
    else:
        rendered = generic_messages(messages, fmt, tools)
    try:
        return compiled.render(
            messages=rendered,
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
            **extra,
        )
    except TemplateRaisedError as exc:
        raise BadRequestError(
            f"The conversation does not fit the model's chat format: {exc}"
        ) from exc
    except TemplateError as exc:
        raise EngineError(f"the model's chat template failed: {exc}") from exc


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
        text = render_prompt(template, probe, bos=bos, eos=eos)
    except (BadRequestError, EngineError):
        return ""
    start, end = text.find(answer), text.find(question)
    if start < 0 or end < start:
        return ""
    return text[start + len(answer) : end]

"""Render Writer messages into a prompt with the model's own chat template.

Templates come from GGUF metadata, so they are untrusted: they run in Jinja2's immutable
sandbox. A model without a template gets ChatML.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inkstand.errors import BadRequestError, EngineError
from inkstand.schemas.chat import ChatMessage, TextFragment

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
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    return out


def render_prompt(
    template: str | None, messages: list[ChatMessage], *, bos: str = "", eos: str = ""
) -> str:
    compiled = _compile(template or CHATML)
    try:
        return compiled.render(
            messages=[template_message(m) for m in messages],
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
        )
    except TemplateRaisedError as exc:
        raise BadRequestError(
            f"The conversation does not fit the model's chat format: {exc}"
        ) from exc
    except TemplateError as exc:
        raise EngineError(f"the model's chat template failed: {exc}") from exc

"""Prompt rendering with the model's template, in Jinja2's sandbox."""

import pytest

from inkstand.chat.prompt import render_prompt
from inkstand.errors import BadRequestError
from inkstand.schemas.chat import ChatMessage


def msgs(*pairs):
    return [ChatMessage(role=r, content=c) for r, c in pairs]


def test_chatml_fallback_ends_with_the_generation_prompt():
    text = render_prompt(None, msgs(("system", "S"), ("user", "U")))
    assert (
        text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_text_fragments_are_joined():
    message = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    )
    assert "a\nb" in render_prompt(None, [message])


def test_template_exceptions_become_bad_requests():
    template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    with pytest.raises(BadRequestError, match="user first"):
        render_prompt(template, msgs(("assistant", "x")))


def test_templates_cannot_reach_python_internals():
    template = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(Exception):  # noqa: B017 - the sandbox refuses, whatever it raises
        render_prompt(template, msgs(("user", "x")))


def test_bos_and_eos_are_passed_to_the_template():
    assert (
        render_prompt("{{ bos_token }}|{{ eos_token }}", msgs(("user", "x")), bos="<s>", eos="</s>")
        == "<s>|</s>"
    )

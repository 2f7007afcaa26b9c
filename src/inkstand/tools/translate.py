"""Translation: the `translation` tool in `/v1/chat` and `POST /v1/translation`.

`palmyra-translate` is served by a configured translator (`translation_model`, a served
model id, local or upstream; the first model by default), reached through the catalog as
an alias, so key scopes and `/v1/models` treat it like any id. A translation is the
translator's normal generation from instructions this module writes:

- language codes are ISO-639-1, optionally with an ISO-3166 country (`es-MX`); anything
  else is a 400 naming the field and the value;
- a missing source language is detected from the text (`py3langid`); a missing target is
  read from the message ("... into French", "translate to de: ...") and is a 400 when the
  message names none;
- `formality`, `length_control` and `mask_profanity` become instructions (the model follows
  them as well as it can; languages without formality simply ignore it);
- the text translated is the latest user message, less a leading "Translate ... :"
  instruction when it has one.

The tool's answer is not streamed token by token (Writer's documented behaviour): one chunk
carries the whole translation, `translation_data` and `finish_reason: "tool_calls"`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import iso639

from inkstand.errors import BadRequestError

FINISH_REASON = "tool_calls"  # what Writer's examples report for the translation tool
CODE = re.compile(r"^([A-Za-z]{2})(?:[-_]([A-Za-z]{2}))?$")
INSTRUCTION = re.compile(r"^\s*(?:please\s+)?translate\b[^:\n]{0,80}:\s*", re.IGNORECASE)
TARGET_PHRASE = re.compile(r"\b(?:into|to|in)\s+([A-Za-z][A-Za-z-]{1,30})\b", re.IGNORECASE)


@dataclass(frozen=True)
class Translation:
    """What to translate and how."""

    text: str
    source: str  # a checked code, e.g. "en" or "es-MX"
    target: str
    formality: bool = False
    length_control: bool = False
    mask_profanity: bool = False

    def data(self) -> dict[str, str]:
        """Writer's `translation_data`."""
        return {
            "source_text": self.text,
            "source_language_code": self.source,
            "target_language_code": self.target,
        }


def check_code(field: str, value: str) -> str:
    """`value` as a language code (`xx` or `xx-YY`), or a 400 naming `field`."""
    match = CODE.match(value.strip())
    if match is None or not _is_language(match.group(1)):
        raise BadRequestError(
            f"`{field}` is `{value}`; it must be an ISO-639-1 language code, optionally with "
            "an ISO-3166 country code (`en`, `fr`, `es-MX`)."
        )
    language, country = match.group(1).lower(), match.group(2)
    return f"{language}-{country.upper()}" if country else language


def _is_language(part1: str) -> bool:
    try:
        return iso639.Language.from_part1(part1.lower()) is not None
    except iso639.LanguageNotFoundError:
        return False


def language_name(code: str) -> str:
    language, _, country = code.partition("-")
    name = iso639.Language.from_part1(language).name
    return f"{name} ({country})" if country else name


def detect_language(text: str) -> str:
    """The ISO-639-1 code of `text`'s language (py3langid's best guess)."""
    import py3langid

    code, _ = py3langid.classify(text)
    return str(code)


def target_from_message(message: str) -> str | None:
    """The target language the message names ("into French", "to de"), if any."""
    instructed = INSTRUCTION.match(message) is not None
    head = message.split(":", 1)[0] if instructed else message
    for match in TARGET_PHRASE.finditer(head):
        code = _code_of(match.group(1), codes=instructed)
        if code is not None:
            return code
    return None


def _code_of(word: str, *, codes: bool) -> str | None:
    """A language name's code; a bare code only inside a "Translate ... :" instruction
    (elsewhere "to it" or "to be" would read as Italian or Belarusian)."""
    if CODE.match(word):
        return check_code("language", word) if codes and _is_language(word[:2]) else None
    try:
        found = iso639.Language.from_name(word.capitalize())
    except iso639.LanguageNotFoundError:
        return None
    return found.part1 or None


def text_to_translate(message: str) -> str:
    """The message less a leading "Translate ... :" instruction."""
    stripped = INSTRUCTION.sub("", message, count=1)
    return stripped.strip() or message.strip()


def instructions(translation: Translation) -> str:
    """The translator's system message."""
    parts = [
        f"Translate the user's text from {language_name(translation.source)} to "
        f"{language_name(translation.target)}. Reply with the translation only, nothing else."
    ]
    parts.append("Use a formal register." if translation.formality else "Use an informal register.")
    if translation.length_control:
        parts.append("Keep the translation about as long as the original.")
    if translation.mask_profanity:
        parts.append("Replace any profane word with asterisks.")
    return " ".join(parts)


def translator_request(model: str, translation: Translation, max_tokens: int | None) -> dict:
    """The chat request body the translator answers."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": instructions(translation)},
            {"role": "user", "content": translation.text},
        ],
        "temperature": 0,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def whole_chunks(
    chunks: AsyncIterator[dict[str, Any]], data: dict[str, Any], finish_reason: str
) -> AsyncIterator[dict[str, Any]]:
    """A stream's chunks with the content held back: the opening chunk, then per choice one
    chunk with the whole text, `data` (`translation_data`) and `finish_reason` (`length`
    kept when `max_tokens` cut the text)."""
    held: dict[int, list[str]] = {}
    opening = True
    async for chunk in chunks:
        if opening or not chunk["choices"]:  # the opening chunk, or a usage-only chunk
            opening = False
            yield chunk
            continue
        choice = chunk["choices"][0]
        texts = held.setdefault(choice["index"], [])
        if choice["finish_reason"] is None:
            texts.append(choice["delta"].get("content") or "")
            continue
        text = "".join(texts)
        choice["delta"] = {"role": "assistant", "content": text, **data}
        choice["message"]["content"] = text
        if choice["finish_reason"] != "length":
            choice["finish_reason"] = finish_reason
        choice["logprobs"] = None
        yield chunk

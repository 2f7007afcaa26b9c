"""Translation end to end with the official SDK: the `translation` tool in a chat (whole and
streamed) and `client.translation.translate`, answered by the model behind
`palmyra-translate` (the first served model). The 135M model cannot really translate:
structure only (codes, `translation_data`, finish reason, one content chunk)."""

from __future__ import annotations

import pytest
import writerai

from .support import MODEL

pytestmark = pytest.mark.e2e

FRENCH = "Bonjour mes amis, comment allez-vous aujourd'hui ?"


def translation_tool(**codes) -> dict:
    function = {"model": "palmyra-translate", "formality": True, "length_control": False,
                "mask_profanity": False, **codes}  # fmt: skip
    return {"type": "translation", "function": function}


def test_the_tool_translates_whole_and_streamed(client):
    messages = [{"role": "user", "content": f"Translate into English: {FRENCH}"}]
    whole = client.chat.chat(
        model=MODEL, messages=messages, tools=[translation_tool()], max_tokens=24
    )
    choice = whole.choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    data = choice.message.translation_data
    assert (data.source_text, data.source_language_code, data.target_language_code) == (
        FRENCH,
        "fr",
        "en",
    )
    stream = client.chat.chat(
        model=MODEL,
        messages=messages,
        tools=[translation_tool(source_language_code="fr", target_language_code="en")],
        max_tokens=24,
        stream=True,
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) <= 1  # the translation comes whole, in one chunk
    last = chunks[-1].choices[0]
    assert last.finish_reason in ("tool_calls", "length")
    assert last.delta.translation_data.target_language_code == "en"


@pytest.mark.filterwarnings("ignore:Will be removed:DeprecationWarning")  # the SDK's own
def test_the_translation_api(client):
    translated = client.translation.translate(
        model="palmyra-translate",
        source_language_code="fr",
        target_language_code="en",
        text=FRENCH,
        formality=False,
        length_control=False,
        mask_profanity=False,
    )
    assert isinstance(translated.data, str)
    with pytest.raises(writerai.BadRequestError, match="target_language_code"):
        client.translation.translate(
            model="palmyra-translate",
            source_language_code="fr",
            target_language_code="klingon",
            text=FRENCH,
            formality=False,
            length_control=False,
            mask_profanity=False,
        )
    listed = [m.id for m in client.models.list().models]
    assert "palmyra-translate" in listed

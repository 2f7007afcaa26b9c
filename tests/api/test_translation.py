"""Translation in process on the fake engine: the `translation` tool in `/v1/chat` and
`POST /v1/translation`, answered by the model behind `palmyra-translate`. Structure only:
codes (given, detected, read from the message), `translation_data`, the finish reason, one
content chunk in a stream, and the 400s and 403s bad input gets."""

import json

import pytest

from inkstand.config import ConfigError, load_settings

from .conftest import api_client, build_app, chat_body, settings
from .test_chat import sse_events
from .test_gateway import error_of, with_key
from .test_graph_tool import RecordingBackend

REPLY = "Good morning, my friends."
FRENCH = "Bonjour mes amis, comment allez-vous aujourd'hui ?"


def translation_tool(**codes) -> dict:
    function = {
        "model": "palmyra-translate",
        "formality": True,
        "length_control": False,
        "mask_profanity": True,
        **codes,
    }
    return {"type": "translation", "function": function}


@pytest.fixture
def backend():
    return RecordingBackend(REPLY, n_ctx=2048, n_seq_max=2)


async def post(backend, path: str, body: dict, key: dict | None = None):
    app = build_app(backend, settings(aliases=(("palmyra-translate", "palmyra-x4"),)))
    async with api_client(app, lifespan=True) as client:
        headers = {}
        if key is not None:
            headers = with_key(client, app.state.keys.create("scoped", **key).secret)
        return await client.post(path, json=body, **headers)


def says(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_the_tool_translates_the_message_with_its_data(backend):
    body = chat_body(messages=says(FRENCH), tools=[translation_tool(target_language_code="en")])
    response = await post(backend, "/v1/chat", body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == REPLY
    assert choice["message"]["tool_calls"] is None
    assert choice["message"]["translation_data"] == {
        "source_text": FRENCH,
        "source_language_code": "fr",  # detected
        "target_language_code": "en",
    }
    prompt = next(text for text in backend.seen if FRENCH in text)
    assert "from French to English" in prompt and "formal register" in prompt
    assert "asterisks" in prompt and FRENCH in prompt


async def test_the_target_is_read_from_the_message(backend):
    message = "Translate into German: Good morning everyone, how are you today?"
    response = await post(
        backend, "/v1/chat", chat_body(messages=says(message), tools=[translation_tool()])
    )
    data = response.json()["choices"][0]["message"]["translation_data"]
    assert data["target_language_code"] == "de" and data["source_language_code"] == "en"
    assert data["source_text"] == "Good morning everyone, how are you today?"


async def test_a_stream_sends_the_translation_in_one_chunk(backend):
    tools = [translation_tool(source_language_code="fr", target_language_code="en-GB")]
    body = chat_body(messages=says(FRENCH), tools=tools, stream=True)
    response = await post(backend, "/v1/chat", body)
    chunks = [json.loads(e) for e in sse_events(response.text) if e != "[DONE]"]
    assert len(chunks) == 2
    opening, whole = (c["choices"][0] for c in chunks)
    assert "translation_data" not in opening["delta"]
    assert whole["delta"]["content"] == REPLY and whole["finish_reason"] == "tool_calls"
    assert whole["delta"]["translation_data"]["target_language_code"] == "en-GB"


@pytest.mark.parametrize(
    ("codes", "message", "named"),
    [
        ({"source_language_code": "zz", "target_language_code": "en"}, FRENCH, "source_language"),
        ({"target_language_code": "english"}, FRENCH, "target_language_code"),
        ({}, FRENCH, "target_language_code"),  # the message names no language
    ],
)
async def test_bad_codes_are_400s_naming_the_field(backend, codes, message, named):
    body = chat_body(messages=says(message), tools=[translation_tool(**codes)])
    response = await post(backend, "/v1/chat", body)
    assert response.status_code == 400, response.text
    assert named in error_of(response)["description"]
    assert not backend.seen


TRANSLATE = {
    "model": "palmyra-translate",
    "source_language_code": "fr",
    "target_language_code": "en",
    "text": FRENCH,
    "formality": False,
    "length_control": True,
    "mask_profanity": False,
}


async def test_the_translation_api_answers_data(backend):
    response = await post(backend, "/v1/translation", TRANSLATE)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": REPLY}
    prompt = next(text for text in backend.seen if FRENCH in text)
    assert "informal register" in prompt and "as long as" in prompt


async def test_the_translation_api_checks_codes_and_scopes(backend):
    bad = await post(backend, "/v1/translation", {**TRANSLATE, "target_language_code": "xx"})
    assert bad.status_code == 400 and "target_language_code" in error_of(bad)["description"]
    scoped = await post(backend, "/v1/translation", TRANSLATE, key={"models": ("palmyra-x5",)})
    assert scoped.status_code == 403
    assert not backend.seen


async def test_palmyra_translate_is_listed_with_the_models(backend):
    app = build_app(backend, settings(aliases=(("palmyra-translate", "palmyra-x4"),)))
    async with api_client(app, lifespan=True) as client:
        listed = (await client.get("/v1/models")).json()["models"]
    assert {"id": "palmyra-translate", "name": "Palmyra Translate"} in listed


def test_the_translator_is_the_first_model_unless_configured(tmp_path):
    assert ("palmyra-translate", "palmyra-x5") in load_settings({}, environ={}).aliases
    chosen = load_settings({"translation_model": "palmyra-x4"}, environ={})
    assert ("palmyra-translate", "palmyra-x4") in chosen.aliases
    off = load_settings({"translation_model": "off"}, environ={})
    assert all(name != "palmyra-translate" for name, _ in off.aliases)
    with pytest.raises(ConfigError, match="translation_model"):
        load_settings({"translation_model": "nope"}, environ={})

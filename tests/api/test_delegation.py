"""The `llm` tool in process on the fake engine: the request's model writes the delegate's
prompt (JSON), the delegate answers it, the response carries `llm_data` (once in a stream)
and both models' tokens; bad delegates get 400, scopes 403, token limits 429 before any
work."""

import json

import pytest

from .conftest import api_client, build_app, chat_body, settings
from .test_chat import sse_events
from .test_gateway import error_of, with_key
from .test_graph_tool import RecordingBackend

PROMPT = "Name three colours."
SCRIPT = json.dumps({"prompt": PROMPT})


def llm(model: str = "palmyra-x4") -> dict:
    return {"type": "llm", "function": {"model": model, "description": "A careful writer"}}


@pytest.fixture
def backend():
    return RecordingBackend(SCRIPT, n_ctx=2048, n_seq_max=2)


async def post(backend, body: dict, key: dict | None = None):
    app = build_app(backend, settings())
    async with api_client(app, lifespan=True) as client:
        headers = {}
        if key is not None:
            secret = app.state.keys.create("scoped", **key).secret
            headers = with_key(client, secret)
        return await client.post("/v1/chat", json=body, **headers)


QUESTION = [{"role": "user", "content": "Ask the other model for colours."}]


async def test_the_delegate_answers_the_prompt_the_model_wrote(backend):
    response = await post(backend, chat_body(messages=QUESTION, tools=[llm()]))
    assert response.status_code == 200, response.text
    body = response.json()
    message = body["choices"][0]["message"]
    assert message["llm_data"] == {"prompt": PROMPT, "model": "palmyra-x4"}
    assert message["content"] == SCRIPT  # the fake delegate answers with its script
    assert body["model"] == "palmyra-x5" and body["choices"][0]["finish_reason"] == "stop"
    delegated = [text for text in backend.seen if PROMPT in text]
    assert delegated and all("Ask the other model" not in text for text in delegated)
    assert any("A careful writer" in text for text in backend.seen)  # the description


async def test_usage_counts_both_models(backend):
    plain = await post(RecordingBackend(SCRIPT, n_ctx=2048, n_seq_max=2), chat_body())
    delegated = await post(backend, chat_body(tools=[llm()]))
    alone, both = plain.json()["usage"], delegated.json()["usage"]
    assert both["completion_tokens"] >= 2 * alone["completion_tokens"]
    assert both["prompt_tokens"] > alone["prompt_tokens"]


async def test_a_stream_sends_llm_data_once_then_the_delegates_answer(backend):
    response = await post(backend, chat_body(messages=QUESTION, tools=[llm()], stream=True))
    chunks = [json.loads(e) for e in sse_events(response.text) if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    carrying = [d["llm_data"] for d in deltas if d.get("llm_data")]
    assert carrying == [{"prompt": PROMPT, "model": "palmyra-x4"}]
    assert "".join(d.get("content") or "" for d in deltas) == SCRIPT


async def test_an_unknown_delegate_is_a_400_listing_the_served_models(backend):
    response = await post(backend, chat_body(tools=[llm("no-such-model")]))
    assert response.status_code == 400
    description = error_of(response)["description"]
    assert "no-such-model" in description and "palmyra-x4" in description
    assert not backend.seen, "nothing was generated"


async def test_a_removed_writer_delegate_is_a_400_naming_its_replacement(backend):
    response = await post(backend, chat_body(tools=[llm("palmyra-med")]))
    assert response.status_code == 400
    assert "palmyra-x5" in error_of(response)["description"]


async def test_a_delegate_outside_the_keys_scope_is_a_403(backend):
    body = chat_body(tools=[llm("palmyra-x4")])
    response = await post(backend, body, key={"models": ("palmyra-x5",)})
    assert response.status_code == 403
    assert "palmyra-x4" in error_of(response)["description"]
    assert not backend.seen


async def test_the_key_needs_room_for_the_prompt_writing_before_it_runs(backend):
    response = await post(backend, chat_body(tools=[llm()]), key={"tpm": 600})
    assert response.status_code == 429, response.text
    assert not backend.seen

"""The `llm` tool end to end with the official SDK: the embedded model writes the prompt,
the delegate (the same served model here, local or upstream) answers it; `llm_data` and
usage are right whole and streamed. Structure only, never the model's prose."""

from __future__ import annotations

import pytest
import writerai

from .support import MODEL

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Ask the expert which colour the sky is."}]


def llm_tool(model: str = MODEL) -> dict:
    return {"type": "llm", "function": {"model": model, "description": "An expert on skies"}}


def test_the_delegate_answers_the_prompt_the_model_wrote(client):
    whole = client.chat.chat(
        model=MODEL, messages=QUESTION, tools=[llm_tool()], max_tokens=12, temperature=0
    )
    message = whole.choices[0].message
    assert message.llm_data.model == MODEL
    assert isinstance(message.llm_data.prompt, str) and message.llm_data.prompt.strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    plain = client.chat.chat(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    assert whole.usage.prompt_tokens > plain.usage.prompt_tokens  # both models' tokens

    with client.chat.stream(
        model=MODEL, messages=QUESTION, tools=[llm_tool()], max_tokens=12, temperature=0
    ) as stream:
        for _ in stream:  # the helper's accumulation must hold: llm_data sent once
            pass
        streamed = stream.current_completion_snapshot.choices[0].message
    assert streamed.llm_data.prompt == message.llm_data.prompt
    assert streamed.llm_data.model == MODEL
    assert streamed.content == message.content


def test_an_unknown_delegate_is_a_400_naming_the_served_models(client):
    with pytest.raises(writerai.BadRequestError, match=MODEL):
        client.chat.chat(
            model=MODEL, messages=QUESTION, tools=[llm_tool("no-such-model")], max_tokens=4
        )

"""Speculative decoding on the real model: greedy answers are the same token for token.

The session server speculates (`speculate = "auto"`, the default); a second server here is
started with `--speculate off`, and every scenario is asked of both. Both run llama.cpp on
one thread, where a step of several tokens computes each position exactly as a step of one
does (measured: docs/benchmarks.md "Speculative decoding"), so greedy identity holds
without exception here. The prompts ask the model to copy supplied text, so drafts are
made and verified; each test checks the speculating server drafted (and kept some).
"""

from __future__ import annotations

import json

import httpx
import pytest

from .support import (
    AUTH,
    CTX_SIZE,
    GENERATED_TOKENS,
    KEY,
    MODEL,
    Server,
    running_server,
    scrape,
    stream_chunks,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

DRAFTS = "inkstand:spec_decode_num_drafts_total"
DRAFTED = "inkstand:spec_decode_num_draft_tokens_total"
ACCEPTED = "inkstand:spec_decode_num_accepted_tokens_total"
RATE = "inkstand:spec_decode_acceptance_rate"
TEXT = (
    "The lighthouse stood on the northern cliff for two hundred years. Its keeper, a quiet "
    "man named Tomas, climbed the ninety-nine steps every evening to light the lamp. Ships "
    "passing in the night saw its beam sweep across the water every twelve seconds."
)
COPY = [{"role": "user", "content": f"Repeat this text exactly, twice:\n\n{TEXT}"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Server:
    flags = ("--ctx-size", str(CTX_SIZE), "--threads", "1", "--speculate", "off")
    with running_server(tmp_path_factory.mktemp("plain"), *flags, key=KEY) as running:
        yield running


def chat(server: Server, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/chat", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def ask(**fields) -> dict:
    return {"model": MODEL, "messages": COPY, "temperature": 0, "max_tokens": 120, **fields}


def same_answer(
    server: Server, plain: Server, body: dict, *, drafts: bool = True
) -> tuple[dict, dict]:
    """Both servers' answers to `body`, checked equal but for ids and timestamps; with
    `drafts`, the speculating server must have drafted while answering."""
    before = scrape(server)
    fast, slow = chat(server, body), chat(plain, body)
    assert comparable(fast) == comparable(slow)
    if drafts:
        assert scrape(server)[DRAFTED] > before[DRAFTED]
    return fast, slow


def comparable(answer: dict) -> dict:
    """`answer` without what differs between two servers whatever they generate."""
    answer = json.loads(json.dumps(answer))
    answer.pop("id"), answer.pop("created")
    answer["usage"].pop("prompt_token_details")  # the session server has a warm cache
    for choice in answer["choices"]:
        for call in choice["message"].get("tool_calls") or ():
            call.pop("id")  # random per call
    return answer


def test_a_copying_answer_is_the_same_and_drafted(server, plain):
    before = scrape(server)
    fast, _ = same_answer(server, plain, ask())
    after = scrape(server)
    assert after[ACCEPTED] > before[ACCEPTED]
    assert after[DRAFTS] > before[DRAFTS]
    assert 0 < after[RATE] <= 1
    assert after[RATE] == pytest.approx(after[ACCEPTED] / after[DRAFTED])
    # usage counts what was emitted, drafted tokens only when kept
    emitted = after[GENERATED_TOKENS] - before[GENERATED_TOKENS]
    assert emitted == fast["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("max_tokens", [3, 17, 64])
def test_max_tokens_ends_both_at_the_same_token(server, plain, max_tokens):
    # a few tokens are not worth drafting: the answers must agree all the same
    fast, _ = same_answer(server, plain, ask(max_tokens=max_tokens), drafts=max_tokens > 16)
    assert fast["usage"]["completion_tokens"] <= max_tokens


def test_stop_sequences_cut_both_at_the_same_place(server, plain):
    fast, _ = same_answer(server, plain, ask(stop=["twelve", "Tomas"]))
    assert "twelve" not in fast["choices"][0]["message"]["content"]


def test_n_choices_and_logprobs_agree(server, plain):
    fast, _ = same_answer(server, plain, ask(n=2, logprobs=True, top_logprobs=3))
    for choice in fast["choices"]:
        assert len(choice["logprobs"]["content"]) >= 1


def test_a_forced_tool_call_is_the_same(server, plain):
    body = ask(
        messages=[{"role": "user", "content": f"{TEXT}\n\nWhat is the weather in the city?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    fast, _ = same_answer(server, plain, body)
    [call] = fast["choices"][0]["message"]["tool_calls"]
    assert "city" in json.loads(call["function"]["arguments"])


def test_json_schema_output_is_the_same(server, plain):
    schema = {
        "type": "object",
        "properties": {"keeper": {"type": "string"}, "story": {"type": "string"}},
        "required": ["keeper", "story"],
    }
    ask_json = f"{TEXT}\n\nGive the keeper's name, and the whole text above as the story."
    body = ask(
        messages=[{"role": "user", "content": ask_json}],
        response_format={"type": "json_schema", "json_schema": {"schema": schema}},
        max_tokens=160,
    )
    fast, _ = same_answer(server, plain, body)
    assert fast["choices"][0]["finish_reason"] in ("stop", "length")
    if fast["choices"][0]["finish_reason"] == "stop":
        assert set(json.loads(fast["choices"][0]["message"]["content"])) == {"keeper", "story"}


def test_a_stream_carries_the_same_text_and_usage(server, plain):
    body = ask(stream_options={"include_usage": True})
    texts, usages = [], []
    for target in (server, plain):
        with httpx.Client(base_url=target.url, headers=AUTH, timeout=120) as http:
            chunks = stream_chunks(http, body)
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                             if c["choices"]))  # fmt: skip
        usages.append(chunks[-1]["usage"]["completion_tokens"])
    assert texts[0] == texts[1] and usages[0] == usages[1]


def test_the_next_turn_after_rejected_drafts_reuses_the_cache_and_agrees(server, plain):
    first, _ = same_answer(server, plain, ask(max_tokens=60))
    history = [*COPY, {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
               {"role": "user", "content": "Now repeat only its first sentence."}]  # fmt: skip
    second, _ = same_answer(server, plain, ask(messages=history, max_tokens=40))
    assert second["usage"]["prompt_token_details"]["cached_tokens"] > 0

"""Speculative decoding on the real model: greedy answers are the same token for token.

Two fresh servers get the same requests in the same order: one speculates, the other runs
`--speculate off`. Every test runs twice, on two such pairs: prompt lookup (`speculate =
"auto"`, the default), and the draft model (`--speculate draft`, the embedded model as its
own draft: no other GGUF with its vocabulary can be had here). All run llama.cpp on
one thread, where a step of several tokens computes each position as a step of one does
(measured: docs/benchmarks.md "Speculative decoding"), so the tokens are the same; a
log-probability may differ in its fourth decimal where batches of other shapes were computed
(a prompt read in other chunks), so those are compared to 1e-3. The session server is not
used: its prefix cache holds other tests' prompts, read in other chunks. The prompts ask the
model to copy supplied text, so drafts are made and verified; the tests check they were.
"""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inkstand.config import find_embedded_model

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


FLAGS = ("--ctx-size", str(CTX_SIZE), "--threads", "1")
DRAFTING = {"lookup": (), "draft": ("--speculate", "draft", "--draft", find_embedded_model())}


@pytest.fixture(scope="module", params=sorted(DRAFTING))
def servers(request, tmp_path_factory) -> tuple[Server, Server]:
    """(speculating server, `--speculate off` server), fresh, for one way of drafting."""
    folder = tmp_path_factory.mktemp(request.param)
    with (
        running_server(folder / "fast", *FLAGS, *DRAFTING[request.param], key=KEY) as fast,
        running_server(folder / "plain", *FLAGS, "--speculate", "off", key=KEY) as plain,
    ):
        yield fast, plain


@pytest.fixture
def fast(servers) -> Server:
    return servers[0]


@pytest.fixture
def plain(servers) -> Server:
    return servers[1]


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
    assert comparable(fast) == approx_floats(comparable(slow))
    if drafts:
        assert scrape(server)[DRAFTED] > before[DRAFTED]
    return fast, slow


def comparable(answer: dict) -> dict:
    """`answer` without what differs between two servers whatever they generate."""
    answer = json.loads(json.dumps(answer))
    answer.pop("id"), answer.pop("created")
    answer["usage"].pop("prompt_token_details")  # the cache's figures are checked apart
    for choice in answer["choices"]:
        for call in choice["message"].get("tool_calls") or ():
            call.pop("id")  # random per call
    return answer


def approx_floats(value):
    """`value` with every float (the log-probabilities) compared to 1e-3."""
    if isinstance(value, float):
        return pytest.approx(value, abs=1e-3)
    if isinstance(value, dict):
        return {k: approx_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_floats(v) for v in value]
    return value


def test_a_copying_answer_is_the_same_and_drafted(fast, plain):
    before = scrape(fast)
    answer, _ = same_answer(fast, plain, ask())
    after = scrape(fast)
    assert after[ACCEPTED] > before[ACCEPTED]
    assert after[DRAFTS] > before[DRAFTS]
    assert 0 < after[RATE] <= 1
    assert after[RATE] == pytest.approx(after[ACCEPTED] / after[DRAFTED])
    # usage counts what was emitted, drafted tokens only when kept
    emitted = after[GENERATED_TOKENS] - before[GENERATED_TOKENS]
    assert emitted == answer["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("max_tokens", [3, 17, 64])
def test_max_tokens_ends_both_at_the_same_token(fast, plain, max_tokens):
    # a few tokens are not worth drafting: the answers must agree all the same
    answer, _ = same_answer(fast, plain, ask(max_tokens=max_tokens), drafts=max_tokens > 16)
    assert answer["usage"]["completion_tokens"] <= max_tokens


def test_stop_sequences_cut_both_at_the_same_place(fast, plain):
    answer, _ = same_answer(fast, plain, ask(stop=["twelve", "Tomas"]))
    assert "twelve" not in answer["choices"][0]["message"]["content"]


def test_n_choices_and_logprobs_agree(fast, plain):
    answer, _ = same_answer(fast, plain, ask(n=2, logprobs=True, top_logprobs=3))
    for choice in answer["choices"]:
        assert len(choice["logprobs"]["content"]) >= 1


def test_a_forced_tool_call_is_the_same(fast, plain):
    body = ask(
        messages=[{"role": "user", "content": f"{TEXT}\n\nWhat is the weather in the city?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    answer, _ = same_answer(fast, plain, body)
    [call] = answer["choices"][0]["message"]["tool_calls"]
    assert "city" in json.loads(call["function"]["arguments"])


def test_json_schema_output_is_the_same(fast, plain):
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
    answer, _ = same_answer(fast, plain, body)
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    if answer["choices"][0]["finish_reason"] == "stop":
        assert set(json.loads(answer["choices"][0]["message"]["content"])) == {"keeper", "story"}


def test_a_stream_carries_the_same_text_and_usage(fast, plain):
    body = ask(stream_options={"include_usage": True})
    texts, usages = [], []
    for target in (fast, plain):
        with httpx.Client(base_url=target.url, headers=AUTH, timeout=120) as http:
            chunks = stream_chunks(http, body)
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                             if c["choices"]))  # fmt: skip
        usages.append(chunks[-1]["usage"]["completion_tokens"])
    assert texts[0] == texts[1] and usages[0] == usages[1]


def test_the_next_turn_after_rejected_drafts_reuses_the_cache_and_agrees(fast, plain):
    first, _ = same_answer(fast, plain, ask(max_tokens=60))
    history = [*COPY, {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
               {"role": "user", "content": "Now repeat only its first sentence."}]  # fmt: skip
    second, _ = same_answer(fast, plain, ask(messages=history, max_tokens=40))
    assert second["usage"]["prompt_token_details"]["cached_tokens"] > 0


def test_the_kv_cache_of_the_model_and_its_draft_are_reported(fast, servers):
    response = httpx.get(f"{fast.url}/metrics", timeout=10)
    sizes = {
        sample.labels["role"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "inkstand:kv_cache_bytes"
    }
    drafting = "--draft" in fast.process.args
    assert set(sizes) == ({"model", "draft"} if drafting else {"model"})
    assert sizes["model"] > 0
    if drafting:  # the embedded model drafts for itself: the same cache
        assert sizes["draft"] == sizes["model"]

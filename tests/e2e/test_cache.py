"""The prefix cache: a request reuses the KV of earlier ones and answers exactly as without it.

`usage.prompt_token_details.cached_tokens` says how much of the prompt came from the cache.
The answers compared here are greedy (temperature 0) and run alone, so they must be equal
token for token whether their prefix was computed now or taken from the cache.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
import writerai

from .support import AHEAD_TOKENS, KEY, MODEL, greedy, running_server, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

SYSTEM = {"role": "system", "content": "You are a terse assistant for sailors."}
QUESTIONS = ["What is a knot?", "And a fathom?", "How deep is the harbour?", "Thanks, goodbye."]
# A conversation so far, with an answer written here rather than generated.
HISTORY = [
    SYSTEM,
    {"role": "user", "content": "Which lighthouse guards the bay?"},
    {"role": "assistant", "content": "The old stone lighthouse on the northern cape."},
]


@pytest.fixture
def fresh_server(tmp_path):
    """A server with the session server's settings and nothing in its cache."""
    flags = ("--ctx-size", "1024", "--threads", "1")
    with running_server(tmp_path, *flags, key=KEY) as server:
        yield server


def cached(response) -> int:
    return response.usage.prompt_token_details.cached_tokens


def test_conversation_reuses_every_earlier_turn(client):
    """Each turn resends the history, as Writer's chatbot does; all of it but the new
    message is the previous turn's prompt and answer, so the previous prompt is cached."""
    messages: list = [SYSTEM]
    usages = []
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        response = client.chat.chat(model=MODEL, messages=messages, max_tokens=16, temperature=0)
        messages.append({"role": "assistant", "content": response.choices[0].message.content})
        usages.append(response.usage)
    for earlier, later in pairwise(usages):
        reused = later.prompt_token_details.cached_tokens
        assert earlier.prompt_tokens <= reused < later.prompt_tokens
        assert reused > earlier.prompt_token_details.cached_tokens


def test_repeated_greedy_request_is_cached_and_agrees(client):
    body = greedy(messages=[SYSTEM, {"role": "user", "content": "Name a knot."}], max_tokens=16)
    first = client.chat.chat(**body)
    second = client.chat.chat(**body)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].finish_reason == first.choices[0].finish_reason
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    # All of the prompt but (at most) the last token, which must be decoded for its logits.
    assert first.usage.prompt_tokens - 1 <= cached(second) <= second.usage.prompt_tokens
    assert cached(second) > cached(first)


def test_prefix_cached_by_another_request_changes_no_answer(client, fresh_server):
    later = greedy(
        messages=[*HISTORY, {"role": "user", "content": "How tall is it?"}], max_tokens=16
    )
    earlier = greedy(
        messages=[*HISTORY, {"role": "user", "content": "Who keeps it?"}], max_tokens=16
    )
    with writerai.Writer(api_key=KEY, base_url=fresh_server.url, max_retries=0) as cold:
        uncached = cold.chat.chat(**later)
    assert cached(uncached) == 0
    primer = client.chat.chat(**earlier)
    reused = client.chat.chat(**later)
    # The shared history came from `primer`'s KV, not from a template prefix alone.
    assert cached(reused) > cached(primer)
    assert cached(reused) < reused.usage.prompt_tokens == uncached.usage.prompt_tokens
    assert reused.choices[0].message.content == uncached.choices[0].message.content
    assert reused.choices[0].finish_reason == uncached.choices[0].finish_reason


def test_next_turn_finds_the_turn_tail_decoded_ahead(client, fresh_server):
    """After an answer, the idle engine decodes what the next prompt puts after it (the
    end of the turn, the next user turn's head); the next turn reuses it and answers as a
    server that computed the whole prompt itself does."""
    messages = [
        {"role": "system", "content": "You are a ferryman who answers in one sentence."},
        {"role": "user", "content": "When does the first ferry leave?"},
    ]
    with writerai.Writer(api_key=KEY, base_url=fresh_server.url, max_retries=0) as warm:
        first = warm.chat.chat(**greedy(messages=messages, max_tokens=12))
        deadline = time.monotonic() + 15
        while scrape(fresh_server)[AHEAD_TOKENS] == 0:
            assert time.monotonic() < deadline, "nothing was decoded ahead"
            time.sleep(0.05)
        messages += [
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And the last one?"},
        ]
        second = warm.chat.chat(**greedy(messages=messages, max_tokens=12))
    # Without decoding ahead the cache ends one token short of the answer's end.
    assert cached(second) > first.usage.prompt_tokens + first.usage.completion_tokens
    assert cached(second) < second.usage.prompt_tokens
    computed = client.chat.chat(**greedy(messages=messages, max_tokens=12))
    assert cached(computed) < first.usage.prompt_tokens
    assert second.choices[0].message.content == computed.choices[0].message.content
    assert second.choices[0].finish_reason == computed.choices[0].finish_reason

"""The prefix cache: a request reuses the KV of earlier ones and answers exactly as without it.

`usage.prompt_token_details.cached_tokens` says how much of the prompt came from the cache.
The answers compared here are greedy (temperature 0) and run alone, so they must be equal
token for token whether their prefix was computed now or taken from the cache.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import writerai

from .support import KEY, MODEL, greedy, running_server

pytestmark = pytest.mark.e2e

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

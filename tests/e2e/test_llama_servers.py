"""tests/support/llama_servers.py: real llama-server replicas start, answer, die and come back."""

from __future__ import annotations

import httpx
import pytest

from ..support.llama_servers import Replica, replicas

pytestmark = pytest.mark.e2e

ONE_TOKEN = {
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 1,
    "temperature": 0,
}


def assert_answers(replica: Replica) -> None:
    assert httpx.get(f"{replica.root}/health", timeout=5).status_code == 200
    response = httpx.post(f"{replica.url}/chat/completions", json=ONE_TOKEN, timeout=60)
    assert response.status_code == 200, f"{response.text}\n{replica.tail()}"
    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert [choice["finish_reason"] for choice in payload["choices"]] == ["length"]
    assert payload["usage"]["completion_tokens"] == 1


def test_replicas_answer_and_one_comes_back_after_a_kill():
    with replicas(2, slots=1, ctx_size=512) as (first, second):
        assert first.port != second.port
        assert first.url == f"http://127.0.0.1:{first.port}/v1"
        for replica in (first, second):
            assert_answers(replica)

        first.kill()
        assert not first.running
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{first.root}/health", timeout=5)
        assert_answers(second)

        port = first.port
        first.start()
        assert first.port == port
        assert_answers(first)
    assert not first.running and not second.running

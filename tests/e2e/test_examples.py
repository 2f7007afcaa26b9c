"""The seed examples in `examples/`, run unmodified as subprocesses against the server.

They find the server through `WRITER_BASE_URL` and `WRITER_API_KEY`, as any application
written against Writer's API would.
"""

from __future__ import annotations

import json
import sys

import pytest

from .support import EXAMPLES, KEY, clean_env, run_program

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(server) -> dict[str, str]:
    return clean_env(WRITER_BASE_URL=server.url, WRITER_API_KEY=KEY)


def test_curl_example_prints_a_chat_completion(env):
    done = run_program(["bash", str(EXAMPLES / "curl.sh")], env=env)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"]["role"] == "assistant"


def test_chat_example_prints_the_answer(env):
    done = run_program([sys.executable, str(EXAMPLES / "chat.py")], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_stream_example_prints_the_stream_then_the_same_final_completion(env):
    done = run_program([sys.executable, str(EXAMPLES / "stream.py")], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    half = len(done.stdout) // 2
    assert done.stdout[:half] == done.stdout[half:]


def test_chatbot_example_answers_two_turns_then_exits(env):
    done = run_program(
        [sys.executable, str(EXAMPLES / "chatbot.py")], env=env, stdin="Hello!\nThanks!\nexit\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Palmyra: ") == 2
    assert done.stdout.rstrip().endswith("Goodbye!")

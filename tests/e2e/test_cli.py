"""`inkstand chat`: the terminal chatbot against the server, driven through piped stdin."""

from __future__ import annotations

import pytest

from .support import INKSTAND, KEY, clean_env, free_port, run_program

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]


def chat(url: str, stdin: str, *flags: str):
    return run_program([str(INKSTAND), "chat", "--url", url, *flags], env=clean_env(), stdin=stdin)


def test_two_turns_then_exit(server):
    done = chat(server.url, "Hello!\nThanks!\nexit\n", "--api-key", KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Assistant: ") == 2
    assert done.stderr == ""


def test_end_of_input_ends_the_chat(server):
    done = chat(server.url, "Hello!\n", "--api-key", KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Assistant: ") == 1
    assert done.stderr == ""


def test_unreachable_server_is_reported(server):
    done = chat(f"http://127.0.0.1:{free_port()}", "Hello!\n", "--api-key", KEY)
    assert done.returncode != 0
    assert "cannot reach the server" in done.stderr


def test_missing_key_is_reported(server):
    done = chat(server.url, "Hello!\n")
    assert done.returncode != 0
    assert "WRITER_API_KEY" in done.stderr


def test_refused_request_is_reported_and_the_chat_goes_on(server):
    done = chat(server.url, "Hello!\nAgain!\n", "--api-key", KEY, "--model", "nope-model")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("refused") == 2
    assert "nope-model" in done.stderr

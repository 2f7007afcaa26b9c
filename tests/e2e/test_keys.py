"""API keys on first start: a server given no `--api-key` creates one and shows it once.

One data dir is used by two servers in turn: the first creates and prints the key, the
second (same data dir) must print nothing new and still accept the key.
"""

from __future__ import annotations

import re

import httpx
import pytest

from .support import MODEL, Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

EXPORT = re.compile(r"export WRITER_API_KEY=(\S+)")


@pytest.fixture(scope="module")
def first_start(tmp_path_factory) -> Server:
    """The first server on an empty data dir, stopped once the module's tests are done."""
    with running_server(tmp_path_factory.mktemp("keys")) as server:
        yield server


@pytest.fixture(scope="module")
def key(first_start) -> str:
    """The key the first start printed; there must be exactly one."""
    found = EXPORT.findall(first_start.log())
    assert len(found) == 1, first_start.dump()
    return found[0]


def chat_status(server: Server, key: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.url}/v1/chat", json=body, headers=headers, timeout=60).status_code


def test_first_start_prints_the_key_once_on_stderr(first_start, key):
    assert first_start.log().count(key) == 1
    assert key not in first_start.stdout_path.read_text()


def test_printed_key_works(first_start, key):
    assert chat_status(first_start, key) == 200
    assert chat_status(first_start, key + "x") == 401


def test_store_does_not_hold_the_secret(first_start, key):
    files = list(first_start.data_dir.iterdir())
    assert "inkstand.sqlite3" in [f.name for f in files]
    for path in files:
        assert key.encode() not in path.read_bytes(), path.name


def test_second_start_prints_no_new_key(first_start, key, tmp_path):
    with running_server(tmp_path, data_dir=first_start.data_dir) as second:
        assert not EXPORT.search(second.log())
        assert chat_status(second, key) == 200

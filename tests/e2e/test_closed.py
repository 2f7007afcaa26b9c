"""A data dir whose every key was revoked stays closed across a restart, and the real server's
files and log hold up: private modes, one escaped log line per request, no stored 401s.

One data dir, two servers in turn: the first creates and prints a key, which is then revoked
with `inkstand keys revoke`; the second must not make a new key, must refuse every API request
and must say how to create a key.
"""

from __future__ import annotations

import json
import re
import stat

import httpx
import pytest

from .support import MODEL, Server, admin, running_server, scrape, usage_report

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

EXPORT = re.compile(r"export WRITER_API_KEY=(\S+)")
FLAGS = ("--ctx-size", "512", "--threads", "1")


@pytest.fixture(scope="module")
def revoked(tmp_path_factory) -> tuple[Server, str]:
    """The second server on a data dir whose only key was revoked, and that key's secret."""
    folder = tmp_path_factory.mktemp("closed")
    with running_server(folder / "first", *FLAGS) as first:
        (secret,) = EXPORT.findall(first.log())
    data = str(first.data_dir)
    (key,) = json.loads(admin("keys", "list", "--json", "--data-dir", data).stdout)
    admin("keys", "revoke", key["id"], "--data-dir", data)
    with running_server(folder / "second", *FLAGS, data_dir=first.data_dir) as second:
        yield second, secret


@pytest.fixture(scope="module")
def closed(revoked) -> Server:
    return revoked[0]


def chat(server: Server, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    return httpx.post(f"{server.url}/v1/chat", json=body, headers=headers, timeout=60)


def test_a_restart_after_revoking_every_key_stays_closed(closed, revoked):
    _, secret = revoked
    assert not EXPORT.search(closed.log())  # no new key was made
    assert chat(closed, f"Bearer {secret}").status_code == 401
    refused = chat(closed, None)
    assert refused.status_code == 401
    assert "inkstand keys create" in refused.json()["errors"][0]["description"]


def test_the_closed_server_says_at_start_how_to_create_a_key(closed):
    command = f"inkstand keys create --name NAME --data-dir {closed.data_dir}"
    (line,) = [line for line in closed.log().splitlines() if command in line]
    assert "401" in line


def test_the_data_dir_and_database_files_are_private(closed):
    assert stat.S_IMODE(closed.data_dir.stat().st_mode) == 0o700
    files = sorted(f for f in closed.data_dir.iterdir() if f.name.startswith("inkstand.sqlite3"))
    assert [f.name for f in files] == [
        "inkstand.sqlite3",
        "inkstand.sqlite3-shm",
        "inkstand.sqlite3-wal",
    ]
    assert [stat.S_IMODE(f.stat().st_mode) for f in files] == [0o600] * 3


def test_a_path_with_newline_and_escape_logs_one_escaped_line(closed):
    before = scrape(closed)["inkstand:unauthenticated_requests_total"]
    start = closed.log_size()
    response = httpx.get(f"{closed.url}/v1/models%0Aforged: GET /x 200%1b[2J", timeout=10)
    assert response.status_code == 401
    (line,) = closed.wait_for_log(r"^.*inkstand\.access: GET /v1/models.*$", since=start)
    assert line.group(0).count("\\n") == 1 and "\\x1b[2J" in line.group(0)
    assert " 401 " in line.group(0)
    assert not re.search(r"^forged", closed.log(start), re.MULTILINE)
    assert "\x1b" not in closed.log(start)
    assert scrape(closed)["inkstand:unauthenticated_requests_total"] == before + 1
    assert usage_report(closed.data_dir) == []  # no 401 was ever stored

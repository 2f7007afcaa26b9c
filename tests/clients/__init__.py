"""Third-party Writer clients, run as subprocesses against the real server by tests/e2e.

    tests/clients/langchain/   requirements.txt (langchain-writer, the whole tree pinned)
                               chat_writer.py   (ChatWriter: invoke, stream, tools, ...)
    tests/clients/node/        package.json     (the npm writer-sdk, pinned)
                               writer_sdk.mjs   (chat, the stream helper, tools, errors, graphs)

scripts/client_suites.py installs each outside the repository (a second venv for langchain-writer,
whose writer-sdk 2.x conflicts with ours; an npm folder for the node SDK), cached by what pins
them; `make test` runs it before pytest, and the fixtures below call it too, so a bare pytest
run installs what is missing. A client script makes all its requests in one run (starting one
costs seconds) and prints one JSON report, check name -> {"result": observations} or
{"error": traceback}; tests/e2e/test_langchain.py and test_node_sdk.py assert on it, one test
per behaviour.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# scripts/ is no package: its installer is found by putting the folder on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from client_suites import ensure_langchain, ensure_node_sdk

from ..e2e.conftest import SERVER_FAILURE
from ..e2e.support import KEY, Server, clean_env

HERE = Path(__file__).resolve().parent
LANGCHAIN_SCRIPT = HERE / "langchain" / "chat_writer.py"
NODE_SCRIPT = HERE / "node" / "writer_sdk.mjs"

__all__ = ["LANGCHAIN_SCRIPT", "ensure_langchain", "node_workdir", "observed", "run_client"]


def node_workdir(into: Path) -> Path:
    """A copy of the node client script in `into`, beside a link to the cached writer-sdk.

    Node resolves an ES module's bare imports (`import Writer from "writer-sdk"`) from the
    importing file's folder upward, never from NODE_PATH, so the script runs from a folder
    whose `node_modules` is the cache's.
    """
    (into / "node_modules").symlink_to(ensure_node_sdk(), target_is_directory=True)
    return Path(shutil.copy2(NODE_SCRIPT, into / NODE_SCRIPT.name))


def run_client(server: Server, argv: list[str], timeout: float = 300) -> dict:
    """Run a client script against `server` to completion and return its JSON report.

    The script finds the server through WRITER_BASE_URL and WRITER_API_KEY. A 500 or a
    traceback the server logged meanwhile fails the run, as conftest.py does for a test.
    """
    env = clean_env(WRITER_BASE_URL=server.url, WRITER_API_KEY=KEY)
    start = server.log_size()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}"
    failures = [line for line in server.log(start).splitlines() if SERVER_FAILURE.search(line)]
    assert not failures, "the server logged failures:\n" + "\n".join(failures)
    return json.loads(done.stdout.strip().splitlines()[-1])


def observed(report: dict, check: str) -> dict:
    """What the client observed in `check`; fails the test with its traceback if it raised."""
    entry = report[check]
    if "error" in entry:
        pytest.fail(f"the client's check {check!r} raised:\n{entry['error']}", pytrace=False)
    return entry["result"]

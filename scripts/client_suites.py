"""Third-party Writer clients the end-to-end suite runs against the server, installed once.

    .venv/bin/python scripts/client_suites.py   # install both (or find them); print where

Two clients cannot live in Inkstand's own venv, so each gets a folder of its own:

- langchain-writer, pinned with everything it pulls in by tests/clients/langchain/
  requirements.txt, in a second venv made with the Python running this script (its
  writer-sdk 2.x conflicts with the 3.x Inkstand depends on);
- the npm `writer-sdk`, pinned by tests/clients/node/package.json, installed with npm.

Both are cached outside the repository, beside the llama-server build of
scripts/llama_server.py, keyed by what pins them:

    ${XDG_CACHE_HOME:-~/.cache}/inkstand/
        clients-langchain-writer-<version>-<key>/   venv/  install.log  installed.json
        clients-node-writer-sdk-<version>-<key>/    package.json  node_modules/  install.log
                                                    installed.json

`key` is a hash of the pinning file (and, for the venv, of the Python it was made with), so
editing a pin makes a new entry and the old one can be deleted. `installed.json` is written
last: an entry without it is an interrupted install, removed and made again. A lock file makes
a second caller wait for the first one's install. `make test` runs this script before pytest;
tests/clients/__init__.py calls the same functions, so pytest alone installs what is missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LANGCHAIN_PINS = REPO / "tests" / "clients" / "langchain" / "requirements.txt"
NODE_PACKAGE = REPO / "tests" / "clients" / "node" / "package.json"
RECORD = "installed.json"
PIP = ("-m", "pip", "--disable-pip-version-check")
NPM_INSTALL = ("install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error")


def cache_root() -> Path:
    """Inkstand's cache folder, the one scripts/llama_server.py builds llama-server in."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inkstand"


def langchain_dir() -> Path:
    """The cache entry for the pinned langchain-writer under this Python."""
    pins = LANGCHAIN_PINS.read_text()
    version = re.search(r"^langchain-writer==(\S+)$", pins, re.MULTILINE)
    assert version, f"{LANGCHAIN_PINS} pins no langchain-writer"
    python = f"{platform.python_version()} {_base_python()}"
    key = _key(pins, python)
    return cache_root() / f"clients-langchain-writer-{version[1]}-{key}"


def node_dir() -> Path:
    """The cache entry for the pinned npm writer-sdk."""
    package = NODE_PACKAGE.read_text()
    version = json.loads(package)["dependencies"]["writer-sdk"]
    return cache_root() / f"clients-node-writer-sdk-{version}-{_key(package)}"


def ensure_langchain() -> Path:
    """The Python of the langchain-writer venv, made now if the cache lacks it."""
    out = langchain_dir()
    _ensure(out, _install_langchain)
    return out / "venv" / "bin" / "python"


def ensure_node_sdk() -> Path:
    """The `node_modules` folder holding the pinned writer-sdk, installed now if missing."""
    out = node_dir()
    _ensure(out, _install_node_sdk)
    return out / "node_modules"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _base_python() -> str:
    """The interpreter a venv made from this one runs (itself, outside a venv)."""
    return str(getattr(sys, "_base_executable", sys.executable))


def _ensure(out: Path, install: Callable[[Path, Path], dict]) -> None:
    if (out / RECORD).exists():
        return
    with _locked(out.with_name(out.name + ".lock")):
        if (out / RECORD).exists():  # another process installed it while we waited
            return
        print(f"installing {out.name} into {out.parent} (first run only)", file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)  # an interrupted install
        out.mkdir(parents=True)
        started = time.monotonic()
        record = install(out, out / "install.log")
        record["install_seconds"] = round(time.monotonic() - started, 1)
        (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        print(f"installed {out.name} in {record['install_seconds']:.0f} s", file=sys.stderr)


def _install_langchain(out: Path, log: Path) -> dict:
    venv = out / "venv"
    python = str(venv / "bin" / "python")
    # --no-deps: the pins are the whole tree, so nothing unpinned slips in; `pip check` then
    # proves the tree complete.
    _run_logged(
        [
            [_base_python(), "-m", "venv", str(venv)],
            [python, *PIP, "install", "--no-deps", "-r", str(LANGCHAIN_PINS)],
            [python, *PIP, "check"],
        ],
        log,
    )
    return {"python": platform.python_version(), "pins": LANGCHAIN_PINS.read_text()}


def _install_node_sdk(out: Path, log: Path) -> dict:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: the node client tests need node 18+ and npm")
    shutil.copy2(NODE_PACKAGE, out / "package.json")
    _run_logged([[npm, *NPM_INSTALL]], log, cwd=out)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return {"node": node.stdout.strip(), "package": json.loads(NODE_PACKAGE.read_text())}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run_logged(steps: list[list[str]], log_path: Path, cwd: Path | None = None) -> None:
    with log_path.open("ab") as log:
        for step in steps:
            done = subprocess.run(step, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
            if done.returncode:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(step[:4])} failed:\n{tail}")


if __name__ == "__main__":
    found = {"langchain_python": ensure_langchain(), "node_modules": ensure_node_sdk()}
    print(json.dumps({name: str(path) for name, path in found.items()}, indent=2))

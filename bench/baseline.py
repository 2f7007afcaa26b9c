"""Inkstand at an earlier git revision, to run next to the working tree's in one benchmark.

    with checkout("HEAD~3") as base:      # base.name == "inkstand@1b49471"
        cmd, env = base.command(["serve", "--port", "8123", ...])

`checkout` exports the revision's `src/` with `git archive` into a temporary directory
(deleted on exit), which leaves the repository itself untouched: no worktree entry, no
index or ref to clean up if the run is killed. The command runs `python -m inkstand` with
the benchmark's own interpreter, so both Inkstands share the venv's dependencies, and puts
the export first on `sys.path` with `PYTHONPATH`: it precedes site-packages, where the
venv's editable install adds the working tree's `src/`, and `-P` keeps the current directory
off the path. `checkout` checks that this is so before handing the revision out.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Baseline:
    commit: str
    src: Path  # the revision's src/, exported

    @property
    def name(self) -> str:
        return f"inkstand@{self.commit[:7]}"

    def command(self, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """`inkstand <args>` at this revision: the command line and its environment."""
        env = os.environ | {"PYTHONPATH": str(self.src)}
        return [sys.executable, "-P", "-m", "inkstand", *args], env

    def imported_from(self) -> Path:
        """Where the command's interpreter finds the `inkstand` package."""
        cmd, env = self.command([])
        probe = [cmd[0], "-P", "-c", "import inkstand; print(inkstand.__file__)"]
        done = subprocess.run(probe, env=env, capture_output=True, text=True, check=True)
        return Path(done.stdout.strip()).resolve()


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Baseline]:
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    with tempfile.TemporaryDirectory(prefix=f"inkstand-{commit[:7]}-") as tmp:
        archive = _git("archive", "--format=tar", commit, "src")
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        base = Baseline(commit, Path(tmp).resolve() / "src")
        found = base.imported_from()
        if not found.is_relative_to(base.src):
            raise RuntimeError(f"{base.name} would import inkstand from {found}")
        yield base


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True).stdout

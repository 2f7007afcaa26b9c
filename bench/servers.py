"""Server processes under test: start on 127.0.0.1, poll until ready, read RSS, always stop.

    with serving("inkstand", cmd, port, ready_path="/health", log=path) as server:
        server.base_url, server.rss_mb()

Leaving the block stops the process (SIGTERM, then SIGKILL after a grace period) whether
the body finished or raised. Each server runs in its own session so a stray child can be
signalled with its group; its output goes to a log file that is printed if it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a live process from /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    base_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float:
        return rss_mb(self.pid, "VmHWM")


@contextlib.contextmanager
def serving(
    name: str,
    cmd: list[str],
    port: int,
    *,
    ready_path: str,
    log: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> Iterator[Server]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(name, process, f"http://{HOST}:{port}", log)
    try:
        _wait_ready(server, ready_path, timeout_s)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited early:\n{_tail(server.log)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(server.base_url + path).status_code == 200:
                    return
            time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {timeout_s:.0f}s:\n{_tail(server.log)}")


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

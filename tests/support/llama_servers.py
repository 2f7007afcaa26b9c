"""Real llama.cpp `llama-server` replicas on free ports: the OpenAI-speaking upstream in tests.

    with replicas(2) as (first, second):
        httpx.post(f"{first.url}/chat/completions", json=...)
        first.kill()      # SIGKILL, as a crashed engine
        first.start()     # back on the same port, healthy again

Each replica serves the embedded GGUF (`find_embedded_model()`) with `--jinja` (the model's
own chat template, tool calls, response formats) on 127.0.0.1 and one thread (`-t 1 -tb 1`):
two llama.cpp engines busy at once on a 2-core machine slow each other down several-fold.
`ctx_size` is per slot, as Inkstand's `--ctx-size` is (scripts/llama_server.py gives
llama-server `-c ctx_size*slots`). The binary comes from scripts/llama_server.py, which
builds it on first use (`make test` does that before pytest runs).

A replica logs to a file in `log_dir` (a fresh temporary folder unless given); the tail of
that log is in the error when a replica exits or is not healthy within READY_TIMEOUT.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from inkstand.config import find_embedded_model

# scripts/ is no package: its builder is found by putting the folder on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from llama_server import ensure_llama_server, llama_server_command

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass
class Replica:
    """One llama-server process on a fixed port; start, stop and kill it as often as needed."""

    port: int
    argv: list[str]
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The OpenAI base URL, as an OpenAI client wants it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """Where llama-server's own routes live (`/health`, `/props`, `/tokenize`)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (if it is not running) and wait until `/health` says 200."""
        self.spawn()
        self.wait_until_healthy()

    def spawn(self) -> None:
        """Start the process if it is not running, without waiting for it to load."""
        if not self.running:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )

    def wait_until_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"llama-server on port {self.port} exited:\n{self.tail()}")
            try:
                if httpx.get(f"{self.root}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama-server on port {self.port} not healthy after {timeout} s:\n"
                           f"{self.tail()}")  # fmt: skip

    def kill(self) -> None:
        """SIGKILL, as if the engine crashed; returns once the process is gone."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT."""
        if self.running:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def start_replicas(
    count: int,
    *,
    threads: int = 1,
    slots: int = 4,
    ctx_size: int = 4096,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
) -> list[Replica]:
    """`count` healthy replicas of llama-server on the embedded model; the caller stops them."""
    binary, _ = ensure_llama_server()
    model = find_embedded_model()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="llama-servers-"))
    made = []
    for index, port in enumerate(free_ports(count)):
        command = llama_server_command(
            binary, model, port, threads=threads, ctx_size=ctx_size, slots=slots
        )
        made.append(Replica(port, [*command, "--jinja", *extra_args], log_dir / f"{index}.log"))
    try:
        for replica in made:  # all load at once
            replica.spawn()
        for replica in made:
            replica.wait_until_healthy()
    except BaseException:
        stop_all(made)
        raise
    return made


@contextmanager
def replicas(count: int, **options) -> Iterator[list[Replica]]:
    """`start_replicas(count, **options)`, every replica stopped on the way out."""
    with ExitStack() as stack:
        if options.get("log_dir") is None:
            options["log_dir"] = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        started = start_replicas(count, **options)
        stack.callback(stop_all, started)
        yield started


def stop_all(replicas: Sequence[Replica]) -> None:
    for replica in replicas:
        replica.stop()


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nobody listens on (the sockets stay bound until all are chosen)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]

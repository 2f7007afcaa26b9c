"""Streaming decode speed of Inkstand, side by side with its own engine and llama_cpp.server.

    .venv/bin/python bench/run.py            # or: make bench

Three systems on the embedded SmolLM2-135M-Instruct GGUF, all loaded at once and measured
in interleaved rounds (so a slow minute on a shared machine hurts them alike), with the
same messages, greedy decoding, `max_tokens`, threads and context size (per sequence):

1. raw engine        Inkstand's `Engine` in this process, no HTTP (engine_raw.py)
2. inkstand HTTP     the real `inkstand serve` process, streaming `POST /v1/chat`
3. llama_cpp.server  llama-cpp-python's server from the same wheel, streaming
                     `POST /v1/chat/completions` (peer venv set up by peers.py)

Each gets one warm-up request, then `--repeats` timed ones, one per round, and the table
shows medians (stats.py has the definitions). Only one request runs at a time. A request
during which other processes used CPU is redone, a few times at most (host.py). Results go
to stdout and to bench/results/<UTC time>.json; the floors are reported as PASS/FAIL, and
the exit status is 0 unless something broke. Every server is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import host
import httpx
import report
from clients import stream_openai, stream_writer
from engine_raw import build_request, generate_once, loaded_engine
from peers import ensure_llama_cpp_venv, installed_wheel, llama_cpp_server_command, same_build
from servers import Server, free_port, serving
from stats import Sample, TooSlowError

from inkstand.config import find_embedded_model, load_settings

MESSAGES = [
    {
        "role": "user",
        "content": "Write a long, detailed essay about the history of the printing press, "
        "from Gutenberg to modern digital printing. Cover at least ten distinct periods.",
    }
]
FOREIGN_LIMIT = 0.05  # CPUs of other processes' work above which a sample is redone


def parse_args() -> argparse.Namespace:
    defaults = load_settings()  # Inkstand's own defaults, so every system gets the same
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed requests per system")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--ctx-size", type=int, default=defaults.ctx_size, help="per sequence")
    parser.add_argument("--slots", type=int, default=defaults.slots, help="Inkstand's slots")
    parser.add_argument(
        "--quiet-budget", type=float, default=240.0, help="max seconds to wait for idle CPUs"
    )
    return parser.parse_args()


@dataclass
class System:
    send: Callable[[], Sample]  # one timed request
    pids: list[int]  # whose CPU use is ours (the rest is "foreign")
    server: Server | None = None


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every server still stops
    args = parse_args()
    model = find_embedded_model()
    peer_python = ensure_llama_cpp_venv()
    build = same_build(peer_python)
    print(
        f"{Path(model).name}: {args.threads} threads, context {args.ctx_size}, "
        f"{args.slots} Inkstand slots, "
        f"max_tokens {args.max_tokens}, {args.repeats} repeats",
        file=sys.stderr,
    )
    with contextlib.ExitStack() as stack:
        systems, prompt_tokens = start_systems(stack, args, model, peer_python)
        idle = {name: s.server.rss_mb() for name, s in systems.items() if s.server}
        samples = Sampler(host.Quiet(args.quiet_budget), args.repeats).run(systems)
        runs = {
            name: {"samples": samples[name], "rss": memory(s.server, idle.get(name))}
            for name, s in systems.items()
        }
    config = vars(args) | {
        "model": Path(model).name,
        "prompt_tokens": prompt_tokens,
        "messages": MESSAGES,
        "wheel": str(installed_wheel()),
        "native_libs_sha256": build,
    }
    result = report.build(config, runs)
    report.show(result)
    report.save(result)
    return 0


def start_systems(stack: contextlib.ExitStack, args, model: str, peer_python: Path):
    """Load the engine and start both servers (stopped when `stack` closes); the senders."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inkstand-bench-")))
    overrides = {"threads": args.threads, "ctx_size": args.ctx_size, "slots": args.slots}
    engine = stack.enter_context(loaded_engine(model, replace(load_settings(), **overrides)))
    request = build_request(engine, MESSAGES, args.max_tokens)
    key, me = secrets.token_urlsafe(24), os.getpid()
    ink = stack.enter_context(serve_inkstand(args, tmp, key))
    peer = stack.enter_context(serve_llama_cpp(args, peer_python, model, tmp))
    client = stack.enter_context(httpx.Client(trust_env=False, timeout=60.0))
    body = {"messages": MESSAGES, "temperature": 0.0, "max_tokens": args.max_tokens}
    writer_body = body | {"model": "palmyra-x5"}
    # llama_cpp.server's default repeat_penalty (1.1) would change the greedy output
    openai_body = body | {"model": "smollm2", "repeat_penalty": 1.0}
    systems = {
        "engine": System(lambda: generate_once(engine, request), [me]),
        "inkstand": System(
            lambda: stream_writer(client, ink.base_url, key, writer_body), [me, ink.pid], ink
        ),
        "llama_cpp": System(
            lambda: stream_openai(client, peer.base_url, openai_body), [me, peer.pid], peer
        ),
    }
    return systems, len(request.prompt_tokens)


def memory(server: Server | None, idle_mb: float | None) -> dict | None:
    """RSS once loaded (before any request), now, and at its peak (VmHWM), in MiB."""
    if server is None:
        return None
    return {"idle_mb": idle_mb, "after_mb": server.rss_mb(), "peak_mb": server.peak_rss_mb()}


def serve_inkstand(args, tmp: Path, key: str):
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("inkstand")), "serve",
        "--port", str(port),
        "--data-dir", str(tmp / "data"),
        f"--api-key={key}",
        "--threads", str(args.threads),
        "--ctx-size", str(args.ctx_size),
        "--slots", str(args.slots),
    ]  # fmt: skip
    return serving("inkstand serve", cmd, port, ready_path="/health", log=tmp / "inkstand.log")


def serve_llama_cpp(args, python: Path, model: str, tmp: Path):
    port = free_port()
    cmd = llama_cpp_server_command(
        python, model, port, threads=args.threads, ctx_size=args.ctx_size
    )
    log = tmp / "llama_cpp.log"
    return serving("llama_cpp.server", cmd, port, ready_path="/v1/models", log=log)


class Sampler:
    """Warm-ups, then rounds of one request per system, rotating which system goes first.

    Before each request it waits for idle CPUs; a request during which other processes used
    more than FOREIGN_LIMIT CPUs is thrown away and redone (at most 2 * `repeats` times).
    """

    def __init__(self, quiet: host.Quiet, repeats: int) -> None:
        self.quiet = quiet
        self.repeats = repeats
        self.redos_left = 2 * repeats

    def run(self, systems: dict[str, System]) -> dict[str, list[Sample]]:
        names = list(systems)
        for name in names:
            print(f"warm-up: {name}", file=sys.stderr)
            self.take(systems[name])
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        for i in range(self.repeats):
            print(f"round {i + 1} of {self.repeats}", file=sys.stderr)
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(self.take(systems[name]))
        return samples

    def take(self, system: System) -> Sample:
        while True:
            self.quiet.wait()
            meter = host.CpuMeter(system.pids)
            try:
                sample = system.send()
            except TooSlowError as exc:
                if meter.foreign_cpus() < FOREIGN_LIMIT or not self.redos_left:
                    raise TooSlowError(
                        f"{exc}; meanwhile other processes used {meter.foreign_cpus():.2f} "
                        f"CPUs and ours {meter.own_cpus():.2f}"
                    ) from exc
                sample = None
            sample_foreign = meter.foreign_cpus()
            if sample is not None and (sample_foreign <= FOREIGN_LIMIT or not self.redos_left):
                sample.foreign_cpus = sample_foreign
                return sample
            self.redos_left -= 1
            print(f"  redo: other processes used {sample_foreign:.2f} CPUs", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())

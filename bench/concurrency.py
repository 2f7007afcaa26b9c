"""Concurrent chats: Inkstand against llama.cpp's C++ llama-server and llama_cpp.server.

    .venv/bin/python bench/concurrency.py          # everything, ~15 minutes on 2 cores
    .venv/bin/python bench/concurrency.py --baseline HEAD --peers --no-ceiling \
        --stages concurrency conversation          # this tree against its last commit

Servers on the embedded SmolLM2-135M GGUF, all started at once, with the same threads and
per-sequence context (see `start_targets` for their exact command lines):

    inkstand      `inkstand serve`, default 16 slots                  POST /v1/chat
    inkstand@REV  the same, at git revision `--baseline REV`          POST /v1/chat
    llama-server  built by scripts/llama_server.py, -np 16            POST /v1/chat/completions
    llama_cpp     `python -m llama_cpp.server` (peers.py venv)        POST /v1/chat/completions

`inkstand@REV` runs only with `--baseline` (baseline.py: REV's src/ exported to a temporary
directory, served by the same venv); `--peers` picks which of the last two run (both by
default, none with a bare `--peers`). The report divides by llama-server's figures and by
the baseline's, whichever ran.

Stages (each can be picked with --stages):

1. `concurrency`: at 1, 4 and 16 clients, rounds of one wave per server (the order rotating
   every round): every client streams one greedy request of `--max-tokens` at the same
   instant, with distinct prompts of the same length (workload.py). Aggregate output
   tokens/s = tokens / (last stream end - first request sent), median over rounds; TTFT
   and inter-token gaps are pooled over all requests of all rounds. Round 0 warms up.
   The same waves also go, in the same rotation, to `ceiling`: a bare loop over Inkstand's
   backend in its own process (ceiling.py), the most any server on this build could do
   with these prompts (`--no-ceiling` leaves it out).
2. `conversation`: `--conversations` chats of 8 turns per server, each turn resending the
   whole history with the server's own previous answer; TTFT per turn and the cached
   prompt tokens each server reports.
3. `churn`: Inkstand's RSS over 1,000 short requests (8 tokens, streaming and not, greedy
   and sampled, 8 at a time) after 100 of the same as warm-up.
4. `kv`: the raw engine at 16 sequences with each KV layout (kv_layout.py), after the
   servers have stopped.

Before each wave and turn the run waits for idle CPUs and meters other processes' CPU
while it runs (host.py); a disturbed wave is redone with fresh prompts, a bounded number
of times. Errors are counted, never retried. Every server stops on the way out, on error
too. Figures go to stdout and bench/results/concurrency-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# scripts/llama_server.py builds the llama-server peer; the tests use it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import concurrency_report as report
import host
import kv_layout
import load
import uvloop
from baseline import Baseline, checkout
from ceiling import Ceiling
from llama_server import ensure_llama_server, llama_server_command
from peers import ensure_llama_cpp_venv, llama_cpp_server_command
from servers import Server, free_port, rss_mb, serving
from workload import TOPICS, Prompts, follow_up, opening

from inkstand.config import find_embedded_model, load_settings

STAGES = ("concurrency", "conversation", "churn", "kv")
PEERS = ("llama-server", "llama_cpp")
FOREIGN_LIMIT = 0.05  # CPUs of other processes' work above which a wave is redone


@dataclass
class Target:
    """One server under test and how to talk to it."""

    name: str
    server: Server
    dialect: str
    headers: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # body fields this server needs

    def body(self, messages: list[dict], max_tokens: int, **more) -> dict:
        return {"messages": messages, "temperature": 0.0, "max_tokens": max_tokens} | (
            self.extra | more
        )

    @property
    def pid(self) -> int:
        return self.server.pid

    async def wave(self, client, chats: list[list[dict]], max_tokens: int):
        """Every chat streamed at once: one Trace per chat, and the wave's wall time."""
        jobs = [lambda m=m: self.send(client, self.body(m, max_tokens)) for m in chats]
        return await load.wave(jobs)

    async def send(self, client, body: dict) -> load.Trace:
        return await load.send(client, self.dialect, self.server.base_url, body, self.headers)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=5, help="timed waves per level")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve Inkstand at this git revision, as inkstand@REV",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=list(PEERS),
        help="the other servers to run (a bare --peers: none)",
    )
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="leave the bare loop (ceiling.py) out of the concurrency stage",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--conversations", type=int, default=3, help="per server")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--churn", type=int, default=1000, help="short requests (RSS test)")
    parser.add_argument("--kv-rounds", type=int, default=3, help="timed waves per KV layout")
    add_server_arguments(parser, quiet_budget=600.0)
    return parser.parse_args()


def add_server_arguments(parser: argparse.ArgumentParser, quiet_budget: float) -> None:
    """What every server of a side-by-side run shares, and the wait for idle CPUs."""
    defaults = load_settings()
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--ctx-size", type=int, default=defaults.ctx_size, help="per sequence")
    parser.add_argument("--slots", type=int, default=defaults.slots)
    parser.add_argument("--quiet-budget", type=float, default=quiet_budget,
                        help="max seconds to wait for idle CPUs over the run")  # fmt: skip


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every server still stops
    args = parse_args()
    model = find_embedded_model()
    binary, build = ensure_llama_server() if "llama-server" in args.peers else (None, None)
    peer_python = ensure_llama_cpp_venv() if "llama_cpp" in args.peers else None
    quiet = host.Quiet(args.quiet_budget)
    results: dict = {}
    baseline = None
    with contextlib.ExitStack() as stack:
        if args.baseline:
            baseline = stack.enter_context(checkout(args.baseline))
        targets = start_targets(stack, args, model, baseline, binary, peer_python)
        results["commands"] = {name: t.server.process.args for name, t in targets.items()}
        ceiling = None
        if "concurrency" in args.stages and not args.no_ceiling:
            ceiling = Ceiling(threads=args.threads, ctx_size=args.ctx_size, slots=args.slots)
            stack.callback(ceiling.close)
            results["commands"]["ceiling"] = ceiling.process.args
        results |= uvloop.run(Bench(args, quiet, targets, ceiling).run())
    if "kv" in args.stages:
        results["kv_layout"] = kv_layout.measure(
            sequences=args.slots, ctx_size=args.ctx_size, threads=args.threads,
            max_tokens=args.max_tokens, rounds=args.kv_rounds, quiet_budget=quiet.left,
        )  # fmt: skip
    config = vars(args) | {"model": Path(model).name, "llama_server": build, "git": git_state()}
    if baseline is not None:
        config["baseline_target"] = {"name": baseline.name, "commit": baseline.commit}
    result = report.build(config, results)
    report.show(result)
    report.save(result)
    return 0


def git_state() -> dict:
    """The commit under test and whether src/ had uncommitted changes at the time."""
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *cmd], capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_changes": git("status", "--short", "src")}


@dataclass(frozen=True)
class Spec:
    """How to start one server under test and talk to it."""

    cmd: list[str]
    ready: str  # the path polled until it answers 200
    dialect: str
    headers: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # body fields this server needs
    env: dict[str, str] | None = None  # None: the benchmark's own

    @contextlib.contextmanager
    def serve(self, name: str, port: int, log: Path) -> Iterator[Target]:
        with serving(name, self.cmd, port, ready_path=self.ready, log=log, env=self.env) as server:
            yield Target(name, server, self.dialect, self.headers, self.extra)


def inkstand_spec(args, port: int, data_dir: Path, baseline: Baseline | None = None) -> Spec:
    """The working tree's `inkstand serve`, or with `baseline` the same at that revision."""
    key = secrets.token_urlsafe(24)
    serve = [
        "serve", "--port", str(port), "--data-dir", str(data_dir), f"--api-key={key}",
        "--threads", str(args.threads), "--ctx-size", str(args.ctx_size),
        "--slots", str(args.slots),
    ]  # fmt: skip
    cmd, env = [str(Path(sys.executable).with_name("inkstand")), *serve], None
    if baseline is not None:
        cmd, env = baseline.command(serve)
    return Spec(cmd, "/health", "writer", {"Authorization": f"Bearer {key}"},
                {"model": "palmyra-x5"}, env)  # fmt: skip


def llama_server_spec(args, port: int, binary: Path, model: str) -> Spec:
    cmd = llama_server_command(binary, model, port, threads=args.threads,
                               ctx_size=args.ctx_size, slots=args.slots)  # fmt: skip
    return Spec(cmd, "/health", "openai", {}, {"model": "smollm2"})


def llama_cpp_spec(args, port: int, peer: Path, model: str) -> Spec:
    cmd = llama_cpp_server_command(peer, model, port, threads=args.threads,
                                   ctx_size=args.ctx_size)  # fmt: skip
    # llama_cpp.server interrupts a running stream when another request arrives unless told
    # not to; a server for several chats queues them instead.
    cmd += ["--interrupt_requests", "false"]
    # its default repeat_penalty (1.1) would change the greedy output
    return Spec(cmd, "/v1/models", "legacy", {}, {"model": "smollm2", "repeat_penalty": 1.0})


def start_targets(
    stack: contextlib.ExitStack,
    args,
    model: str,
    baseline: Baseline | None,
    binary: Path | None,
    peer: Path | None,
) -> dict[str, Target]:
    """Start the servers (stopped when `stack` closes); name -> Target, Inkstand first."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inkstand-bench-")))
    port = free_port()
    specs = {"inkstand": (port, inkstand_spec(args, port, tmp / "data"))}
    if baseline is not None:
        port = free_port()
        specs[baseline.name] = (port, inkstand_spec(args, port, tmp / "data-base", baseline))
    if peer is not None:
        port = free_port()
        specs["llama_cpp"] = (port, llama_cpp_spec(args, port, peer, model))
    return serve_all(stack, specs, tmp, args, binary, model)


def serve_all(stack, specs: dict, tmp: Path, args, binary, model: str) -> dict[str, Target]:
    """Start every `(port, spec)` of `specs`, and llama-server when `binary` is given, each
    logging to `tmp/<name>.log`; `stack` stops them."""
    if binary is not None:
        port = free_port()
        specs["llama-server"] = (port, llama_server_spec(args, port, binary, model))
    return {
        name: stack.enter_context(spec.serve(name, port, tmp / f"{name}.log"))
        for name, (port, spec) in specs.items()
    }


class Bench:
    """The HTTP stages, on one client and one event loop."""

    def __init__(
        self, args, quiet: host.Quiet, targets: dict[str, Target], ceiling: Ceiling | None
    ) -> None:
        self.args = args
        self.quiet = quiet
        self.targets = targets
        # the concurrency waves also go to the bare loop, in the same rotation
        self.wave_targets: dict[str, Target | Ceiling] = dict(targets)
        if ceiling is not None:
            self.wave_targets[ceiling.name] = ceiling
        self.prompts = Prompts()
        self.redos_left = 3 * len(args.levels) * len(targets)

    async def run(self) -> dict:
        out: dict = {"rss_idle_mb": {n: t.server.rss_mb() for n, t in self.targets.items()}}
        async with load.open_client() as client:
            self.client = client
            if "concurrency" in self.args.stages:
                out["concurrency"] = {lvl: await self.level(lvl) for lvl in self.args.levels}
            if "conversation" in self.args.stages:
                out["conversation"] = await self.conversations()
            if "churn" in self.args.stages:
                out["churn"] = await self.churn(self.targets["inkstand"])
        out["rss_end_mb"] = {n: t.server.rss_mb() for n, t in self.targets.items()}
        out["rss_peak_mb"] = {n: t.server.peak_rss_mb() for n, t in self.targets.items()}
        return out

    # -- 1. concurrency ----------------------------------------------------------------
    async def level(self, clients: int) -> dict[str, list[dict]]:
        waves: dict[str, list[dict]] = {name: [] for name in self.wave_targets}
        names = list(self.wave_targets)
        for r in range(self.args.rounds + 1):
            print(f"{clients} clients: {'warm-up' if r == 0 else f'round {r}'}", file=sys.stderr)
            batch = self.prompts.batch(clients)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                wave = await self.wave(self.wave_targets[name], batch)
                if r:
                    waves[name].append(wave)
        return waves

    async def wave(self, target: Target | Ceiling, batch: list[list[dict]]) -> dict:
        while True:
            self.quiet.wait()
            meter = host.CpuMeter([os.getpid(), target.pid])
            traces, wall = await target.wave(self.client, batch, self.args.max_tokens)
            foreign = meter.foreign_cpus()
            if foreign <= FOREIGN_LIMIT or self.redos_left <= 0:
                return {"wall_s": wall, "foreign_cpus": foreign, "traces": traces}
            self.redos_left -= 1
            print(f"  redo {target.name}: others used {foreign:.2f} CPUs", file=sys.stderr)
            batch = self.prompts.batch(len(batch))  # the old prompts are cached by now

    # -- 2. conversation ---------------------------------------------------------------
    async def conversations(self) -> dict[str, list[list[dict]]]:
        out: dict[str, list[list[dict]]] = {name: [] for name in self.targets}
        names = list(self.targets)
        for k in range(self.args.conversations):
            topic = TOPICS[-1 - k % len(TOPICS)]  # more conversations than topics repeat them
            for name in names[k % len(names) :] + names[: k % len(names)]:
                print(f"conversation {k + 1}: {name}", file=sys.stderr)
                out[name].append(await self.conversation(self.targets[name], topic))
        return out

    async def conversation(self, target: Target, topic: str) -> list[dict]:
        messages, turns = [opening(topic)], []
        for turn in range(1, self.args.turns + 1):
            self.quiet.wait()
            meter = host.CpuMeter([os.getpid(), target.server.pid])
            trace = await target.send(self.client, target.body(messages, self.args.max_tokens))
            turns.append({"turn": turn, "foreign_cpus": meter.foreign_cpus(), "trace": trace})
            if trace.error:
                break
            messages = [*messages, {"role": "assistant", "content": trace.text}]
            if turn < self.args.turns:
                messages.append(follow_up(turn + 1))
        return turns

    # -- 3. churn ----------------------------------------------------------------------
    async def churn(self, target: Target, warmup: int = 100, clients: int = 8) -> dict:
        """RSS after `warmup` short requests, then after every 100 of `--churn` more."""
        errors: list[str] = []

        async def worker(numbers: Iterator[int]) -> None:
            for i in numbers:  # the clients share one iterator: each number is sent once
                body = target.body(self.prompts.question(i), 8, stream=i % 2 == 0,
                                   temperature=0.0 if i % 3 else 0.8)  # fmt: skip
                trace = await target.send(self.client, body)
                if trace.error:
                    errors.append(trace.error)

        print(f"churn: {warmup} warm-up + {self.args.churn} short requests", file=sys.stderr)
        bounds = [0, warmup, *range(warmup + 100, warmup + self.args.churn + 1, 100)]
        samples = []
        for lo, hi in itertools.pairwise(bounds):
            numbers = iter(range(lo, hi))
            await asyncio.gather(*(worker(numbers) for _ in range(clients)))
            samples.append({"requests": hi, "rss_mb": rss_mb(target.server.pid)})
        return {"samples": samples, "errors": errors, "clients": clients, "warmup": warmup}


if __name__ == "__main__":
    raise SystemExit(main())

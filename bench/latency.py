"""Tail latency under open-loop load: Inkstand against llama.cpp's llama-server (issue 14).

    .venv/bin/python bench/latency.py                    # everything, ~60 minutes on 2 cores
    .venv/bin/python bench/latency.py --requests 30 --rounds 1 --bursts 1   # a smoke run
    .venv/bin/python bench/latency.py --stages big --peers   # Inkstand alone: the n=16 figure

Servers on the embedded SmolLM2-135M GGUF with the same threads, slots and per-sequence
context, started as bench/concurrency.py starts them (`inkstand serve`, `llama-server -np
SLOTS -c CTX*SLOTS`); `--variant NAME=DIR` also serves Inkstand from another copy of `src/`
(DIR/inkstand, run by this venv), e.g. the tree before a change. Only one server is busy at a
time: every round sends the same schedule to each in turn, the order rotating round by round.

The workload (`MixedPrompts`): one user message per request, distinct from every other
(a serial number first), of a length drawn from a log-normal distribution (median
`--median-tokens` 128, sigma 0.8, within 24-1200 tokens; mean about 175), made of
generated sentences of notes followed by a request for a long essay; greedy decoding,
streamed, `--max-tokens` 128. Lengths are counted with the model's own tokenizer.

Stages:
1. `capacity`: closed loop at `--slots` clients on each server for `--capacity-seconds`;
   requests completed per second after the first 20 s, for Inkstand and llama-server. The
   lower figure is the capacity the open-loop rates are fractions of (`--capacity R` skips
   this).
2. `poisson`: for each `--loads` fraction (0.4 and 0.8), `--rounds` rounds; a round draws
   `--requests` exponential gaps at that rate and as many prompts, and sends them to each
   server on schedule, whatever the server's progress (open loop). TTFT p50/p95/p99 and
   inter-token p95/p99 (gaps between content deltas, pooled over the round's requests) per
   round and server; the report gives the median over rounds, Inkstand / llama-server of
   the medians, and the per-round ratios (min-max: the spread).
3. `burst`: `--bursts` rounds of 16 requests sent at once (mixed lengths), per server.
4. `big` (Inkstand only): while two long streams run, a request for `n = SLOTS` choices
   arrives, then a small one; how long the small one takes to its first token while the
   big one waits, and when the big one is served.

Before each round the run waits for idle CPUs (host.Quiet) and meters other processes' CPU
while it runs (recorded, never redone: an open-loop round is minutes long). Errors are
counted, never retried. Results go to stdout and bench/results/latency-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import host
import latency_report as report
import load
import uvloop
from baseline import Baseline
from concurrency import Target, add_server_arguments, inkstand_spec, serve_all
from llama_server import ensure_llama_server
from servers import free_port
from workload import TOPICS

from inkstand.config import find_embedded_model

STAGES = ("capacity", "poisson", "burst", "big")

SUBJECTS = (
    "the harbour office", "a local printer", "the town council", "an engineer named Marta Lind",
    "the railway company", "a travelling merchant", "the university library", "two apprentices",
    "the guild of clockmakers", "a schoolteacher from the valley", "the customs house",
    "an anonymous letter writer", "the bishop's secretary", "a young cartographer",
)  # fmt: skip
VERBS = (
    "recorded", "described", "rebuilt", "questioned", "financed", "mapped", "copied",
    "abandoned", "praised", "measured", "repaired", "sold", "rediscovered", "argued about",
)  # fmt: skip
OBJECTS = (
    "the northern canal", "a new stone bridge", "the winter market", "the old lighthouse",
    "a shipment of paper", "the first public clock", "the flooded mill", "a set of brass type",
    "the western road", "a disputed boundary", "the municipal archive", "a steam pump",
)  # fmt: skip
TAILS = (
    "in the spring of {year}", "after a long dispute", "despite heavy rain that year",
    "for reasons nobody wrote down", "with help from neighbouring towns", "within a month",
    "according to a later account", "before the census of {year}", "at considerable cost",
)  # fmt: skip


class MixedPrompts:
    """Chats of mixed length, counted in the model's tokens, all distinct (serial numbers)."""

    def __init__(self, median: int, sigma: float = 0.8, low: int = 24, high: int = 1200) -> None:
        import llama_cpp

        self.median, self.sigma, self.low, self.high = median, sigma, low, high
        model = find_embedded_model()
        self._vocab = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
        self.serial = 10_000

    def tokens(self, text: str) -> int:
        return len(self._vocab.tokenize(text.encode(), add_bos=False, special=False))

    def length(self, rng: random.Random) -> int:
        drawn = self.median * math.exp(rng.gauss(0.0, self.sigma))
        return int(min(self.high, max(self.low, drawn)))

    def chat(self, rng: random.Random, length: int) -> list[dict]:
        """One user message of about `length` tokens (within one sentence's worth)."""
        self.serial += 1
        topic = rng.choice(TOPICS)
        head = f"Request {self.serial}. Notes from the archive:"
        ask = (
            f"\n\nUsing these notes, write a long, detailed essay about the history of {topic}, "
            "from its origins to the present day. Cover at least ten distinct periods."
        )
        used = self.tokens(head + ask)
        parts = [head]
        while used < length:
            sentence = " " + self._sentence(rng)
            used += self.tokens(sentence)
            parts.append(sentence)
        return [{"role": "user", "content": "".join(parts) + ask}]

    def _sentence(self, rng: random.Random) -> str:
        tail = rng.choice(TAILS).format(year=rng.randint(1700, 1950))
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {tail}."
        return text[0].upper() + text[1:]

    def draw(self, rng: random.Random, count: int) -> list[list[dict]]:
        return [self.chat(rng, self.length(rng)) for _ in range(count)]


@dataclass
class Plan:
    """What one round sends: request i at `at[i]` seconds after the start, with `chats[i]`."""

    at: list[float]
    chats: list[list[dict]]


def poisson_plan(prompts: MixedPrompts, rng: random.Random, rate: float, count: int) -> Plan:
    at, t = [], 0.0
    for _ in range(count):
        at.append(t)
        t += rng.expovariate(rate)
    return Plan(at, prompts.draw(rng, count))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--loads", type=float, nargs="+", default=[0.4, 0.8],
                        help="arrival rates as fractions of the capacity")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="rounds per load and server")
    parser.add_argument("--requests", type=int, default=100, help="requests per round")
    parser.add_argument("--bursts", type=int, default=5, help="rounds of 16 requests at once")
    parser.add_argument("--capacity", type=float, help="req/s; skips the capacity stage")
    parser.add_argument("--capacity-seconds", type=float, default=120.0)
    parser.add_argument("--median-tokens", type=int, default=128, help="prompt length median")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--peers", nargs="*", choices=["llama-server"], default=["llama-server"],
        help="the peers to run (a bare --peers: none)",
    )  # fmt: skip
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=DIR",
        help="also serve Inkstand from DIR/inkstand (a copy of src/), named NAME",
    )  # fmt: skip
    add_server_arguments(parser, quiet_budget=900.0)
    return parser.parse_args()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every server still stops
    args = parse_args()
    model = find_embedded_model()
    binary, build = ensure_llama_server() if args.peers else (None, None)
    quiet = host.Quiet(args.quiet_budget)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        targets = start_targets(stack, args, model, binary)
        commands = {name: t.server.process.args for name, t in targets.items()}
        results = uvloop.run(Bench(args, quiet, targets).run())
    config = vars(args) | {"model": Path(model).name, "llama_server": build}
    config |= {"started": started, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    result = report.build(config, commands, results)
    report.show(result)
    report.save(result)
    return 0


def start_targets(stack: contextlib.ExitStack, args, model: str, binary: Path | None) -> dict:
    """Start the servers (stopped when `stack` closes); name -> Target, Inkstand first."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inkstand-latency-")))
    specs = {}
    port = free_port()
    specs["inkstand"] = (port, _inkstand_spec(args, port, tmp / "data"))
    for variant in args.variant:
        name, _, src = variant.partition("=")
        port = free_port()
        base = Baseline(name, Path(src).resolve())
        specs[name] = (port, _inkstand_spec(args, port, tmp / f"data-{name}", base))
    return serve_all(stack, specs, tmp, args, binary, model)


def _inkstand_spec(args, port: int, data_dir: Path, base: Baseline | None = None):
    """`inkstand_spec` with a key argparse cannot take for an option (a leading "-")."""
    while True:
        spec = inkstand_spec(args, port, data_dir, base)
        if not spec.headers["Authorization"].startswith("Bearer -"):
            return spec


class Bench:
    """The stages, on one client and one event loop."""

    def __init__(self, args, quiet: host.Quiet, targets: dict[str, Target]) -> None:
        self.args = args
        self.quiet = quiet
        self.targets = targets
        self.names = list(targets)
        self.prompts = MixedPrompts(args.median_tokens)
        self.rng = random.Random(args.seed)

    def rotation(self, r: int) -> list[str]:
        k = r % len(self.names)
        return self.names[k:] + self.names[:k]

    async def run(self) -> dict:
        out: dict = {}
        async with load.open_client(connections=256) as client:
            self.client = client
            await self.warm_up()
            capacity = self.args.capacity
            if "capacity" in self.args.stages and capacity is None:
                measured = [n for n in self.rotation(1) if n in ("inkstand", "llama-server")]
                out["capacity"] = {name: await self.capacity(name) for name in measured}
                capacity = min(c["rps"] for c in out["capacity"].values())
            if "poisson" in self.args.stages:
                if capacity is None:
                    raise SystemExit("the poisson stage needs the capacity stage or --capacity")
                out["capacity_rps"] = capacity
                out["poisson"] = {
                    str(f): await self.poisson(f * capacity) for f in self.args.loads
                }  # fmt: skip
            if "burst" in self.args.stages:
                out["burst"] = await self.bursts()
            if "big" in self.args.stages:
                out["big"] = {n: await self.big(n) for n in self.names if n != "llama-server"}
        return out

    async def warm_up(self) -> None:
        chats = self.prompts.draw(self.rng, 4)
        for name in self.names:
            await self.targets[name].wave(self.client, chats, 8)

    # -- 1. capacity -------------------------------------------------------------------
    async def capacity(self, name: str) -> dict:
        """Closed loop at `slots` clients: requests completed per second in steady state."""
        target, args = self.targets[name], self.args
        print(f"capacity: {name}, {args.slots} clients, {args.capacity_seconds:.0f} s",
              file=sys.stderr)  # fmt: skip
        self.quiet.wait()
        rng = random.Random(self.args.seed + 1)  # the same prompts for every server
        start = time.perf_counter()
        stop_at = start + args.capacity_seconds
        ends: list[float] = []
        errors: list[str] = []

        async def client() -> None:
            while time.perf_counter() < stop_at:
                (chat,) = self.prompts.draw(rng, 1)
                trace = await target.send(self.client, target.body(chat, args.max_tokens))
                ends.append(trace.end)
                if trace.error:
                    errors.append(trace.error)

        meter = host.CpuMeter([os.getpid(), target.pid])
        await asyncio.gather(*(client() for _ in range(args.slots)))
        skip = min(20.0, args.capacity_seconds / 4)
        counted = [e for e in ends if start + skip <= e <= stop_at]
        rps = len(counted) / (args.capacity_seconds - skip)
        print(f"  {rps:.3f} req/s, {len(ends)} done, {len(errors)} errors {errors[:1]}",
              file=sys.stderr)  # fmt: skip
        return {"rps": rps, "completed": len(ends), "errors": errors,
                "foreign_cpus": meter.foreign_cpus()}  # fmt: skip

    # -- 2. open-loop Poisson arrivals ---------------------------------------------------
    async def poisson(self, rate: float) -> dict:
        rounds: dict[str, list[dict]] = {name: [] for name in self.names}
        for r in range(self.args.rounds):
            plan = poisson_plan(self.prompts, self.rng, rate, self.args.requests)
            for name in self.rotation(r):
                print(f"poisson {rate:.3f} req/s, round {r + 1}: {name}", file=sys.stderr)
                rounds[name].append(await self.open_loop(self.targets[name], plan))
        return {"rate_rps": rate, "rounds": rounds}

    async def open_loop(self, target: Target, plan: Plan) -> dict:
        await self.settle(target)
        self.quiet.wait()
        probe = await self.probe(target)
        meter = host.CpuMeter([os.getpid(), target.pid])
        start = time.perf_counter()

        async def one(at: float, chat: list[dict]) -> tuple[float, load.Trace]:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            trace = await target.send(self.client, target.body(chat, self.args.max_tokens))
            return trace.sent - (start + at), trace

        done = await asyncio.gather(
            *(one(at, c) for at, c in zip(plan.at, plan.chats, strict=True))
        )
        wall = time.perf_counter() - start
        return {"start": start, "wall_s": wall, "foreign_cpus": meter.foreign_cpus(),
                "load1": os.getloadavg()[0], "late_s": max(late for late, _ in done),
                "probe_s": probe, "traces": [t for _, t in done]}  # fmt: skip

    async def probe(self, target: Target) -> float | None:
        """The machine's speed of the moment: TTFT of a fresh 400-token prompt, alone."""
        (chat,) = [self.prompts.chat(random.Random(0), 400)]
        trace = await target.send(self.client, target.body(chat, 1))
        await self.settle(target)
        return trace.ttft

    async def settle(self, target: Target) -> None:
        """Let a server finish what it does between requests (decoding ahead, say)."""
        await asyncio.sleep(1.0)

    # -- 3. bursts ----------------------------------------------------------------------
    async def bursts(self) -> dict[str, list[dict]]:
        waves: dict[str, list[dict]] = {name: [] for name in self.names}
        for r in range(self.args.bursts):
            chats = self.prompts.draw(self.rng, 16)
            for name in self.rotation(r):
                print(f"burst {r + 1}: {name}", file=sys.stderr)
                target = self.targets[name]
                await self.settle(target)
                self.quiet.wait()
                meter = host.CpuMeter([os.getpid(), target.pid])
                traces, wall = await target.wave(self.client, chats, self.args.max_tokens)
                waves[name].append({"wall_s": wall, "foreign_cpus": meter.foreign_cpus(),
                                    "traces": traces})  # fmt: skip
        return waves

    # -- 4. a request for every slot, and a small one behind it -----------------------
    async def big(self, name: str, repeats: int = 3) -> list[dict]:
        """Two long streams run; a request for `n = slots` choices arrives, then a small one."""
        target, out = self.targets[name], []
        for r in range(repeats):
            print(f"big: {name}, {r + 1}", file=sys.stderr)
            await self.settle(target)
            self.quiet.wait()
            long_chats = self.prompts.draw(self.rng, 2)
            running = [
                asyncio.create_task(target.send(self.client, target.body(c, 384)))
                for c in long_chats
            ]
            await asyncio.sleep(1.5)  # both are generating
            (big_chat,) = self.prompts.draw(self.rng, 1)
            body = target.body(big_chat, 32, n=self.args.slots)
            big = asyncio.create_task(target.send(self.client, body))
            await asyncio.sleep(0.5)  # the big request waits now
            small_chat = [{"role": "user", "content": f"Question {r}: what is a lighthouse for?"}]
            small = await target.send(self.client, target.body(small_chat, 16))
            big_trace = await big
            streams = await asyncio.gather(*running)
            out.append({"small": small, "big": big_trace, "running": streams})
        return out


if __name__ == "__main__":
    raise SystemExit(main())

"""Upstream engines (issue 11): Inkstand in front of llama-server, against llama-server alone.

    .venv/bin/python bench/upstream.py            # everything, ~20 minutes on 2 quiet cores
    .venv/bin/python bench/upstream.py --quick    # a smoke run, ~2 minutes

Inkstand serves `palmyra-x5` from llama-server replicas: a config entry with `backend =
"openai"`, and `cache_scope = "shared"` (one tenant) so that Inkstand reports the engine's
`cached_tokens`. The replicas are the tests' (tests/support/llama_servers.py: the embedded
SmolLM2-135M GGUF, `--jinja`, the binary built by scripts/llama_server.py). Inkstand runs
as `inkstand serve --config FILE --threads 1`; the config names no local model, so none loads.

Stages (each can be picked with --stages):

1. `throughput`: one replica (`--engine-threads`, one slot per client of the largest level)
   reached two ways: `inkstand` (Writer `POST /v1/chat` to Inkstand, which forwards it) and
   `direct` (OpenAI `POST /v1/chat/completions` to the replica), streamed, greedy, the same
   `--max-tokens`. At each of `--levels` clients, `--rounds` rounds of one wave per path,
   which path goes first alternating round by round: every client streams one request at
   the same instant. Prompts are fresh for every wave (workload.py: same length, a new
   serial number), because both paths share one engine, whose prefix cache would otherwise
   favour the second wave of a round. tok/s = tokens / the wave's wall time. Reported:
   inkstand / direct of the medians, and per round (min-max, and the geometric mean with
   its 95 % interval). A warm-up round, not timed, sends both paths the same prompts and
   checks that the greedy answers agree. CPU seconds per 1,000 streamed tokens, from
   /proc over each wave: Inkstand's (its process and children) and the engine's.
2. `ttft`: `--ttft-requests` single requests per path (8 tokens each), alternating, on the
   same replica; the added TTFT is Inkstand's median minus the direct median (and the
   median of the differences within each pair).
3. `affinity`: Inkstand over two replicas and Inkstand over one (replicas of their own, one
   thread each; the conversations run one at a time, so only one engine works at once).
   `--conversations` chats of `--turns` turns, each turn resending the whole history with
   the answer just given (workload.py), each conversation on both setups in turn. Cached
   prompt tokens (`usage.prompt_token_details.cached_tokens`) summed over turns 2 and later:
   two replicas' as a share of one replica's. Which replica served each turn is read from
   the replicas' `/metrics` (`tokens_predicted_total`). Done twice: the conversations as
   workload.py writes them (no system message), and with a system message first.

`--engine-threads` defaults to 1: on this 2-core machine that leaves a core for Inkstand
and the benchmark's clients, as an engine on its own machine would; with 2, Inkstand's work
preempts one of ggml's two workers, which stalls the other (docs/benchmarks.md, "Sensitivity
to other load"), so the ratio also prices sharing two cores. Run both to see the difference.

Before each wave and request the run waits for idle CPUs and meters other processes' CPU
(host.py); a disturbed wave is redone with fresh prompts, a bounded number of times. Errors
are counted, never retried. Every process started stops on the way out, on error too.
Figures go to stdout (Markdown) and bench/results/upstream-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# scripts/llama_server.py builds the replicas' binary; tests/support starts them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import concurrency_report as levels_report
import host
import load
import report
import uvloop
from concurrency import Target
from llama_server import ensure_llama_server
from servers import Server, free_port, serving
from workload import TOPICS, Prompts, follow_up, opening

from tests.support.llama_servers import Replica, replicas

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("throughput", "ttft", "affinity")
MODEL = "palmyra-x5"
INKSTAND = str(Path(sys.executable).with_name("inkstand"))
FOREIGN_LIMIT = 0.05  # CPUs of other processes' work above which a wave is redone
TTFT_TOKENS = 8
SYSTEM = {"role": "system", "content": "You are a patient history teacher. Answer in detail."}
TPS_TARGET = 0.95  # minimum inkstand / direct tok/s at every level
TTFT_TARGET_MS = 15.0  # maximum added TTFT p50 at 1 client
CACHED_TARGET = 0.90  # minimum cached tokens with two replicas / with one
QUICK = {"levels": [1, 4, 16], "rounds": 1, "max_tokens": 32, "ttft_requests": 4,
         "conversations": 2, "quiet_budget": 15.0}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=10, help="timed waves per path and level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ttft-requests", type=int, default=30, help="per path")
    parser.add_argument("--conversations", type=int, default=8, help="per setup and variant")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--engine-threads", type=int, default=1, help="llama-server -t, -tb")
    parser.add_argument("--ctx-size", type=int, default=4096, help="per engine slot")
    parser.add_argument("--quiet-budget", type=float, default=600.0,
                        help="max seconds to wait for idle CPUs over the run")  # fmt: skip
    quick = f"a smoke run: sets {', '.join(QUICK)} (over their flags)"
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    return args


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every process still stops
    args = parse_args()
    _, build = ensure_llama_server()
    quiet = host.Quiet(args.quiet_budget)
    results: dict = {"commands": {}}
    with tempfile.TemporaryDirectory(prefix="inkstand-upstream-") as tmp:
        if {"throughput", "ttft"} & set(args.stages):
            results |= compare_paths(args, quiet, Path(tmp), results["commands"])
        if "affinity" in args.stages:
            results["affinity"] = compare_replicas(args, quiet, Path(tmp), results["commands"])
    config = vars(args) | {"llama_server": build, "git": git_state()}
    result = summarize(config, results)
    show(result)
    report.save(result, "upstream-")
    return 0


# -- processes ------------------------------------------------------------------------------
@contextlib.contextmanager
def llama_servers(count: int, tmp: Path, name: str, **options):
    """`count` llama-server replicas logging under `tmp/name`; stopped on the way out."""
    log_dir = tmp / name
    log_dir.mkdir()
    with replicas(count, log_dir=log_dir, **options) as started:
        yield started


def start_inkstand(
    stack: contextlib.ExitStack, tmp: Path, name: str, urls: list[str], ctx_size: int
) -> Target:
    """`inkstand serve` over the replicas at `urls` (stopped when `stack` closes)."""
    config = tmp / f"{name}.toml"
    listed = ", ".join(f'"{url}"' for url in urls)
    config.write_text(
        f'cache_scope = "shared"\n\n[models.{MODEL}]\nbackend = "openai"\nurls = [{listed}]\n'
        f'upstream_model = "smollm2"\nctx_size = {ctx_size}\nmax_output_tokens = 8192\n'
    )
    port, key = free_port(), secrets.token_urlsafe(24)
    cmd = [INKSTAND, "serve", "--config", str(config), "--port", str(port),
           "--data-dir", str(tmp / f"data-{name}"), f"--api-key={key}",
           "--threads", "1"]  # fmt: skip
    log = tmp / f"inkstand-{name}.log"
    server = stack.enter_context(serving(f"inkstand ({name})", cmd, port, ready_path="/health",
                                         log=log))  # fmt: skip
    return Target("inkstand", server, "writer", {"Authorization": f"Bearer {key}"},
                  {"model": MODEL})  # fmt: skip


def direct_target(engine: Replica) -> Target:
    assert engine.process is not None
    server = Server("llama-server", engine.process, engine.root, engine.log_path)
    return Target("direct", server, "openai", {}, {"model": "smollm2"})


def family(pid: int) -> list[int]:
    """`pid` and its children (Inkstand's planner worker, multiprocessing's tracker)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(p) for p in (task / "children").read_text().split()]
    return [pid, *kids]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a child that has gone counts no more
            total += host.cpu_seconds(pid)
    return total


def git_state() -> dict:
    """The commit under test and whether src/ had uncommitted changes (read-only git)."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *cmd],
                              capture_output=True, text=True)  # fmt: skip
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_changes": git("status", "--short", "src")}


# -- 1 and 2: the same engine through Inkstand and directly ---------------------------------
def compare_paths(args, quiet: host.Quiet, tmp: Path, commands: dict) -> dict:
    options = {"threads": args.engine_threads, "slots": max(args.levels),
               "ctx_size": args.ctx_size}  # fmt: skip
    with contextlib.ExitStack() as stack:
        (engine,) = stack.enter_context(llama_servers(1, tmp, "engine", **options))
        inkstand = start_inkstand(stack, tmp, "one-engine", [engine.url], args.ctx_size)
        commands["engine"] = engine.argv
        commands["inkstand"] = inkstand.server.process.args
        paths = Paths(args, quiet, {"inkstand": inkstand, "direct": direct_target(engine)})
        return uvloop.run(paths.run())


class Paths:
    """Waves and single requests to one engine, through Inkstand and directly, alternating."""

    def __init__(self, args, quiet: host.Quiet, targets: dict[str, Target]) -> None:
        self.args = args
        self.quiet = quiet
        self.targets = targets
        self.prompts = Prompts()
        self.redos_left = 3 * len(args.levels)
        inkstand, engine = targets["inkstand"].pid, targets["direct"].pid
        self.pids = {"inkstand": family(inkstand), "engine": [engine]}

    async def run(self) -> dict:
        out: dict = {}
        async with load.open_client() as client:
            self.client = client
            if "throughput" in self.args.stages:
                out["throughput"] = {n: await self.level(n) for n in self.args.levels}
            if "ttft" in self.args.stages:
                out["ttft"] = await self.ttft()
        return out

    def order(self, r: int) -> list[str]:
        names = list(self.targets)
        return names if r % 2 == 0 else names[::-1]

    async def level(self, clients: int) -> dict:
        print(f"{clients} clients: warm-up", file=sys.stderr)
        batch = self.prompts.batch(clients)
        warm = {name: await self.targets[name].wave(self.client, batch, self.args.max_tokens)
                for name in self.order(0)}  # fmt: skip
        pairs = zip(warm["inkstand"][0], warm["direct"][0], strict=True)
        same = [a.text == b.text and not a.error for a, b in pairs]
        waves: dict[str, list[dict]] = {name: [] for name in self.targets}
        for r in range(self.args.rounds):
            print(f"{clients} clients: round {r + 1}", file=sys.stderr)
            for name in self.order(r):
                waves[name].append(await self.wave(name, clients))
        return {"waves": waves, "warmup_same_answers": same}

    async def wave(self, name: str, clients: int) -> dict:
        target, everyone = self.targets[name], [os.getpid(), *itertools.chain(*self.pids.values())]
        while True:
            self.quiet.wait()
            batch = self.prompts.batch(clients)  # fresh: the engine holds the old ones
            meter = host.CpuMeter(everyone)
            before = {k: cpu_seconds(pids) for k, pids in self.pids.items()}
            traces, wall = await target.wave(self.client, batch, self.args.max_tokens)
            used = {k: cpu_seconds(pids) - before[k] for k, pids in self.pids.items()}
            foreign = meter.foreign_cpus()
            if foreign <= FOREIGN_LIMIT or self.redos_left <= 0:
                return {"wall_s": wall, "foreign_cpus": foreign, "traces": traces, "cpu_s": used}
            self.redos_left -= 1
            print(f"  redo {name}: others used {foreign:.2f} CPUs", file=sys.stderr)

    async def ttft(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {name: [] for name in self.targets}
        for i in range(self.args.ttft_requests + 1):  # the first pair warms up
            for name in self.order(i):
                self.quiet.wait()
                target = self.targets[name]
                meter = host.CpuMeter([os.getpid(), *itertools.chain(*self.pids.values())])
                body = target.body(self.prompts.batch(1)[0], TTFT_TOKENS)
                trace = await target.send(self.client, body)
                if i:
                    out[name].append(trace.record() | {"foreign_cpus": meter.foreign_cpus()})
        return out


# -- 3: prefix affinity ---------------------------------------------------------------------
def compare_replicas(args, quiet: host.Quiet, tmp: Path, commands: dict) -> dict:
    ctx_size = max(args.ctx_size, args.turns * (args.max_tokens + 64) + 512)
    options = {"threads": 1, "slots": 4, "ctx_size": ctx_size, "extra_args": ["--metrics"]}
    with contextlib.ExitStack() as stack:
        pair = stack.enter_context(llama_servers(2, tmp, "pair", **options))
        (alone,) = stack.enter_context(llama_servers(1, tmp, "alone", **options))
        setups = {
            "two": (start_inkstand(stack, tmp, "two", [e.url for e in pair], ctx_size), pair),
            "one": (start_inkstand(stack, tmp, "one", [alone.url], ctx_size), [alone]),
        }
        commands["affinity"] = {name: t.server.process.args for name, (t, _) in setups.items()}
        return uvloop.run(Conversations(args, quiet, setups).run())


class Conversations:
    """The same conversations through Inkstand over two replicas and over one."""

    def __init__(self, args, quiet: host.Quiet, setups: dict) -> None:
        self.args = args
        self.quiet = quiet
        self.setups: dict[str, tuple[Target, list[Replica]]] = setups

    async def run(self) -> dict:
        out: dict = {}
        names = list(self.setups)
        async with load.open_client() as client:
            self.client = client
            for variant in ("plain", "system"):
                out[variant] = {name: [] for name in names}
                for k in range(self.args.conversations):
                    topic = TOPICS[k % len(TOPICS)]
                    for name in names[k % 2 :] + names[: k % 2]:
                        print(f"conversation {k + 1} ({variant}): {name}", file=sys.stderr)
                        chat = await self.conversation(name, topic, variant == "system")
                        out[variant][name].append(chat)
        return out

    async def conversation(self, name: str, topic: str, system: bool) -> list[dict]:
        target, engines = self.setups[name]
        pids = [os.getpid(), *family(target.pid), *(e.process.pid for e in engines if e.process)]
        messages = [SYSTEM, opening(topic)] if system else [opening(topic)]
        turns = []
        for turn in range(1, self.args.turns + 1):
            self.quiet.wait()
            meter = host.CpuMeter(pids)
            before = await self.predicted(engines)
            trace = await target.send(self.client, target.body(messages, self.args.max_tokens))
            served = await self.served(engines, before)
            turns.append({"turn": turn, "replica": served, "cached_tokens": trace.cached_tokens,
                          "answer": hashlib.sha256(trace.text.encode()).hexdigest()[:12],
                          "foreign_cpus": meter.foreign_cpus()} | trace.record())  # fmt: skip
            if trace.error:
                break
            messages = [*messages, {"role": "assistant", "content": trace.text}]
            if turn < self.args.turns:
                messages.append(follow_up(turn + 1))
        return turns

    async def predicted(self, replicas_: list[Replica]) -> list[float]:
        """Each replica's `llamacpp:tokens_predicted_total`."""
        out = []
        for replica in replicas_:
            text = (await self.client.get(replica.root + "/metrics")).text
            line = next(x for x in text.splitlines() if x.startswith("llamacpp:tokens_predicted"))
            out.append(float(line.split()[1]))
        return out

    async def served(self, replicas_: list[Replica], before: list[float]) -> int | None:
        """The one replica whose count moved (polled a while: it may move after the stream
        ended); None if none or several did."""
        for _ in range(20):
            after = await self.predicted(replicas_)
            moved = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a]
            if moved:
                return moved[0] if len(moved) == 1 else None
            await asyncio.sleep(0.05)
        return None


# -- figures --------------------------------------------------------------------------------
def summarize(config: dict, results: dict) -> dict:
    out = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": config,
        "commands": results["commands"],
    }
    if "throughput" in results:
        out["throughput"] = {n: summarize_level(lv) for n, lv in results["throughput"].items()}
    if "ttft" in results:
        out["ttft"] = summarize_ttft(results["ttft"])
    if "affinity" in results:
        out["affinity"] = {v: summarize_affinity(c) for v, c in results["affinity"].items()}
    out["targets"] = targets(out)
    return out


def summarize_level(level: dict) -> dict:
    waves = level["waves"]
    paths = {name: levels_report.summarize_level(w) for name, w in waves.items()}
    for name, path in paths.items():
        tokens = sum(t.tokens for w in waves[name] for t in w["traces"] if not t.error)
        for part in ("inkstand", "engine"):
            used = sum(w["cpu_s"][part] for w in waves[name])
            path[f"{part}_cpu_s_per_1k"] = 1000 * used / tokens if tokens else None
        path["cpu_s_waves"] = [w["cpu_s"] for w in waves[name]]
    ours, theirs = paths["inkstand"], paths["direct"]
    pairs = list(zip(ours["tps_waves"], theirs["tps_waves"], strict=True))
    ratio = levels_report._versus("tok/s", ours["tps"], theirs["tps"], pairs)
    per_round = [a / b for a, b in pairs]
    return {"paths": paths, "ratio": ratio | {"per_round": per_round},
            "warmup_same_answers": level["warmup_same_answers"]}  # fmt: skip


def summarize_ttft(ttft: dict[str, list[dict]]) -> dict:
    ok = {n: [r["ttft_s"] for r in rows if r["ttft_s"]] for n, rows in ttft.items()}
    pairs = zip(ttft["inkstand"], ttft["direct"], strict=True)
    diffs = [a["ttft_s"] - b["ttft_s"] for a, b in pairs if a["ttft_s"] and b["ttft_s"]]
    p50 = {n: statistics.median(v) if v else None for n, v in ok.items()}
    ours, theirs = p50["inkstand"], p50["direct"]
    added = ours - theirs if ours is not None and theirs is not None else None
    return {"p50_s": p50, "added_p50_s": added,
            "paired_median_s": statistics.median(diffs) if diffs else None,
            "errors": sum(1 for rows in ttft.values() for r in rows if r["error"]),
            "requests": ttft}  # fmt: skip


def summarize_affinity(chats: dict[str, list[list[dict]]]) -> dict:
    setups = {name: _setup(convs) for name, convs in chats.items()}
    one, two = setups["one"]["cached"], setups["two"]["cached"]
    agree = [a["answer"] == b["answer"] for x, y in zip(chats["two"], chats["one"], strict=True)
             for a, b in zip(x, y, strict=False)]  # fmt: skip
    return {"setups": setups, "share": two / one if one else None,
            "same_answers": f"{sum(agree)}/{len(agree)}"}  # fmt: skip


def _setup(convs: list[list[dict]]) -> dict:
    later = [t for chat in convs for t in chat[1:] if not t["error"]]
    moves = [b["turn"] for chat in convs for a, b in itertools.pairwise(chat)
             if a["replica"] != b["replica"]]  # fmt: skip
    return {
        "cached": sum(t["cached_tokens"] or 0 for t in later),
        "prompt": sum((t["usage"] or {}).get("prompt_tokens") or 0 for t in later),
        "moved_at_turns": moves,  # the turns that went to another replica than the turn before
        "unknown_replica": sum(1 for chat in convs for t in chat if t["replica"] is None),
        "errors": [t["error"] for chat in convs for t in chat if t["error"]],
        "chats": convs,
    }


def targets(out: dict) -> list[dict]:
    rows = []
    for clients, level in out.get("throughput", {}).items():
        label = f"{clients} client{'s' if clients > 1 else ''}: tok/s inkstand / direct"
        rows.append(_target(label, level["ratio"]["ratio"], ">=", TPS_TARGET))
    ttft = out.get("ttft", {}).get("added_p50_s")
    if ttft is not None:
        rows.append(_target("added TTFT p50 at 1 client, ms", 1000 * ttft, "<=", TTFT_TARGET_MS))
    for variant, a in out.get("affinity", {}).items():
        label = f"cached tokens, 2 replicas / 1 ({VARIANTS[variant]})"
        rows.append(_target(label, a["share"], ">=", CACHED_TARGET))
    return rows


VARIANTS = {"plain": "no system message", "system": "with a system message"}


def _target(label: str, value: float | None, op: str, limit: float) -> dict:
    met = value is not None and (value >= limit if op == ">=" else value <= limit)
    return {"target": label, "value": value, "limit": f"{op} {limit:g}", "met": met}


def show(result: dict) -> None:
    """Print the tables as Markdown, so they can go into docs/benchmarks.md as printed."""
    c, m = result["config"], result["machine"]
    dirty = " plus uncommitted src/ changes" if c["git"]["src_changes"] else ""
    print(f"\nInkstand at {c['git']['commit'][:7]}{dirty}; {m['cpu']}, {m['nproc']} CPUs; "
          f"llama-server {c['llama_server'].get('version', '?')} (llama-cpp-python's vendored "
          f"llama.cpp), {c['engine_threads']} engine thread(s); max_tokens {c['max_tokens']}, "
          f"{c['rounds']} rounds")  # fmt: skip
    if "throughput" in result:
        _show_throughput(result["throughput"])
    if "ttft" in result:
        t = result["ttft"]
        p50 = {n: f"{1000 * v:.1f}" if v is not None else "-" for n, v in t["p50_s"].items()}
        added = _ms(t["added_p50_s"])
        paired = _ms(t["paired_median_s"])
        print(f"\nTTFT at 1 client, {c['ttft_requests']} requests per path: p50 inkstand "
              f"{p50['inkstand']} ms, direct {p50['direct']} ms, added {added} ms (median of "
              f"the pairs' differences {paired} ms), {t['errors']} errors")  # fmt: skip
    if "affinity" in result:
        _show_affinity(result["affinity"], c)
    print("\n| target (issue 11) | value | limit | met |\n|---|---:|---|---|")
    for row in result["targets"]:
        value = "-" if row["value"] is None else f"{row['value']:.2f}"
        print(f"| {row['target']} | {value} | {row['limit']} | "
              f"{'yes' if row['met'] else '**no**'} |")  # fmt: skip


def _show_throughput(levels: dict) -> None:
    print("\nStreaming, all clients at once: tok/s medians over rounds; inkstand / direct of "
          "the medians, per round (min-max), and the geometric mean of the rounds' ratios "
          "with its 95 % interval; CPU seconds per 1,000 tokens streamed\n")  # fmt: skip
    print("| clients | direct tok/s | inkstand tok/s | ratio | rounds min-max | geo mean (95 %) "
          "| TTFT p50 direct / inkstand ms | Inkstand CPU s/1k | engine CPU s/1k direct / "
          "inkstand | errors | warm-up answers same |")  # fmt: skip
    print("|---:|---:|---:|---:|---|---|---|---:|---|---:|---:|")
    for clients, lv in levels.items():
        d, i, r = lv["paths"]["direct"], lv["paths"]["inkstand"], lv["ratio"]
        spread = f"{min(r['per_round']):.3f}-{max(r['per_round']):.3f}"
        geo = f"{r['paired']:.3f}" + (" ({:.3f}-{:.3f})".format(*r["interval"])
                                      if r["interval"] else "")  # fmt: skip
        ttft = f"{1000 * d['ttft_p50_s']:.0f} / {1000 * i['ttft_p50_s']:.0f}"
        engine = f"{_num(d['engine_cpu_s_per_1k'])} / {_num(i['engine_cpu_s_per_1k'])}"
        errors = len(d["errors"]) + len(i["errors"])
        same = f"{sum(lv['warmup_same_answers'])}/{len(lv['warmup_same_answers'])}"
        print(f"| {clients} | {d['tps']:.1f} | {i['tps']:.1f} | {r['ratio']:.3f} | {spread} "
              f"| {geo} | {ttft} | {_num(i['inkstand_cpu_s_per_1k'])} | {engine} | {errors} "
              f"| {same} |")  # fmt: skip


def _show_affinity(variants: dict, c: dict) -> None:
    print(f"\nPrefix affinity: {c['conversations']} conversations of {c['turns']} turns per "
          "setup, one at a time; cached / prompt tokens over turns 2 and later\n")  # fmt: skip
    print("| conversations | 1 replica cached / prompt | 2 replicas cached / prompt | 2 / 1 "
          "| turns that moved replica (2 replicas) | same answers | errors |")  # fmt: skip
    print("|---|---:|---:|---:|---|---:|---:|")
    for variant, a in variants.items():
        one, two = a["setups"]["one"], a["setups"]["two"]
        moved = ", ".join(f"turn {t}" for t in two["moved_at_turns"]) or "none"
        if two["unknown_replica"]:
            moved += f" ({two['unknown_replica']} turns unattributed)"
        share = "-" if a["share"] is None else f"{a['share']:.3f}"
        errors = len(one["errors"]) + len(two["errors"])
        cells = [f"{s['cached']} / {s['prompt']}" for s in (one, two)]
        cells += [share, moved, a["same_answers"], str(errors)]
        print(f"| {VARIANTS[variant]} | " + " | ".join(cells) + " |")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:+.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a server's CPU goes during a wave of concurrent streams: `perf` by library and symbol.

    .venv/bin/python bench/profile.py                      # Inkstand, then llama-server
    .venv/bin/python bench/profile.py --servers inkstand --clients 4

For each server (started as concurrency.py starts it, one at a time): warm-up waves of
`--clients` greedy streams of `--max-tokens` (workload.py prompts), then one more wave with
`perf record -F 2000 -g -p <server pid>` attached for its whole length. Prints the share of
samples per shared object and the top symbols, and the CPU time each of the server's threads
used during the recorded wave (from /proc), so the engine's compute threads, the event loop
and anything else are told apart. Needs Linux `perf` (Debian: `linux-perf`) and permission
to attach to the server (root, or `kernel.perf_event_paranoid` <= 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# scripts/llama_server.py builds the llama-server peer; the tests use it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import load
import uvloop
from concurrency import Target, inkstand_spec, llama_server_spec
from llama_server import ensure_llama_server
from servers import free_port
from workload import Prompts

from inkstand.config import find_embedded_model


def main() -> int:
    args = parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt install linux-perf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="inkstand-profile-") as tmp:
        for name in args.servers:
            data = Path(tmp) / f"{name}.perf"
            with started(name, args, Path(tmp)) as target:
                threads = uvloop.run(record(target, args, data))
            print(f"\n## {name}: {args.clients} streams x {args.max_tokens} tokens\n")
            show_threads(threads)
            show_report(data, args.top)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", nargs="+", choices=("inkstand", "llama-server"),
                        default=["inkstand", "llama-server"])  # fmt: skip
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded waves first")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--ctx-size", type=int, default=4096, help="per sequence")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--top", type=int, default=12, help="symbols to list")
    return parser.parse_args()


def started(name: str, args, tmp: Path) -> contextlib.AbstractContextManager[Target]:
    """The server under `name`, started as concurrency.py starts it, stopped on the way out."""
    port = free_port()
    if name == "inkstand":
        spec = inkstand_spec(args, port, tmp / "data")
    else:
        spec = llama_server_spec(args, port, ensure_llama_server()[0], find_embedded_model())
    return spec.serve(name, port, tmp / f"{name}.log")


async def record(target: Target, args, data: Path) -> dict[str, float]:
    """Warm-up waves, then one recorded wave; CPU seconds per server thread during it."""
    prompts = Prompts(start=30000)
    async with load.open_client() as client:
        for _ in range(args.warmup):
            await target.wave(client, prompts.batch(args.clients), args.max_tokens)
        perf = subprocess.Popen(
            ["perf", "record", "-F", "2000", "-g", "-o", str(data), "-p", str(target.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # perf attaches
        before = thread_cpu(target.pid)
        traces, wall = await target.wave(client, prompts.batch(args.clients), args.max_tokens)
        after = thread_cpu(target.pid)
        perf.send_signal(signal.SIGINT)
        perf.wait()
    tokens = sum(t.tokens for t in traces)
    print(f"{target.name}: recorded wave {tokens / wall:.1f} tok/s over {wall:.2f} s",
          file=sys.stderr)  # fmt: skip
    return {tid: after[tid] - before.get(tid, 0.0) for tid in after} | {"wall": wall}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of `pid`, keyed "tid name"."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[f"{tid} {name}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def show_threads(threads: dict[str, float]) -> None:
    wall = threads.pop("wall")
    print(f"| thread | CPU s | of the wave's {wall:.2f} s |\n|---|---:|---:|")
    ranked = sorted(threads.items(), key=lambda kv: -kv[1])
    for key, cpu in ranked[:4]:
        print(f"| {key} | {cpu:.2f} | {cpu / wall:.0%} |")
    rest = sum(cpu for _, cpu in ranked[4:])
    print(f"| {len(ranked) - 4} other threads | {rest:.2f} | {rest / wall:.0%} |")


def show_report(data: Path, top: int) -> None:
    for sort in ("dso", "dso,symbol"):
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "-g", "none",
             "--stdio"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [line.split(None, 1) for line in report.splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
        print(f"\n| share | {sort} |\n|---:|---|")
        for share, what in rows[:top]:
            print(f"| {share} | {' '.join(what.split()).removesuffix(' - -')} |")


if __name__ == "__main__":
    raise SystemExit(main())

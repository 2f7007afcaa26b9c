"""KV layout at 16 sequences, raw engine: one KV stream per slot, or one unified buffer.

    .venv/bin/python bench/kv_layout.py --unified --ctx-size 65536   # one layout, JSON out

`measure()` runs each layout of `LAYOUTS` in a fresh process of this script (so the
resident memory is that layout's alone, and one context's allocations cannot leak into the
next), each loading Inkstand's `Engine` in process as engine_raw.py does and decoding
waves of `--sequences` concurrent greedy requests with distinct prompts (workload.py).
Per layout: aggregate output tokens/s per wave (median), TTFT, and VmRSS once loaded,
after the waves, and at the peak (VmHWM); then, for comparison, the same waves decoded by
a bare loop over the backend with no scheduler (`backend_loop`), the layout's ceiling.

With one stream per slot (`kv_unified = False`, Inkstand's default) `--ctx-size` is per
sequence; with a unified buffer it is the buffer's size, shared by all sequences, and every
token's attention spans all sequences' cells in use (masked), not just its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import host
from ceiling import pack
from servers import rss_mb
from workload import Prompts

LAYOUTS = {  # name -> (kv_unified, whether the buffer holds `sequences` contexts or one)
    "per-slot streams": (False, False),  # Inkstand's default: ctx_size per sequence
    "unified, same cells": (True, True),  # one buffer as large as all the streams together
    "unified, one context": (True, False),  # the buffer the same ctx_size gives when unified
}


def measure(*, sequences: int, ctx_size: int, threads: int, max_tokens: int, rounds: int,
            quiet_budget: float) -> dict[str, dict]:  # fmt: skip
    """Every layout of LAYOUTS, each in its own process; their results by name."""
    out = {}
    for name, (unified, times_sequences) in LAYOUTS.items():
        cells = ctx_size * sequences if unified and times_sequences else ctx_size
        cmd = [sys.executable, str(Path(__file__).resolve()),
               "--sequences", str(sequences), "--ctx-size", str(cells),
               "--threads", str(threads), "--max-tokens", str(max_tokens),
               "--rounds", str(rounds), "--quiet-budget", str(quiet_budget)]  # fmt: skip
        if unified:
            cmd.append("--unified")
        print(f"kv layout: {name} ({' '.join(cmd[2:])})", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"kv_layout.py failed for {name}:\n{done.stderr[-3000:]}")
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


async def _one(engine, request) -> tuple[int, float]:
    from inkstand.engine import Finish, TokenEvent  # loads llama.cpp: only in the child

    start, first = time.perf_counter(), None
    async with engine.stream(request) as events:
        async for event in events:
            if isinstance(event, TokenEvent) and event.text and first is None:
                first = time.perf_counter()
            elif isinstance(event, Finish):
                return event.completion_tokens, (first or time.perf_counter()) - start
    raise RuntimeError("the engine stream ended without a Finish event")


async def _wave(engine, requests) -> tuple[list[tuple[int, float]], float]:
    start = time.perf_counter()
    results = await asyncio.gather(*(_one(engine, r) for r in requests))
    return results, time.perf_counter() - start


def main() -> None:
    from inkstand.config import find_embedded_model, load_settings

    args = _parse_args()
    settings = replace(
        load_settings(), threads=args.threads, ctx_size=args.ctx_size, slots=args.sequences
    )
    model, quiet = find_embedded_model(), host.Quiet(args.quiet_budget)
    result = engine_waves(model, settings, args, quiet)
    result["loop_tps"] = statistics.median(backend_loop(model, settings, args, quiet))
    print(json.dumps(result))


def engine_waves(model: str, settings, args, quiet: host.Quiet) -> dict:
    """Inkstand's engine, as `inkstand serve` runs it, under waves of concurrent requests."""
    import uvloop
    from engine_raw import build_request, loaded_engine  # loads llama.cpp: only in the child

    me, prompts = os.getpid(), Prompts()
    with loaded_engine(model, settings, kv_unified=args.unified) as engine:
        idle = rss_mb(me)
        waves: list[dict] = []
        for _ in range(args.rounds + 1):  # the first wave warms up and is not counted
            batch = prompts.batch(args.sequences)
            requests = [build_request(engine, m, args.max_tokens) for m in batch]
            quiet.wait()
            meter = host.CpuMeter([me])
            results, wall = uvloop.run(_wave(engine, requests))
            tokens = sum(n for n, _ in results)
            waves.append({"tokens": tokens, "wall_s": wall, "tps": tokens / wall,
                          "ttft_s": [t for _, t in results],
                          "foreign_cpus": meter.foreign_cpus()})  # fmt: skip
        after = rss_mb(me)
    counted = waves[1:]
    return {
        "kv_unified": args.unified, "ctx_size": args.ctx_size, "sequences": args.sequences,
        "n_ctx_seq": engine.info.n_ctx,
        "tps": statistics.median(w["tps"] for w in counted),
        "ttft_p50_s": statistics.median(t for w in counted for t in w["ttft_s"]),
        "rss_idle_mb": idle, "rss_after_mb": after, "rss_peak_mb": rss_mb(me, "VmHWM"),
        "waves": waves,
    }  # fmt: skip


def backend_loop(model: str, settings, args, quiet: host.Quiet) -> list[float]:
    """The same waves with no scheduler: the layout's own ceiling, tokens/s per wave.

    Whole prompts are prefilled (as many per batch as fit), then every step decodes one
    token of every sequence, listed in ascending sequence id, with its greedy C sampler,
    until `max_tokens` (ignoring EOS). The order matters with one stream per sequence:
    llama.cpp then cuts a batch into one ubatch per run of consecutive ascending ids.
    """
    from engine_raw import build_request

    from inkstand.backends.base import BatchEntry
    from inkstand.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(model, n_ctx=settings.ctx_size, n_threads=settings.threads,
                              n_seq_max=settings.slots, kv_unified=args.unified)  # fmt: skip
    prompts, rates = Prompts(start=5000), []
    try:
        for _ in range(args.rounds + 1):
            batch = prompts.batch(args.sequences)
            requests = [build_request(backend, m, args.max_tokens) for m in batch]
            quiet.wait()
            start = time.perf_counter()
            token, pos = {}, {}
            items = list(enumerate(requests))
            for group in pack(items, backend.n_batch, lambda item: len(item[1].prompt_tokens)):
                for seq, request in group:
                    backend.begin(seq, request.sampling, 0)
                entries = [BatchEntry(seq, r.prompt_tokens, 0, True) for seq, r in group]
                for (seq, request), i in zip(group, backend.decode(entries), strict=True):
                    token[seq], pos[seq] = backend.sample(seq, i), len(request.prompt_tokens)
            for _ in range(args.max_tokens - 1):
                entries = [BatchEntry(seq, (token[seq],), pos[seq], True) for seq in sorted(token)]
                for entry, i in zip(entries, backend.decode(entries), strict=True):
                    token[entry.seq_id] = backend.sample(entry.seq_id, i)
                    pos[entry.seq_id] += 1
            rates.append(len(requests) * args.max_tokens / (time.perf_counter() - start))
    finally:
        backend.close()
    return rates[1:]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unified", action="store_true", help="one KV buffer for all")
    parser.add_argument("--ctx-size", type=int, default=4096, help="per sequence unless unified")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quiet-budget", type=float, default=120.0)
    return parser.parse_args()


if __name__ == "__main__":
    main()

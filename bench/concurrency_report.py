"""The concurrency run's figures: summaries, ratios against llama-server, floors, tables, JSON.

Ratios are Inkstand's figure divided by llama-server's (and llama_cpp.server's likewise),
so above 1 is better for throughput and below 1 is better for latency; each system's
tok/s is also given as a fraction of the bare loop's (ceiling.py) from the same run. The floors are
those of issue 3; each prints PASS or FAIL. The exit status does not depend on them.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import host
from load import Trace, percentile

RESULTS = Path(__file__).resolve().parent / "results"
BASE = "llama-server"
CEILING = "ceiling"  # the bare loop of ceiling.py, when it ran
TPS_FLOORS = {1: 1.0, 4: 1.0, 16: 1.1}  # clients -> minimum Inkstand / llama-server tok/s
TURN_TTFT_CEILING = 1.0  # maximum Inkstand / llama-server TTFT at the last turn
RSS_GROWTH_MB = 50.0


def build(config: dict, results: dict) -> dict:
    out = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": config,
        "commands": results.get("commands"),
        "rss_mb": {k: results.get(k) for k in ("rss_idle_mb", "rss_end_mb", "rss_peak_mb")},
    }
    if "concurrency" in results:
        out["concurrency"] = {
            clients: {name: summarize_level(waves) for name, waves in per.items()}
            for clients, per in results["concurrency"].items()
        }
    if "conversation" in results:
        out["conversation"] = {
            name: summarize_chats(chats) for name, chats in results["conversation"].items()
        }
    if "churn" in results:
        out["churn"] = summarize_churn(results["churn"])
    if "kv_layout" in results:
        out["kv_layout"] = results["kv_layout"]
    out["floors"] = floors(out)
    return out


def summarize_level(waves: list[dict]) -> dict:
    traces: list[Trace] = [t for w in waves for t in w["traces"]]
    ok = [t for t in traces if not t.error]
    tps = [sum(t.tokens for t in w["traces"] if not t.error) / w["wall_s"] for w in waves]
    ttft = [t.ttft for t in ok if t.ttft is not None]
    gaps = [g for t in ok for g in t.gaps()]
    return {
        "tps": statistics.median(tps),
        "tps_waves": tps,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "itl_p50_s": percentile(gaps, 50),
        "itl_p99_s": percentile(gaps, 99),
        "requests": len(traces),
        "errors": [t.error for t in traces if t.error],
        "tokens_per_request": sorted(Counter(t.tokens for t in ok).items()),
        "finish_reasons": dict(Counter(t.finish for t in ok)),
        "chunks_per_token": sum(len(t.arrivals) for t in ok) / max(1, sum(t.tokens for t in ok)),
        "max_foreign_cpus": max(w["foreign_cpus"] for w in waves),
        "waves": [
            {
                "wall_s": w["wall_s"],
                "foreign_cpus": w["foreign_cpus"],
                "traces": [t.record() for t in w["traces"]],
            }
            for w in waves
        ],  # fmt: skip
    }


def summarize_chats(chats: list[list[dict]]) -> dict:
    last = max(len(chat) for chat in chats)
    per_turn = []
    for turn in range(1, last + 1):
        rows = [c[turn - 1] for c in chats if len(c) >= turn and not c[turn - 1]["trace"].error]
        traces = [row["trace"] for row in rows]
        per_turn.append({
            "turn": turn,
            "ttft_s": statistics.median(t.ttft for t in traces) if traces else None,
            "prompt_tokens": [(t.usage or {}).get("prompt_tokens") for t in traces],
            "cached_tokens": [t.cached_tokens for t in traces],
            "timings": [_cache_timings(t.timings) for t in traces],
            "max_foreign_cpus": max((r["foreign_cpus"] for r in rows), default=0.0),
        })  # fmt: skip
    errors = [row["trace"].error for c in chats for row in c if row["trace"].error]
    raw = [[{"turn": r["turn"], "foreign_cpus": r["foreign_cpus"]} | r["trace"].record()
            for r in chat] for chat in chats]  # fmt: skip
    return {"turns": per_turn, "errors": errors, "chats": raw}


def _cache_timings(timings: dict | None) -> dict | None:
    if not timings:
        return None
    return {k: timings.get(k) for k in ("cache_n", "prompt_n", "prompt_ms")}


def summarize_churn(churn: dict) -> dict:
    samples = churn["samples"]
    after_warmup, end = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    return churn | {"rss_after_warmup_mb": after_warmup, "rss_end_mb": end,
                    "growth_mb": end - after_warmup}  # fmt: skip


def floors(out: dict) -> list[dict]:
    rows = []
    for clients, floor in TPS_FLOORS.items():
        level = out.get("concurrency", {}).get(clients)
        if level:
            ratio = level["inkstand"]["tps"] / level[BASE]["tps"]
            label = f"{clients} client{'s' if clients > 1 else ''}: tok/s vs llama-server"
            rows.append(_floor(label, ratio, ">=", floor))
    if "conversation" in out:
        ours, theirs = (out["conversation"][n]["turns"][-1] for n in ("inkstand", BASE))
        if ours["ttft_s"] and theirs["ttft_s"]:
            ratio = ours["ttft_s"] / theirs["ttft_s"]
            label = f"turn {ours['turn']} TTFT vs llama-server"
            rows.append(_floor(label, ratio, "<=", TURN_TTFT_CEILING))
    errors = _inkstand_errors(out)
    rows.append(_floor("Inkstand errors", errors, "<=", 0))
    if "churn" in out:
        rows.append(_floor("RSS growth, MB", out["churn"]["growth_mb"], "<", RSS_GROWTH_MB))
    return rows


def _floor(label: str, value: float, op: str, limit: float) -> dict:
    ok = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
    return {"floor": label, "value": value, "limit": f"{op} {limit:g}", "pass": ok}


def _inkstand_errors(out: dict) -> int:
    n = sum(len(level["inkstand"]["errors"]) for level in out.get("concurrency", {}).values())
    n += len(out.get("conversation", {}).get("inkstand", {}).get("errors", []))
    return n + len(out.get("churn", {}).get("errors", []))


# -- output -----------------------------------------------------------------------------
def show(result: dict) -> None:
    """Print the tables as Markdown, so they can go into docs/benchmarks.md as printed."""
    c = result["config"]
    dirty = " plus uncommitted src/ changes" if c["git"]["src_changes"] else ""
    print(f"\nInkstand at {c['git']['commit'][:7]}{dirty}")
    print(f"{result['machine']['cpu']}, {result['machine']['nproc']} CPUs; {c['model']}, "
          f"{c['threads']} threads, {c['ctx_size']} context per sequence, {c['slots']} slots, "
          f"max_tokens {c['max_tokens']}")  # fmt: skip
    if "concurrency" in result:
        _show_levels(result["concurrency"], c["rounds"])
    if "conversation" in result:
        _show_chats(result["conversation"])
    if "churn" in result:
        ch = result["churn"]
        more = ch["samples"][-1]["requests"] - ch["warmup"]
        print(f"\nInkstand RSS: {ch['rss_after_warmup_mb']:.0f} MB after {ch['warmup']} warm-up "
              f"requests, {ch['rss_end_mb']:.0f} MB after {more} more "
              f"({ch['growth_mb']:+.1f} MB), {len(ch['errors'])} errors")  # fmt: skip
    if "kv_layout" in result:
        _show_kv(result["kv_layout"])
    print("\n| floor | value | limit | verdict |\n|---|---:|---|---|")
    for f in result["floors"]:
        value = f"{f['value']:.2f}" if isinstance(f["value"], float) else f["value"]
        print(f"| {f['floor']} | {value} | {f['limit']} | {'PASS' if f['pass'] else '**FAIL**'} |")


def _show_levels(levels: dict, rounds: int) -> None:
    print(f"\nStreaming, all clients at once, medians of {rounds} waves (tok/s); "
          "TTFT and inter-token latency pooled over all requests\n")  # fmt: skip
    print("| clients | server | tok/s | × llama-server | × ceiling | TTFT p50 ms | TTFT p99 ms "
          "| ITL p50 ms | ITL p99 ms | requests | errors |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients, per in levels.items():
        base = per[BASE]["tps"]
        ceiling = per.get(CEILING, {}).get("tps")
        for name, s in per.items():
            of_ceiling = f"{s['tps'] / ceiling:.2f}" if ceiling else "-"
            ms = [f"{1000 * s[k]:.0f}" for k in ("ttft_p50_s", "ttft_p99_s")]
            ms += [f"{1000 * s[k]:.1f}" for k in ("itl_p50_s", "itl_p99_s")]
            print(f"| {clients} | {name} | {s['tps']:.1f} | {s['tps'] / base:.2f} | {of_ceiling} "
                  f"| {' | '.join(ms)} | {s['requests']} | {len(s['errors'])} |")  # fmt: skip


def _show_chats(chats: dict) -> None:
    print("\nConversation: TTFT per turn, median over conversations (ms)\n")
    turns = len(chats[BASE]["turns"])
    print("| server | " + " | ".join(f"turn {t}" for t in range(1, turns + 1)) + " | errors |")
    print("|---|" + "---:|" * (turns + 1))
    for name, s in chats.items():
        cells = [f"{1000 * t['ttft_s']:.0f}" if t["ttft_s"] else "-" for t in s["turns"]]
        print(f"| {name} | " + " | ".join(cells) + f" | {len(s['errors'])} |")
    print("\nlast turn, as each server reports it (one entry per conversation):")
    for name, s in chats.items():
        t = s["turns"][-1]
        print(f"  {name}: prompt_tokens {t['prompt_tokens']}, cached_tokens {t['cached_tokens']}"
              f", timings {t['timings']}")  # fmt: skip


def _show_kv(layouts: dict) -> None:
    print("\nRaw engine, 16 concurrent sequences, per KV layout (tok/s: median of waves)\n")
    print("| layout | KV cells | engine tok/s | TTFT p50 ms | RSS idle MB | RSS after MB "
          "| RSS peak MB | bare loop tok/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, k in layouts.items():
        cells = k["ctx_size"] * (1 if k["kv_unified"] else k["sequences"])
        print(f"| {name} | {cells} | {k['tps']:.1f} | {1000 * k['ttft_p50_s']:.0f} | "
              f"{k['rss_idle_mb']:.0f} | {k['rss_after_mb']:.0f} | {k['rss_peak_mb']:.0f} | "
              f"{k['loop_tps']:.1f} |")  # fmt: skip


def save(result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = result["time"].replace("-", "").replace(":", "")
    out = RESULTS / f"concurrency-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out.relative_to(RESULTS.parent.parent)}")
    return out

"""The latency run's figures: per-round summaries, medians over rounds, ratios, floors, JSON.

A round's figures pool its requests: TTFT percentiles over its requests, inter-token
percentiles over all gaps between content deltas of all its streams. Over rounds a figure
is the median of the rounds' figures; a ratio is Inkstand's median over llama-server's,
with the ratios of the rounds (each round sent the same schedule to both) as its spread.
Ratios below 1 are better. The floors are issue 14's; each prints PASS or FAIL, the exit
status does not depend on them.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import host
from load import Trace, percentile

RESULTS = Path(__file__).resolve().parent / "results"
BASE = "llama-server"
FIGURES = ("ttft_p50", "ttft_p95", "ttft_p99", "itl_p50", "itl_p95", "itl_p99")
FLOORS = {"ttft_p95": 0.8, "ttft_p50": 1.0, "itl_p95": 1.0}  # figure -> max Inkstand / peer
LONG_GAP_S = 0.1  # gaps over this count as stalls (the share is a diagnostic)
ROUND_KEYS = ("wall_s", "foreign_cpus", "load1", "late_s", "probe_s")


def summarize(traces: list[Trace]) -> dict:
    good = [t for t in traces if not t.error and t.ttft is not None]
    ttfts = [t.ttft for t in traces if not t.error and t.ttft is not None]
    gaps = [g for t in good for g in t.gaps()]
    prompts = [t.usage["prompt_tokens"] for t in good if t.usage]
    out = {
        "requests": len(traces),
        "errors": len(traces) - len(good),
        "error_kinds": sorted({t.error[:80] for t in traces if t.error}),
        "tokens_mean": statistics.fmean(t.tokens for t in good) if good else None,
        "prompt_tokens_mean": statistics.fmean(prompts) if prompts else None,
        "stalls": sum(g > LONG_GAP_S for g in gaps) / len(gaps) if gaps else None,
    }
    for q in (50, 95, 99):
        out[f"ttft_p{q}"] = percentile(ttfts, q)
        out[f"itl_p{q}"] = percentile(gaps, q)
    out["ttft_by_prompt"] = _by_prompt(good)
    return out


def _by_prompt(traces: list[Trace]) -> dict:
    """TTFT p50 / p95 for short (< 100 tokens), medium and long (>= 300) prompts."""
    buckets: dict[str, list[float]] = {"short": [], "medium": [], "long": []}
    for t in traces:
        n = (t.usage or {}).get("prompt_tokens", 0)
        key = "short" if n < 100 else "long" if n >= 300 else "medium"
        if t.ttft is not None:
            buckets[key].append(t.ttft)
    return {
        k: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)}
        for k, v in buckets.items()
    }


def over_rounds(rounds: list[dict]) -> dict:
    """The median over rounds of every figure, and each round's figures and requests."""
    per = [r["summary"] for r in rounds]
    out = {f: statistics.median(p[f] for p in per) for f in FIGURES}
    out["errors"] = sum(p["errors"] for p in per)
    out["stalls"] = statistics.median(p["stalls"] or 0.0 for p in per)
    out["rounds"] = per
    out["requests"] = [r["traces"] for r in rounds]
    return out


def ratios(ours: dict, theirs: dict) -> dict:
    """figure -> {ratio of medians, per-round ratios}, rounds paired by position."""
    out = {}
    for f in FIGURES:
        paired = [a[f] / b[f] for a, b in zip(ours["rounds"], theirs["rounds"], strict=False)]
        out[f] = {"ratio": ours[f] / theirs[f], "rounds": paired}
    return out


def build(config: dict, commands: dict, results: dict) -> dict:
    out: dict = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": config,
        "commands": commands,
        "capacity": results.get("capacity"),
        "capacity_rps": results.get("capacity_rps"),
    }
    for stage in ("poisson", "burst"):
        if stage in results:
            out[stage] = _stage(stage, results[stage])
    if "big" in results:
        out["big"] = {name: _big(runs) for name, runs in results["big"].items()}
    out["floors"] = _floors(out)
    return out


def _stage(stage: str, data: dict) -> dict:
    levels = data if stage == "poisson" else {"16 at once": {"rounds": data}}
    out = {}
    for level, info in levels.items():
        servers = {}
        for name, rounds in info["rounds"].items():
            for r in rounds:
                r["summary"] = summarize(r["traces"])
                r["summary"] |= {k: r[k] for k in ROUND_KEYS if k in r}
                start = r.get("start", min(t.sent for t in r["traces"]))
                r["traces"] = [_record(t, start) for t in r["traces"]]
            servers[name] = over_rounds(rounds)
        entry = {"rate_rps": info.get("rate_rps"), "servers": servers}
        if BASE in servers:
            entry["ratios"] = {
                n: ratios(s, servers[BASE]) for n, s in servers.items() if n != BASE
            }  # fmt: skip
        out[level] = entry
    return out


def _record(trace: Trace, start: float) -> dict:
    """One request: `sent_s` from the round's start, its gaps between content deltas."""
    gaps = [round(g, 5) for g in trace.gaps()]
    return trace.record() | {"sent_s": round(trace.sent - start, 4), "gaps": gaps}


def _big(runs: list[dict]) -> dict:
    rows = []
    for run in runs:
        small, big = run["small"], run["big"]
        rows.append({
            "small_ttft_s": small.ttft, "small_total_s": small.end - small.sent,
            "small_error": small.error, "big_ttft_s": big.ttft,
            "big_total_s": big.end - big.sent, "big_error": big.error,
            "big_choices_tokens": big.tokens,
            "running_errors": [t.error for t in run["running"] if t.error],
        })  # fmt: skip
    ok = [r for r in rows if not r["small_error"]]
    return {
        "small_ttft_p50_s": statistics.median(r["small_ttft_s"] for r in ok) if ok else None,
        "big_ttft_p50_s": statistics.median(r["big_ttft_s"] or float("nan") for r in rows),
        "runs": rows,
    }


def _floors(out: dict) -> list[dict]:
    rows = []
    for level, entry in (out.get("poisson") or {}).items():
        for figure, limit in FLOORS.items():
            ratio = (entry.get("ratios") or {}).get("inkstand", {}).get(figure)
            if ratio is not None:
                rows.append({"load": level, "figure": figure, "ratio": ratio["ratio"],
                             "rounds": ratio["rounds"], "max": limit,
                             "pass": ratio["ratio"] <= limit})  # fmt: skip
    return rows


def show(result: dict) -> None:
    print(f"\nlatency run {result['time']}; capacity {_num(result.get('capacity_rps'))} req/s")
    for name, cap in (result.get("capacity") or {}).items():
        print(f"  capacity {name}: {cap['rps']:.3f} req/s, {len(cap['errors'])} errors")
    for stage in ("poisson", "burst"):
        for level, entry in (result.get(stage) or {}).items():
            rate = entry.get("rate_rps")
            title = f"{stage} {level}" + (f" ({rate:.3f} req/s)" if rate else "")
            print(f"\n{title}: medians over rounds, ms (stalls: gaps over 100 ms)\n")
            print("| server | TTFT p50 | p95 | p99 | ITL p50 | p95 | p99 | stalls | errors |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, s in entry["servers"].items():
                cells = [f"{1000 * s[f]:.0f}" for f in FIGURES]
                print(f"| {name} | {' | '.join(cells)} | {s['stalls']:.3f} | {s['errors']} |")
            for name, rs in (entry.get("ratios") or {}).items():
                print(f"\n{name} / {BASE}: ratio of medians (per-round min-max)")
                for f in FIGURES:
                    r = rs[f]
                    spread = f"{min(r['rounds']):.2f}-{max(r['rounds']):.2f}" if r["rounds"] else ""
                    print(f"  {f:9} {r['ratio']:.2f} ({spread})")
    for name, big in (result.get("big") or {}).items():
        small, large = _num(big["small_ttft_p50_s"]), _num(big["big_ttft_p50_s"])
        print(f"\nbig ({name}): small request TTFT p50 {small} s while n=slots waits; "
              f"the big one's TTFT p50 {large} s")  # fmt: skip
    for row in result["floors"]:
        verdict = "PASS" if row["pass"] else "FAIL"
        print(f"floor {row['load']} {row['figure']} <= {row['max']}: {row['ratio']:.2f} {verdict}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def save(result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"latency-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {path}")
    return path

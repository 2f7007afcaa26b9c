"""The concurrency run's figures: summaries, ratios against llama-server, floors, tables, JSON.

Ratios are Inkstand's figure divided by llama-server's (and llama_cpp.server's likewise),
so above 1 is better for throughput and below 1 is better for latency; each system's
tok/s is also given as a fraction of the bare loop's (ceiling.py) from the same run. The floors are
those of issue 3; each prints PASS or FAIL. The exit status does not depend on them.

With `--baseline`, every figure is also divided by the earlier Inkstand's (`inkstand@REV`),
and a table compares the two: the ratio of the medians, and the ratios of the waves (or
conversations) sent in the same round, with a 95 % interval of their geometric mean; those
pairs share the machine's state of the moment, so they resolve a small difference sooner.
"""

from __future__ import annotations

import json
import math
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
    if base := config.get("baseline_target"):
        out["versus_baseline"] = versus(out, base["name"])
    out["floors"] = floors(out) if _ran(out, BASE) else []
    return out


def _ran(out: dict, name: str) -> bool:
    parts = [*out.get("concurrency", {}).values(), out.get("conversation", {})]
    return any(name in part for part in parts)


def references(out: dict) -> list[str]:
    """The systems figures are divided by: llama-server and the baseline, those that ran."""
    base = out["config"].get("baseline_target")
    return [n for n in (BASE, base and base["name"]) if n and _ran(out, n)]


def versus(out: dict, base: str) -> list[dict]:
    """Inkstand against `base`: tok/s at each level and the last turn's TTFT."""
    rows = []
    for clients, per in out.get("concurrency", {}).items():
        ours, theirs = per["inkstand"], per[base]
        pairs = list(zip(ours["tps_waves"], theirs["tps_waves"], strict=True))
        label = f"tok/s, {clients} client{'s' if clients > 1 else ''}"
        rows.append(_versus(label, ours["tps"], theirs["tps"], pairs))
    if "conversation" in out:
        ours, theirs = (out["conversation"][n] for n in ("inkstand", base))
        turn = ours["turns"][-1]["turn"]
        ttft = [[_turn_ttft(chat, turn) for chat in s["chats"]] for s in (ours, theirs)]
        pairs = [(a, b) for a, b in zip(*ttft, strict=True) if a and b]
        label = f"turn {turn} TTFT, s"
        rows.append(_versus(label, ours["turns"][-1]["ttft_s"], theirs["turns"][-1]["ttft_s"],
                            pairs))  # fmt: skip
    return rows


def _turn_ttft(chat: list[dict], turn: int) -> float | None:
    row = chat[turn - 1] if len(chat) >= turn else {}
    return None if row.get("error") else row.get("ttft_s")


def _versus(label: str, ours: float | None, theirs: float | None, pairs: list) -> dict:
    logs = [math.log(a / b) for a, b in pairs]
    paired = math.exp(statistics.fmean(logs)) if logs else None
    interval = None
    if paired and len(logs) > 1:
        half = _t95(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        interval = [paired * math.exp(-half), paired * math.exp(half)]
    return {"figure": label, "inkstand": ours, "baseline": theirs, "pairs": len(logs),
            "ratio": ours / theirs if ours and theirs else None, "paired": paired,
            "interval": interval}  # fmt: skip


def _t95(df: int) -> float:
    """Student's t for a two-sided 95 % interval (within 0.01 of the tables past df 9)."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    return table.get(df, 1.96 + 2.4 / df)


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
    base = c.get("baseline_target")
    against = f", against {base['name']} ({c['baseline']})" if base else ""
    print(f"\nInkstand at {c['git']['commit'][:7]}{dirty}{against}")
    print(f"{result['machine']['cpu']}, {result['machine']['nproc']} CPUs; {c['model']}, "
          f"{c['threads']} threads, {c['ctx_size']} context per sequence, {c['slots']} slots, "
          f"max_tokens {c['max_tokens']}")  # fmt: skip
    refs = references(result)
    if "concurrency" in result:
        _show_levels(result["concurrency"], c["rounds"], refs)
    if "conversation" in result:
        _show_chats(result["conversation"])
    if "versus_baseline" in result:
        _show_versus(result["versus_baseline"], base["name"])
    if "churn" in result:
        ch = result["churn"]
        more = ch["samples"][-1]["requests"] - ch["warmup"]
        print(f"\nInkstand RSS: {ch['rss_after_warmup_mb']:.0f} MB after {ch['warmup']} warm-up "
              f"requests, {ch['rss_end_mb']:.0f} MB after {more} more "
              f"({ch['growth_mb']:+.1f} MB), {len(ch['errors'])} errors")  # fmt: skip
    if "kv_layout" in result:
        _show_kv(result["kv_layout"])
    if not result["floors"]:
        return
    print("\n| floor | value | limit | verdict |\n|---|---:|---|---|")
    for f in result["floors"]:
        value = f"{f['value']:.2f}" if isinstance(f["value"], float) else f["value"]
        print(f"| {f['floor']} | {value} | {f['limit']} | {'PASS' if f['pass'] else '**FAIL**'} |")


def _show_levels(levels: dict, rounds: int, refs: list[str]) -> None:
    print(f"\nStreaming, all clients at once, medians of {rounds} waves (tok/s); "
          "TTFT and inter-token latency pooled over all requests\n")  # fmt: skip
    columns = "".join(f"× {r} | " for r in refs)
    print(f"| clients | server | tok/s | {columns}× ceiling | TTFT p50 ms | TTFT p99 ms "
          "| ITL p50 ms | ITL p99 ms | requests | errors |")  # fmt: skip
    print("|---:|---|---:|" + "---:|" * len(refs) + "---:|---:|---:|---:|---:|---:|---:|")
    for clients, per in levels.items():
        ceiling = per.get(CEILING, {}).get("tps")
        for name, s in per.items():
            ratios = [f"{s['tps'] / per[r]['tps']:.2f}" for r in refs]
            ratios.append(f"{s['tps'] / ceiling:.2f}" if ceiling else "-")
            ms = [f"{1000 * s[k]:.0f}" for k in ("ttft_p50_s", "ttft_p99_s")]
            ms += [f"{1000 * s[k]:.1f}" for k in ("itl_p50_s", "itl_p99_s")]
            print(f"| {clients} | {name} | {s['tps']:.1f} | {' | '.join(ratios + ms)} "
                  f"| {s['requests']} | {len(s['errors'])} |")  # fmt: skip


def _show_chats(chats: dict) -> None:
    print("\nConversation: TTFT per turn, median over conversations (ms)\n")
    turns = max(len(s["turns"]) for s in chats.values())
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


def _show_versus(rows: list[dict], base: str) -> None:
    print(f"\ninkstand / {base}: the ratio of the medians, and the geometric mean of "
          "the ratios of waves (conversations) of one round, with its 95 % interval\n")  # fmt: skip
    print(f"| figure | inkstand | {base} | ratio | paired | 95 % interval | pairs |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        cells = [_num(r[k]) for k in ("inkstand", "baseline")]
        cells += [_num(r[k], ".3f") for k in ("ratio", "paired")]
        cells.append("{:.3f}-{:.3f}".format(*r["interval"]) if r["interval"] else "-")
        print(f"| {r['figure']} | {' | '.join(cells)} | {r['pairs']} |")


def _num(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


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

"""The run's figures: medians, ratios against the floors, a Markdown table, a JSON file.

Ratios are Inkstand HTTP's figure divided by the other system's; PASS/FAIL compares the
decode-rate ratio with its floor. The e2e ratio is shown alongside for information.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import host
from stats import Summary

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {"engine": "raw engine", "inkstand": "inkstand HTTP", "llama_cpp": "llama_cpp.server"}
FLOORS = {"engine": 0.90, "llama_cpp": 2.5}  # minimum inkstand HTTP / that system, decode tok/s
COLUMNS = ("system", "tokens", "decode tok/s", "e2e tok/s", "TTFT p50 ms", "RSS idle MB",
           "RSS after MB", "RSS peak MB")  # fmt: skip


def build(config: dict, runs: dict[str, dict]) -> dict:
    summaries = {name: Summary.of(run["samples"]) for name, run in runs.items()}
    texts = {name: run["samples"][0].text for name, run in runs.items()}
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": config,
        "systems": {
            name: {
                "label": LABELS[name],
                "summary": vars(summaries[name]),
                "rss": run.get("rss"),
                "samples": [s.record() for s in run["samples"]],
                "text": texts[name],
            }
            for name, run in runs.items()
        },
        "identical_output": len(set(texts.values())) == 1,
        "ratios": ratios(summaries),
    }


def ratios(summaries: dict[str, Summary]) -> dict[str, dict]:
    http = summaries["inkstand"]
    out = {}
    for name, floor in FLOORS.items():
        decode = http.decode_tps / summaries[name].decode_tps
        out[name] = {
            "decode": decode,
            "e2e": http.e2e_tps / summaries[name].e2e_tps,
            "floor": floor,
            "verdict": "PASS" if decode >= floor else "FAIL",
        }
    return out


def show(result: dict) -> None:
    """Print the table as Markdown, so it can go into docs/benchmarks.md as printed."""
    m, c = result["machine"], result["config"]
    print(f"\n{m['cpu']}, {m['nproc']} CPUs; {c['model']}, {c['threads']} threads, "
          f"prompt {c['prompt_tokens']} tokens, max_tokens {c['max_tokens']}, "
          f"medians of {c['repeats']}\n")  # fmt: skip
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---:" if i else "---" for i in range(len(COLUMNS))) + "|")
    for system in result["systems"].values():
        s, rss = system["summary"], system["rss"] or {}
        speed = [f"{s['decode_tps']:.1f}", f"{s['e2e_tps']:.1f}", f"{s['ttft_ms']:.0f}"]
        memory = [_mb(rss.get(k)) for k in ("idle_mb", "after_mb", "peak_mb")]
        cells = [system["label"], s["tokens"], *speed, *memory]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print()
    for name, r in result["ratios"].items():
        label = f"inkstand HTTP / {LABELS[name]}"
        print(f"{label:<34} decode {r['decode']:.2f} (floor {r['floor']:.2f}) {r['verdict']}"
              f"   e2e {r['e2e']:.2f}")  # fmt: skip
    print(f"identical output from all three: {'yes' if result['identical_output'] else 'no'}")
    disturbed = {
        name: max(s["foreign_cpus"] for s in system["samples"])
        for name, system in result["systems"].items()
    }
    if max(disturbed.values()) > 0.1:
        print(f"WARNING: other processes used CPU during some samples (max CPUs): {disturbed}")


def save(result: dict, prefix: str = "") -> Path:
    """Write `result` to bench/results/<prefix><its UTC time>.json."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{prefix}{result['time'].replace('-', '').replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out.relative_to(RESULTS.parent.parent)}")
    return out


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"

"""Speculative decoding: Inkstand's prompt lookup against llama-server's, side by side.

    .venv/bin/python bench/speculative.py                 # everything, ~20 minutes
    .venv/bin/python bench/speculative.py --stages cost   # the cost curve alone

Stages (each can be picked with --stages):

1. `cost`: the time of one decode step of k = 1..9 tokens of one sequence (logits at every
   position, as a verification needs) after contexts of 256, 1,024 and 4,096 tokens, on
   Inkstand's backend in this process, before any server starts; and what that curve
   promises: for a per-token acceptance a, the best k's expected tokens per step over its
   cost, `max_k (1 - a^(k+1)) / (1 - a) / (T(k+1) / T(1))`. And whether a token's logits
   depend on the width of the step that computed them (`rounding`: one-token steps against
   one wide step, on 1 thread and on `--threads`).
2. `single`: one client, greedy, `--max-tokens` per answer, to every server in turn (the
   order rotating each round): the extractive prompts (answers that quote, correct or
   rewrite a supplied ~1,000-token document or code file, `EXTRACTIVE`) and free-form ones
   (essays, `workload.py`). Servers: Inkstand with speculation (`auto`) and without
   (`--speculate off`), llama-server at its defaults and with each `--spec-type` n-gram
   variant of `LLAMA_SPEC_TYPES`. The figure is the decode rate, tokens after the first
   over the time from the first to the last: the prompt is the same for all and cached
   after the first round. Inkstand's drafted and accepted tokens per workload come from its
   `/metrics`.
3. `many`: 16 clients at once (the concurrency workload's essays, 16 slots), Inkstand with
   speculation against Inkstand without, rounds alternating; aggregate tokens/s per wave.

One busy server at a time; before each request the run waits for idle CPUs (host.py).
Figures go to stdout and bench/results/speculative-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import host
import load
import uvloop
from concurrency import Spec, Target, add_server_arguments, git_state, inkstand_spec
from llama_server import ensure_llama_server, llama_server_command
from servers import free_port
from workload import TOPICS, Prompts

from inkstand.config import find_embedded_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
STAGES = ("cost", "single", "many")
LLAMA_SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache")
DOCUMENT_CHARS = 4000  # about 1,000 tokens of English prose or Python for SmolLM2
COST_CONTEXTS = (256, 1024, 4096)
COST_DRAFTS = range(0, 9)  # drafted tokens k: a step of k + 1 tokens
ACCEPTANCES = (0.5, 0.7, 0.8, 0.9, 0.95)


def document(path: str) -> str:
    return (REPO / path).read_text()[:DOCUMENT_CHARS]


# name -> (the supplied text's file, what is asked about it): answers that copy spans.
EXTRACTIVE = {
    "quote": ("docs/architecture.md", "Quote the first three paragraphs of the document exactly."),
    "correct": ("README.md", "Fix any spelling mistakes in the text and return the whole "
                "corrected text."),
    "comment": ("src/inkstand/engine/prefix.py", "Add a comment above every function in this "
                "Python file and return the whole file."),
    "rename": ("src/inkstand/engine/admission.py", "Rename the class WaitLine to Queue in this "
               "code and return the complete code."),
    "answer": ("README.md", "Using the text above, explain how to run the tests."),
    "summary": ("src/inkstand/engine/scheduler.py", "Summarise what this code does, naming each "
                "of its functions."),
}  # fmt: skip


def extractive_chats() -> dict[str, list[dict]]:
    return {
        name: [{"role": "user", "content": f"{document(path)}\n\n{ask}"}]
        for name, (path, ask) in EXTRACTIVE.items()
    }


def free_chats() -> dict[str, list[dict]]:
    prompts = Prompts()
    return {f"essay-{i}": prompts.essay(TOPICS[i]) for i in range(3)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--many-rounds", type=int, default=4)
    parser.add_argument("--many-tokens", type=int, default=128)
    parser.add_argument("--cost-repeats", type=int, default=5)
    parser.add_argument(
        "--draft",
        help="a draft GGUF: adds Inkstand `--speculate draft` and llama-server `-md` with it "
        "to the extractive prompts ('embedded': the model as its own draft, which shows the "
        "drafting path's overhead, not a gain)",
    )
    add_server_arguments(parser, quiet_budget=900.0)
    parser.set_defaults(slots=4)  # one client at a time: a small KV for every server
    return parser.parse_args()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every server still stops
    args = parse_args()
    model = find_embedded_model()
    results: dict = {"config": vars(args) | {"model": Path(model).name, "git": git_state()}}
    if "cost" in args.stages:
        results["cost"] = cost_stage(model, args)
        show_cost(results["cost"])
    quiet = host.Quiet(args.quiet_budget, threshold=0.3)  # seven idle servers: ~0.2 CPU
    if "single" in args.stages:
        binary, build = ensure_llama_server()
        results["config"]["llama_server"] = build
        results["single"] = serve_and_run(args, model, binary, quiet, single=True)
        show_single(results["single"])
    if "many" in args.stages:
        results["many"] = serve_and_run(args, model, None, quiet, single=False)
        show_many(results["many"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"speculative-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {path}")
    return 0


# -- 1. the cost curve --------------------------------------------------------------------


def cost_stage(model: str, args) -> dict:
    from inkstand.backends.base import BatchEntry
    from inkstand.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(model, n_ctx=max(COST_CONTEXTS) + 16, n_threads=args.threads)
    filler = backend.tokenize(document("README.md") * 4, add_special=False)
    out: dict = {}
    try:
        for context in COST_CONTEXTS:
            backend.truncate(0, 0)
            for start in range(0, context, backend.n_batch):
                run = filler[start : min(context, start + backend.n_batch)]
                backend.decode([BatchEntry(0, run, start, False)])
            times: dict[int, list[float]] = {k: [] for k in COST_DRAFTS}
            for _ in range(args.cost_repeats):
                for k in COST_DRAFTS:
                    tokens = filler[context : context + k + 1]
                    began = time.perf_counter()
                    backend.decode([BatchEntry(0, tokens, context, True, outputs=k + 1)])
                    times[k].append(time.perf_counter() - began)
                    backend.truncate(0, context)
            out[str(context)] = {str(k): statistics.median(v) for k, v in times.items()}
    finally:
        backend.close()
    return {"seconds": out, "promised": promised(out), "rounding": rounding(model, args)}


ROUNDING_TOKENS = 48  # greedy tokens compared, one-token steps against one wide step


def rounding(model: str, args) -> dict:
    """Whether a token's logits depend on the width of the step that computed them: a
    greedy continuation decoded one token a step, then the same tokens again in one step,
    on 1 thread and on `--threads`. Reports the largest logit difference and how many
    positions' argmax differ (what makes speculative greedy output leave the output
    without speculation)."""
    from inkstand.backends.llama_cpp import LlamaCppBackend

    out: dict = {}
    for threads in sorted({1, args.threads}):
        backend = LlamaCppBackend(model, n_ctx=2048, n_threads=threads)
        try:
            prompt = backend.tokenize(correct_prompt(), add_special=False)[:1000]
            pairs = narrow_and_wide(backend, prompt)
        finally:
            backend.close()
        out[str(threads)] = {
            "max_logit_difference": max(float(abs(a - b).max()) for a, b in pairs),
            "argmax_differs": sum(int(a.argmax() != b.argmax()) for a, b in pairs),
            "positions": ROUNDING_TOKENS,
        }
    return out


def narrow_and_wide(backend, prompt: list[int]) -> list[tuple]:
    """Per position of a greedy continuation of `prompt`: its logits from one-token steps
    and from one step of all `ROUNDING_TOKENS` tokens."""
    from inkstand.backends.base import BatchEntry

    (index,) = backend.decode([BatchEntry(0, prompt, 0, True)])
    tokens = [int(logits_of(backend, index).argmax())]
    narrow = []
    for i in range(ROUNDING_TOKENS):
        (index,) = backend.decode([BatchEntry(0, tokens[i : i + 1], len(prompt) + i, True)])
        narrow.append(logits_of(backend, index))
        tokens.append(int(narrow[-1].argmax()))
    backend.truncate(0, len(prompt))
    step = BatchEntry(0, tokens[:ROUNDING_TOKENS], len(prompt), True, outputs=ROUNDING_TOKENS)
    (index,) = backend.decode([step])
    wide = [logits_of(backend, index + i) for i in range(ROUNDING_TOKENS)]
    return list(zip(narrow, wide, strict=True))


def logits_of(backend, index: int):
    """A copy of a position's logits (the bench reaches into the backend: here it measures
    llama.cpp, not Inkstand's API)."""
    import numpy as np

    return np.array(backend._logits(index), dtype=np.float64)


def correct_prompt() -> str:
    """The `correct` request's text (its document and question), without a chat template."""
    path, ask = EXTRACTIVE["correct"]
    return f"{document(path)}\n\n{ask}"


def promised(curve: dict) -> dict:
    """Per context and acceptance: the best draft length and the speed-up it implies."""
    out: dict = {}
    for context, times in curve.items():
        one = times["0"]
        out[context] = {}
        for a in ACCEPTANCES:
            gains = {k: (1 - a ** (k + 1)) / (1 - a) / (times[str(k)] / one) for k in COST_DRAFTS}
            best = max(gains, key=lambda k: gains[k])
            out[context][str(a)] = {"k": best, "speedup": gains[best]}
    return out


def show_cost(cost: dict) -> None:
    print("\n## one-token steps against the same tokens in one wide step (logits)")
    for threads, r in cost["rounding"].items():
        print(
            f"  {threads} thread(s): largest difference {r['max_logit_difference']:.3g}, "
            f"argmax differs at {r['argmax_differs']} of {r['positions']} positions"
        )
    print("\n## cost of one step of k+1 tokens, relative to one token (ms at k=0)")
    for context, times in cost["seconds"].items():
        one = times["0"]
        row = " ".join(f"{times[str(k)] / one:.2f}" for k in COST_DRAFTS)
        print(f"context {context:>5}: {one * 1000:6.2f} ms | k=0..8: {row}")
    print("\n## promised speed-up (best k) by acceptance")
    for context, by_a in cost["promised"].items():
        row = "  ".join(f"a={a}: {v['speedup']:.2f}x (k={v['k']})" for a, v in by_a.items())
        print(f"context {context:>5}: {row}")


# -- 2 and 3: servers ----------------------------------------------------------------------


def serve_and_run(args, model: str, binary, quiet: host.Quiet, *, single: bool) -> dict:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inkstand-spec-")))
        if not single:
            args = argparse.Namespace(**(vars(args) | {"slots": 16}))
        specs = inkstand_specs(args, tmp, single=single)
        if binary is not None:
            specs |= llama_specs(args, binary, model)
        targets = {
            name: stack.enter_context(spec.serve(name, port, tmp / f"{name}.log"))
            for name, (port, spec) in specs.items()
        }
        commands = {name: t.server.process.args for name, t in targets.items()}
        bench = SingleClient(args, quiet, targets) if single else ManyClients(args, quiet, targets)
        return {"commands": commands} | uvloop.run(bench.run())


def draft_path(args) -> str | None:
    return find_embedded_model() if args.draft == "embedded" else args.draft


def inkstand_specs(args, tmp: Path, *, single: bool) -> dict[str, tuple[int, Spec]]:
    specs = {}
    modes = [("inkstand", ["auto"]), ("inkstand-off", ["off"])]
    if single and (draft := draft_path(args)):
        modes.append(("inkstand-draft", ["draft", "--draft", draft]))
    for name, mode in modes:
        port = free_port()
        spec = inkstand_spec(args, port, tmp / f"data-{name}")
        cmd = [*spec.cmd, "--speculate", *mode]
        specs[name] = (port, Spec(cmd, spec.ready, spec.dialect, spec.headers, spec.extra))
    return specs


def llama_specs(args, binary, model: str) -> dict[str, tuple[int, Spec]]:
    specs = {}
    kinds: list[list[str]] = [[]] + [["--spec-type", kind] for kind in LLAMA_SPEC_TYPES]
    if draft := draft_path(args):
        kinds.append(["-md", draft])
    for extra in kinds:
        port = free_port()
        cmd = llama_server_command(binary, model, port, threads=args.threads,
                                   ctx_size=args.ctx_size, slots=args.slots)  # fmt: skip
        name = "llama-server" + (f"-{extra[-1]}" if extra[:1] == ["--spec-type"] else "")
        name += "-md" if extra[:1] == ["-md"] else ""
        specs[name] = (port, Spec(cmd + extra, "/health", "openai", {}, {"model": "smollm2"}))
    return specs


def decode_rate(trace: load.Trace) -> float | None:
    """Tokens after the first over the time from the first text to the stream's end."""
    if trace.error or len(trace.arrivals) < 2 or trace.tokens < 2:
        return None
    return (trace.tokens - 1) / (trace.end - trace.arrivals[0])


class SingleClient:
    """Stage 2: every prompt to every server, one request at a time."""

    def __init__(self, args, quiet: host.Quiet, targets: dict[str, Target]) -> None:
        self.args, self.quiet, self.targets = args, quiet, targets
        self.inkstands = [n for n in targets if n.startswith("inkstand")]

    async def run(self) -> dict:
        chats = {"extractive": extractive_chats(), "free": free_chats()}
        free_servers = ["inkstand", "inkstand-off", "llama-server"]
        samples: list[dict] = []
        async with load.open_client() as client:
            for round_ in range(self.args.rounds + 1):  # round 0 warms up and fills caches
                for kind, prompts in chats.items():
                    names = list(self.targets) if kind == "extractive" else free_servers
                    for prompt_name, messages in prompts.items():
                        shift = round_ % len(names)
                        for name in names[shift:] + names[:shift]:
                            sample = await self.one(client, name, messages)
                            samples.append(sample | {"round": round_, "kind": kind,
                                                     "prompt": prompt_name})  # fmt: skip
        return {"samples": samples, "summary": summarise_single(samples),
                "greedy_identity": identity(samples)}  # fmt: skip

    async def one(self, client, name: str, messages: list[dict]) -> dict:
        target = self.targets[name]
        self.quiet.wait()
        counted = name.startswith("inkstand") and name != "inkstand-off"
        before = await spec_counters(client, target) if counted else None
        trace = await target.send(client, target.body(messages, self.args.max_tokens))
        sample = {"server": name, "rate": decode_rate(trace), "tokens": trace.tokens,
                  "ttft": trace.ttft, "error": trace.error, "timings": trace.timings,
                  "text": trace.text}  # fmt: skip
        if before is not None:
            after = await spec_counters(client, target)
            sample["drafted"] = after[0] - before[0]
            sample["accepted"] = after[1] - before[1]
        return sample


async def spec_counters(client, target: Target) -> tuple[float, float]:
    """Inkstand's drafted and accepted token counters, from /metrics."""
    text = (await client.get(target.server.base_url + "/metrics")).text
    values = {}
    for line in text.splitlines():
        if line.startswith("inkstand:spec_decode_num_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return (
        values.get("inkstand:spec_decode_num_draft_tokens_total", 0.0),
        values.get("inkstand:spec_decode_num_accepted_tokens_total", 0.0),
    )


def summarise_single(samples: list[dict]) -> dict:
    """Per kind and server: the rate ratio to each peer per round (tokens over decode time
    summed over the kind's prompts), as median and min-max over the rounds after the first;
    and under `first_asked` the same for round 0, where every server sees each request for
    the first time (no earlier answer to draft from: what a workload of new documents
    gets), its spread over the prompts."""
    timed = [s for s in samples if s["round"] > 0 and s["rate"]]
    first = [s for s in samples if s["round"] == 0 and s["rate"]]
    out: dict = {}
    for kind in sorted({s["kind"] for s in timed}):
        rates = rates_by(timed, kind, "round")
        mine = [s for s in timed if s["kind"] == kind and s["server"] == "inkstand"]
        drafted = sum(s.get("drafted", 0) for s in mine)
        accepted = sum(s.get("accepted", 0) for s in mine)
        out[kind] = {
            "rate_median": {n: statistics.median(v) for n, v in rates.items()},
            "inkstand_over": over_peers(rates),
            "draft_model_over_md": (
                ratio_spread(rates["inkstand-draft"], rates["llama-server-md"])
                if {"inkstand-draft", "llama-server-md"} <= rates.keys()
                else None
            ),
            "acceptance": accepted / drafted if drafted else None,
            "drafted_per_token": drafted / sum(s["tokens"] for s in mine) if mine else None,
            "per_prompt": per_prompt(timed, kind),
            "first_asked": first_asked(first, kind),
        }
    return out


def rates_by(timed: list[dict], kind: str, group: str) -> dict[str, list[float]]:
    """Each server's pooled rate per value of `group` ("round" or "prompt")."""
    groups = sorted({s[group] for s in timed if s["kind"] == kind})
    servers = sorted({s["server"] for s in timed if s["kind"] == kind})
    return {
        server: [
            pooled_rate(
                [s for s in timed if (s["kind"], s["server"], s[group]) == (kind, server, g)]
            )
            for g in groups
        ]  # fmt: skip
        for server in servers
    }


def over_peers(rates: dict[str, list[float]]) -> dict:
    return {peer: ratio_spread(rates["inkstand"], rates[peer]) for peer in rates
            if peer != "inkstand"}  # fmt: skip


def first_asked(first: list[dict], kind: str) -> dict | None:
    """Round 0 alone: each server's rate over all prompts, and Inkstand's ratio to each peer
    (over all prompts, with its range over the prompts one by one)."""
    these = [s for s in first if s["kind"] == kind]
    if not these:
        return None
    servers = sorted({s["server"] for s in these})
    pooled = {n: pooled_rate([s for s in these if s["server"] == n]) for n in servers}
    spread = over_peers(rates_by(these, kind, "prompt"))
    return {
        "rate": pooled,
        "inkstand_over": {
            peer: spread[peer] | {"all": pooled["inkstand"] / pooled[peer]} for peer in spread
        },
    }


def identity(samples: list[dict]) -> dict:
    """How often Inkstand's greedy answer with speculation is the same text as without, per
    (prompt, round), and where the first differing character came in those that differ."""
    answers = {(s["prompt"], s["round"], s["server"]): s["text"] for s in samples}
    pairs: list[tuple[str, str]] = [
        (a, answers[(p, r, "inkstand-off")])
        for (p, r, n), a in answers.items()
        if n == "inkstand" and (p, r, "inkstand-off") in answers
    ]
    differing = [first_difference(a, b) for a, b in pairs if a != b]
    return {"answers": len(pairs), "identical": len(pairs) - len(differing),
            "first_difference_at_char": differing}  # fmt: skip


def first_difference(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def pooled_rate(samples: list[dict]) -> float:
    tokens = sum(s["tokens"] - 1 for s in samples)
    seconds = sum((s["tokens"] - 1) / s["rate"] for s in samples)
    return tokens / seconds if seconds else 0.0


def ratio_spread(mine: list[float], theirs: list[float]) -> dict:
    ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def per_prompt(timed: list[dict], kind: str) -> dict:
    """Median decode rate per prompt and server, and Inkstand's acceptance per prompt."""
    out: dict = {}
    for prompt in sorted({s["prompt"] for s in timed if s["kind"] == kind}):
        these = [s for s in timed if s["prompt"] == prompt]
        row = {
            server: statistics.median(s["rate"] for s in these if s["server"] == server)
            for server in sorted({s["server"] for s in these})
        }
        mine = [s for s in these if s["server"] == "inkstand"]
        drafted = sum(s.get("drafted", 0) for s in mine)
        row["acceptance"] = sum(s.get("accepted", 0) for s in mine) / drafted if drafted else None
        out[prompt] = row
    return out


def show_single(single: dict) -> None:
    same = single["greedy_identity"]
    where = same["first_difference_at_char"]
    print(f"\n## greedy answers with speculation equal to without: {same['identical']} of "
          f"{same['answers']} (the others first differ at characters {where})")  # fmt: skip
    for kind, summary in single["summary"].items():
        print(f"\n## one client, {kind}: decode tokens/s (median of rounds)")
        for name, rate in sorted(summary["rate_median"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<26} {rate:7.1f}")
        print(f"  Inkstand's acceptance {summary['acceptance']}, drafted per emitted token "
              f"{summary['drafted_per_token']}")  # fmt: skip
        for peer, r in summary["inkstand_over"].items():
            print(f"  inkstand / {peer:<26} {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})")
        if r := summary["draft_model_over_md"]:
            print(f"  inkstand-draft / llama-server-md {r['median']:.2f}x "
                  f"({r['min']:.2f}-{r['max']:.2f})")  # fmt: skip
        for prompt, row in summary["per_prompt"].items():
            cells = " ".join(f"{k}={v:.1f}" for k, v in row.items() if isinstance(v, float))
            print(f"    {prompt}: {cells}")
        if first := summary["first_asked"]:
            print(f"  asked the first time (round 0), {kind}:")
            for peer, r in first["inkstand_over"].items():
                print(f"    inkstand / {peer:<26} {r['all']:.2f}x (prompts {r['min']:.2f}-"
                      f"{r['max']:.2f})")  # fmt: skip


class ManyClients:
    """Stage 3: waves of 16 essays at once, Inkstand with and without speculation."""

    CLIENTS = 16

    def __init__(self, args, quiet: host.Quiet, targets: dict[str, Target]) -> None:
        self.args, self.quiet, self.targets = args, quiet, targets
        self.prompts = Prompts()

    async def run(self) -> dict:
        waves: list[dict] = []
        names = list(self.targets)
        async with load.open_client() as client:
            for round_ in range(self.args.many_rounds + 1):
                for name in names if round_ % 2 == 0 else names[::-1]:
                    self.quiet.wait()
                    traces, wall = await self.targets[name].wave(
                        client, self.prompts.batch(self.CLIENTS), self.args.many_tokens
                    )
                    tokens = sum(t.tokens for t in traces)
                    errors = sum(1 for t in traces if t.error)
                    waves.append({"server": name, "round": round_, "tokens": tokens,
                                  "seconds": wall, "errors": errors})  # fmt: skip
        timed = [w for w in waves if w["round"] > 0]
        rates = {n: [w["tokens"] / w["seconds"] for w in timed if w["server"] == n] for n in names}
        summary = {
            "rate_median": {n: statistics.median(v) for n, v in rates.items()},
            "inkstand_over_off": ratio_spread(rates["inkstand"], rates["inkstand-off"]),
        }
        return {"waves": waves, "summary": summary}


def show_many(many: dict) -> None:
    s = many["summary"]
    print("\n## 16 clients: aggregate tokens/s (median of waves)")
    for name, rate in s["rate_median"].items():
        print(f"  {name:<14} {rate:7.1f}")
    r = s["inkstand_over_off"]
    print(f"  speculation on / off: {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())

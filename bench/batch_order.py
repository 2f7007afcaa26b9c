"""What one decode step costs, by the order of the sequence ids in the batch (per-slot KV).

    .venv/bin/python bench/batch_order.py        # ~1 minute; a Markdown table on stdout

With one KV stream per sequence (`kv_unified = False`), llama.cpp splits a batch into
ubatches with `split_equal(sequential=true)`: a ubatch only takes sequences whose ids follow
each other (`id == previous + 1`) in the order the batch lists them, so a batch whose ids
are shuffled, descending or have gaps is decoded as several ubatches, one graph computation
each. This script measures it on Inkstand's backend directly: every layout of `LAYOUTS` gets
its sequences prefilled with distinct prompts, then `--steps` decode steps of one token per
sequence, and the table shows the median time of one `llama_decode`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from engine_raw import build_request
from workload import Prompts

from inkstand.backends.base import BatchEntry
from inkstand.backends.llama_cpp import LlamaCppBackend
from inkstand.config import find_embedded_model

_shuffled = list(range(16))
random.Random(1).shuffle(_shuffled)
LAYOUTS = {
    "4, ids 0-3 ascending": [0, 1, 2, 3],
    "4, ids 3-0 descending": [3, 2, 1, 0],
    "4, ids 0, 4, 8, 12": [0, 4, 8, 12],
    "8, ids 0-7 ascending": list(range(8)),
    "8, even ids ascending": list(range(0, 16, 2)),
    "16, ascending": list(range(16)),
    "16, shuffled": _shuffled,
}


def step_ms(backend: LlamaCppBackend, seqs: list[int], prompts: Prompts, steps: int) -> float:
    """Median milliseconds of one decode step carrying one token of each of `seqs`."""
    token, pos = {}, {}
    for seq, messages in zip(seqs, prompts.batch(len(seqs)), strict=True):
        request = build_request(backend, messages, steps + 1)
        backend.begin(seq, request.sampling, 0)
        (i,) = backend.decode([BatchEntry(seq, request.prompt_tokens, 0, True)])
        token[seq], pos[seq] = backend.sample(seq, i), len(request.prompt_tokens)
    times = []
    for _ in range(steps):
        entries = [BatchEntry(seq, (token[seq],), pos[seq], True) for seq in seqs]
        start = time.perf_counter()
        logits_at = backend.decode(entries)
        times.append(time.perf_counter() - start)
        for seq, i in zip(seqs, logits_at, strict=True):
            token[seq] = backend.sample(seq, i)
            pos[seq] += 1
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    backend = LlamaCppBackend(
        find_embedded_model(), n_ctx=4096, n_threads=args.threads, n_seq_max=16
    )
    prompts = Prompts()
    print("| sequences in the batch | decode step ms |\n|---|---:|")
    try:
        for label, seqs in LAYOUTS.items():
            print(f"| {label} | {step_ms(backend, seqs, prompts, args.steps):.1f} |", flush=True)
    finally:
        backend.close()


if __name__ == "__main__":
    main()

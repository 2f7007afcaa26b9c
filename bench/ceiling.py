"""The ceiling: the concurrency benchmark's waves decoded by a bare loop, no server at all.

    .venv/bin/python bench/ceiling.py --threads 2 --ctx-size 4096 --slots 16    # a worker

What any server on this llama.cpp build could reach with the benchmark's own prompts: the
backend Inkstand uses (`LlamaCppBackend`, same context, same KV layout), driven by a plain
loop with no HTTP, no scheduler, no event loop and no other thread. It does the work a
server with a prefix cache does, no more and no less: client i always lands in slot i,
which keeps its last prompt and answer, and a new prompt reuses the longest prefix it
shares with them (with distinct prompts, the chat template's opening); every uncached
prompt token of the wave goes into one decode call (as long as they fit `n_batch`); then
each step decodes one token of every unfinished sequence, in ascending slot order, and
takes the greedy token; a sequence ends at an end-of-generation token or `max_tokens`.

Run as a worker of concurrency.py (`Ceiling`): the child loads the model once, prints
`ready`, then answers each JSON line `{"chats": [[message, ...], ...], "max_tokens": N}`
on stdin with one JSON line: the wave's wall time and, per chat, the time of every token
from the wave's start, the token count and the finish reason. It sits blocked on stdin
between waves, so it costs the servers nothing while they run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from load import Trace

from inkstand.backends.base import BatchEntry
from inkstand.engine.prefix import common_prefix

T = TypeVar("T")


class Ceiling:
    """concurrency.py's handle on a worker process: a target like the servers, minus HTTP."""

    name = "ceiling"

    def __init__(self, *, threads: int, ctx_size: int, slots: int) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(threads),
               "--ctx-size", str(ctx_size), "--slots", str(slots)]  # fmt: skip
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip
        if self._read() != "ready":
            self.close()
            raise RuntimeError("bench/ceiling.py did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wave(self, _client, chats: list[list[dict]], max_tokens: int):
        """Like load.wave: one Trace per chat (times from the wave's start) and the wall."""
        return await asyncio.to_thread(self._wave, chats, max_tokens)

    def _wave(self, chats: list[list[dict]], max_tokens: int) -> tuple[list[Trace], float]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"chats": chats, "max_tokens": max_tokens}) + "\n")
        self.process.stdin.flush()
        done = json.loads(self._read())
        traces = [
            Trace(sent=0.0, arrivals=s["arrivals"], end=s["arrivals"][-1] if s["arrivals"]
                  else 0.0, tokens=s["tokens"], finish=s["finish"])
            for s in done["sequences"]
        ]  # fmt: skip
        return traces, done["wall_s"]

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench/ceiling.py exited ({self.process.poll()})")
        return line.strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class BareLoop:
    """Waves of greedy sequences over one backend, slot i for chat i, prefixes reused."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.held: dict[int, list[int]] = {}  # slot -> the tokens its KV holds

    def wave(self, prompts: list[list[int]], max_tokens: int) -> dict:
        from inkstand.engine import SamplingParams

        progress = _Progress(time.perf_counter(), max_tokens, {s: [] for s in range(len(prompts))})
        prefill = []
        for seq, prompt in enumerate(prompts):
            keep = min(common_prefix(self.held.get(seq, []), prompt), len(prompt) - 1)
            self.backend.begin(seq, SamplingParams(temperature=0.0), keep)
            prefill.append(BatchEntry(seq, tuple(prompt[keep:]), keep, True))
            self.held[seq] = list(prompt)
        for group in pack(prefill, self.backend.n_batch, lambda entry: len(entry.tokens)):
            self._decode(group, progress)
        while progress.pending:
            step = [
                BatchEntry(seq, (token,), len(self.held[seq]), True)
                for seq, token in sorted(progress.pending.items())
            ]
            progress.pending.clear()
            for entry in step:
                self.held[entry.seq_id].append(entry.tokens[0])
            self._decode(step, progress)
        return progress.result(time.perf_counter() - progress.start)

    def _decode(self, entries: list[BatchEntry], progress: _Progress) -> None:
        for entry, index in zip(entries, self.backend.decode(entries), strict=True):
            token = self.backend.sample(entry.seq_id, index)
            progress.take(entry.seq_id, token, self.backend.is_eog(token))


@dataclass
class _Progress:
    """One wave's sequences: when each token came, how each ended, what is left to decode."""

    start: float
    max_tokens: int
    arrivals: dict[int, list[float]]  # seq -> seconds from the start, one per token
    finish: dict[int, str] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)  # seq -> sampled, not yet decoded

    def take(self, seq: int, token: int, eog: bool) -> None:
        if eog:
            self.finish[seq] = "stop"
            return
        self.arrivals[seq].append(time.perf_counter() - self.start)
        if len(self.arrivals[seq]) >= self.max_tokens:
            self.finish[seq] = "length"
        else:
            self.pending[seq] = token

    def result(self, wall: float) -> dict:
        sequences = [
            {"arrivals": times, "tokens": len(times), "finish": self.finish[seq]}
            for seq, times in sorted(self.arrivals.items())
        ]
        return {"wall_s": wall, "sequences": sequences}


def pack(items: list[T], budget: int, size: Callable[[T], int]) -> list[list[T]]:
    """Consecutive groups of `items` whose sizes add up to at most `budget` (one decode call)."""
    groups: list[list[T]] = [[]]
    total = 0
    for item in items:
        if groups[-1] and total + size(item) > budget:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += size(item)
    return groups


def main() -> None:
    from engine_raw import build_request

    from inkstand.backends.llama_cpp import LlamaCppBackend
    from inkstand.config import find_embedded_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--ctx-size", type=int, default=4096, help="per sequence")
    parser.add_argument("--slots", type=int, default=16)
    args = parser.parse_args()
    backend = LlamaCppBackend(find_embedded_model(), n_ctx=args.ctx_size,
                              n_threads=args.threads, n_seq_max=args.slots)  # fmt: skip
    loop = BareLoop(backend)
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        prompts = [list(build_request(backend, chat, 1).prompt_tokens) for chat in job["chats"]]
        print(json.dumps(loop.wave(prompts, job["max_tokens"])), flush=True)
    backend.close()


if __name__ == "__main__":
    main()

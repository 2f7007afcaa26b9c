"""Drafts from a draft model: a smaller GGUF with the same vocabulary proposes what comes next.

The draft model runs on its own backend, on the engine thread, with one KV slot per engine
slot. Each slot's draft KV mirrors the tokens the engine's slot holds: before drafting, the
draft slot keeps what it shares with the sequence's history (its prompt and output so far,
pending token last) and decodes the rest (`held` records what each draft slot holds, so a
rejected draft, a new request in the slot or a failure costs only a catch-up). It then
decodes greedily, one token per sequence and step, every drafting sequence in one batch,
until each has the number of tokens it was asked for or ends its answer.

The drafted tokens are verified by the target exactly like prompt-lookup drafts
(scheduler.py `_take`): a draft is a point mass whatever the model behind it, so the output
stays what the target alone would produce. What a draft model costs is measured here
(`step_seconds`, per drafting step of the batch) and weighed by the planner
(speculation.py) against what its drafts are expected to save.

Nothing a draft model does can fail a request: on any error the draft slots touched forget
what they held and the step goes on without drafts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from inkstand.backends.base import Backend, BatchEntry, SamplingParams
from inkstand.engine.speculation import Match
from inkstand.errors import EngineError

log = logging.getLogger("inkstand.engine")

MODEL_DRAFT: Match = ("model", 0)  # the acceptance key of a draft model's drafts
GREEDY = SamplingParams(temperature=0.0)
SMOOTHING = 0.2  # weight of the latest measurement in `step_seconds`


class DraftModel:
    """A draft model's backend and what each of its slots holds."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.held: dict[int, list[int]] = {slot: [] for slot in range(backend.n_seq_max)}
        self.step_seconds: float | None = None  # one drafting step of the batch, smoothed
        for slot in self.held:
            backend.begin(slot, GREEDY, 0)

    def propose(self, wants: Mapping[int, tuple[Sequence[int], int]]) -> dict[int, tuple[int, ...]]:
        """For each slot: (history, how many tokens), up to that many greedy next tokens of the
        draft model after `history` (fewer when one ends the answer); {} on any failure."""
        wants = {slot: (history, k) for slot, (history, k) in wants.items() if k > 0 and history}
        if not wants:
            return {}
        try:
            return self._draft(wants)
        except Exception as exc:
            told = str(exc) if isinstance(exc, EngineError) else repr(exc)
            log.error("the draft model failed (%s); this step goes without its drafts", told)
            for slot in wants:
                self.forget(slot)
            return {}

    def forget(self, slot: int) -> None:
        """Drop what a draft slot holds (its KV may be half written)."""
        self.held[slot] = []
        with contextlib.suppress(Exception):
            self.backend.truncate(slot, 0)

    def _draft(self, wants: dict[int, tuple[Sequence[int], int]]) -> dict[int, tuple[int, ...]]:
        rests = {slot: self._rest(slot, history) for slot, (history, _) in wants.items()}
        logits_at = self._catch_up(rests)
        drafts: dict[int, list[int]] = {slot: [] for slot in wants}
        started, steps = time.perf_counter(), -1  # the catch-up's batch is not timed
        while logits_at:
            steps += 1
            entries = []
            for slot, index in logits_at.items():
                token = self.backend.sample(slot, index)
                drafts[slot].append(token)
                if len(drafts[slot]) < wants[slot][1] and not self.backend.is_eog(token):
                    entries.append(BatchEntry(slot, (token,), len(self.held[slot]), True))
            logits_at = self._decode(entries)
        self._time(time.perf_counter() - started, steps)
        return {slot: tuple(tokens) for slot, tokens in drafts.items()}

    def _rest(self, slot: int, history: Sequence[int]) -> list[int]:
        """What draft slot `slot` lacks of `history` (at least its last token, whose logits
        give the first drafted token); the slot keeps the rest of what it holds."""
        held = self.held[slot]
        keep = min(_common_prefix(held, history), len(history) - 1)
        if keep < len(held):
            self.backend.truncate(slot, keep)
            del held[keep:]
        return list(history[keep:])

    def _catch_up(self, rests: dict[int, list[int]]) -> dict[int, int]:
        """Decode every slot's missing tokens; the logits index of each one's last token.

        In one batch when they fit; otherwise all but the last tokens go first, a batch at a
        time, and the last tokens together."""
        if sum(map(len, rests.values())) > self.backend.n_batch:
            self._prefill({slot: rest[:-1] for slot, rest in rests.items()})
            rests = {slot: rest[-1:] for slot, rest in rests.items()}
        return self._decode(
            [BatchEntry(slot, rest, len(self.held[slot]), True) for slot, rest in rests.items()]
        )

    def _prefill(self, runs: dict[int, list[int]]) -> None:
        budget = self.backend.n_batch
        for slot, run in runs.items():
            for start in range(0, len(run), budget):
                chunk = run[start : start + budget]
                self._decode([BatchEntry(slot, chunk, len(self.held[slot]), False)])

    def _decode(self, entries: list[BatchEntry]) -> dict[int, int]:
        """Decode `entries` (in slot order) and record them as held; slot -> logits index."""
        if not entries:
            return {}
        entries.sort(key=lambda e: e.seq_id)
        logits_at = self.backend.decode(entries)
        for entry in entries:
            self.held[entry.seq_id].extend(entry.tokens)
        wanting = [e.seq_id for e in entries if e.want_logits]
        return dict(zip(wanting, logits_at, strict=True))

    def _time(self, seconds: float, steps: int) -> None:
        if steps > 0:
            latest = seconds / steps
            before = self.step_seconds
            self.step_seconds = latest if before is None else before + SMOOTHING * (latest - before)

    def calibrate(self, filler: Sequence[int]) -> None:
        """Time a few drafting steps before serving, so the planner can weigh the draft
        model's cost from the first request; the slot used is emptied afterwards."""
        for _ in range(2):
            self.propose({0: (filler, 4)})
            self.forget(0)

    def close(self) -> None:
        self.backend.close()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of `a` and `b` (binary search over slices:
    the lists' own comparison runs in C)."""
    low, high = 0, min(len(a), len(b))
    if list(a[:high]) == list(b[:high]):
        return high
    while low < high:  # a[:low] == b[:low]; the answer is at most high
        middle = (low + high + 1) // 2
        if list(a[:middle]) == list(b[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


def same_vocabulary(target: Backend, draft: Backend) -> str | None:
    """None when `draft` reads and writes tokens exactly as `target` does; else what differs."""
    sizes = getattr(target, "n_vocab", None), getattr(draft, "n_vocab", None)
    if sizes[0] != sizes[1]:
        return f"the vocabularies differ in size ({sizes[0]} and {sizes[1]} tokens)"
    for token in range(sizes[0] or 0):
        if target.token_bytes(token) != draft.token_bytes(token):
            texts = target.token_bytes(token), draft.token_bytes(token)
            return f"token {token} differs ({texts[0]!r} and {texts[1]!r})"
        if target.is_eog(token) != draft.is_eog(token):
            return f"token {token} ends the answer for one model and not for the other"
    return None

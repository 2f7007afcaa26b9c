"""Speculative decoding: what to draft for each generating sequence, and how much of it.

Drafts come from prompt lookup (`NgramIndex`): the sequence's last few tokens are looked up
earlier in its own prompt and output, and what followed them there is proposed as what comes
next. Answers that quote or rewrite a supplied document, edit code or fill JSON from a
prompt copy long spans, and such drafts are then right most of the time, for free.

The scheduler verifies a draft in the same batch as every other sequence's step (the
sequence's pending token followed by the draft, logits at every position), samples each
position in turn with the sequence's own sampler and keeps the drafted tokens for as long as
the sampled token equals the drafted one. A draft is a point mass, so that rule is exact
speculative sampling: the drafted token is kept with probability p(d) (the sampler picked
it), and otherwise the token sampled in its place follows p restricted to the other tokens,
renormalised, which is what the accept/reject rule of speculative sampling gives for a
deterministic draft. Each emitted token costs one sampler call, as without speculation, so
penalties, grammars and the random stream advance exactly as they would have; with greedy
sampling the output is the same token for token, up to the rounding differences a wider batch
brings to the CPU kernels.

How many tokens to draft (`Speculator.plan`): each sequence's acceptance rate (the chance a
drafted token is kept, given the ones before it were) is tracked with exponential decay; the
i-th drafted token of a sequence is worth `rate ** i` expected tokens. A step costs what
`StepCost` predicts for its tokens and the context they attend over. Drafted tokens are added, most
valuable first, while they raise the expected tokens per second of the step: a sequence whose
drafts are rejected stops drafting, and a batch already wide enough to keep the kernels busy
(many clients) gets few or no drafts, since there an extra token costs nearly a full token's
time. The step's cost is learnt as the engine runs (stepcost.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from inkstand.engine.stepcost import StepCost

SpeculateMode = Literal["auto", "off", "ngram", "draft"]
NGRAM_SIZES = (3, 2)  # n-gram lengths looked up, the longest that matches first
PRIOR_ACCEPTED = 1.0  # pseudo-counts a sequence's acceptance rate starts from: 0.5 ...
PRIOR_REJECTED = 1.0
DECAY = 0.85  # weight of the past in a sequence's acceptance rate, per drafted token seen
MIN_GAIN = 1.02  # a draft must promise this much more tokens per second to be verified


class NgramIndex:
    """A token history and, for each n-gram in it, the position that followed its latest
    occurrence; extended a token at a time."""

    def __init__(self, tokens: Iterable[int] = (), sizes: Sequence[int] = NGRAM_SIZES) -> None:
        self.sizes = tuple(sorted(sizes, reverse=True))
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        history, after = self.tokens, self._after
        for token in tokens:
            end = len(history)
            for n in self.sizes:
                if end >= n:
                    after[tuple(history[end - n : end])] = end
            history.append(token)

    def draft(self, limit: int) -> tuple[int, ...]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the longest
        n-gram the history ends with; () when none occurred before."""
        history = self.tokens
        for n in self.sizes:
            if len(history) <= n:
                continue
            start = self._after.get(tuple(history[-n:]))
            if start is not None:
                return tuple(history[start : start + limit])
        return ()


@dataclass
class Acceptance:
    """How often a sequence's drafted tokens are kept, recent verifications weighing most."""

    accepted: float = PRIOR_ACCEPTED
    rejected: float = PRIOR_REJECTED
    drafted_total: int = 0
    accepted_total: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def record(self, drafted: int, kept: int) -> None:
        """`kept` of `drafted` tokens were kept; a draft cut short counts one rejection."""
        rejected = 1 if kept < drafted else 0
        fade = DECAY ** (kept + rejected)  # the past fades by the trials just seen
        self.accepted = fade * self.accepted + kept
        self.rejected = fade * self.rejected + rejected
        self.drafted_total += drafted
        self.accepted_total += kept


@dataclass
class Candidate:
    """One generating sequence this step: what it could draft and how often it is right."""

    key: int  # the scheduler's handle for it (its slot)
    draft: tuple[int, ...]
    rate: float
    position: int  # where its pending token goes: drafted tokens follow it


@dataclass
class Speculator:
    """Chooses each step how many drafted tokens every sequence verifies."""

    cost: StepCost
    max_tokens: int = 8  # `spec_max_tokens`: drafted tokens per sequence and step
    enabled: bool = True

    def plan(
        self, candidates: list[Candidate], base_tokens: int, base_attended: float
    ) -> dict[int, tuple[int, ...]]:
        """The draft each sequence verifies this step (keys with none are left out).

        `base_tokens` is the batch without drafts (one token per generating sequence, plus
        any prompt chunks) and `base_attended` the positions they attend over (stepcost.py).
        Drafted tokens are ranked by their expected value (a sequence's i-th drafted token
        is kept with probability `rate ** i`); of every prefix of that ranking, the one with
        the most expected tokens per second is taken, if it beats no drafts at all by
        `MIN_GAIN`. The whole ranking is scanned, not stopped at the first loss, because a
        step's cost is not convex (a second token costs more than a third).
        """
        if not self.enabled or not candidates:
            return {}
        ranked = self._ranked(candidates)
        emitted = float(len(candidates))
        tokens, attended = base_tokens, base_attended
        best = MIN_GAIN * emitted / self.cost.seconds(tokens, attended)
        best_len = 0
        for length, (value, _, position) in enumerate(ranked, start=1):
            emitted += value
            tokens += 1
            attended += position
            speed = emitted / self.cost.seconds(tokens, attended)
            if speed > best:
                best, best_len = speed, length
        taken: dict[int, int] = {}
        for _, key, _ in ranked[:best_len]:
            taken[key] = taken.get(key, 0) + 1
        return {c.key: c.draft[: taken[c.key]] for c in candidates if c.key in taken}

    def _ranked(self, candidates: list[Candidate]) -> list[tuple[float, int, int]]:
        """Every draftable token as (expected value, sequence key, position), most valuable
        first."""
        heap = [(-c.rate, 1, c.key, c) for c in candidates if c.draft and c.rate > 0]
        heapq.heapify(heap)
        ranked: list[tuple[float, int, int]] = []
        while heap:
            value, depth, key, candidate = heapq.heappop(heap)
            ranked.append((-value, key, candidate.position + depth))
            if depth < min(self.max_tokens, len(candidate.draft)):
                heapq.heappush(heap, (value * candidate.rate, depth + 1, key, candidate))
        return ranked

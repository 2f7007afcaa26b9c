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
(many clients: `WIDE_BATCH` sequences or more) gets no drafts, since there an extra token
costs nearly a full token's time. The step's cost is learnt as the engine runs (stepcost.py).
A sequence's rates start from what its cache scope's earlier sequences saw
(`EngineAcceptance`).

Earlier answers (pool.py): the engine also keeps the answers it finished, per cache scope,
and a sequence drafts from them where they match its last tokens further back than its own
prompt and output do (a request asked again writes what the earlier one wrote). Their drafts
are trusted on their own (`Match` "pool"), so a pool that guesses wrong stops being asked.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from inkstand.engine.pool import Scoped, ScopedPools, matched_length
from inkstand.engine.stepcost import StepCost

SpeculateMode = Literal["auto", "off", "ngram", "draft"]
# n-gram lengths looked up, the longest that matches first: a long match means the answer is
# copying, and its drafts are then right for long stretches; a short one guesses.
NGRAM_SIZES = (12, 6, 3, 2)
# Where a draft came from, the key its acceptance is learnt under: "own" (the sequence's
# prompt and output) or "pool" (earlier answers of its scope), and the n-gram length matched.
Match = tuple[str, int]
NO_MATCH: Match = ("own", 0)
# A match going back this many tokens or more is learnt apart from shorter ones (its key's
# length is LONG_MATCH): the answer is copying (or, from the pool, repeating an earlier
# answer) and drafts are right for long stretches.
LONG_MATCH = 32
# A long match means the answer is copying: its drafts are trusted from the start.
PRIORS: dict[Match, float] = {
    ("own", LONG_MATCH): 0.97, ("own", 12): 0.95, ("own", 6): 0.8, ("own", 3): 0.5,
    ("own", 2): 0.3, ("pool", LONG_MATCH): 0.98, ("pool", 12): 0.9, ("pool", 6): 0.6,
}  # fmt: skip
PRIOR_WEIGHT = 2.0
DECAY = 0.95  # weight of the past in a sequence's acceptance rate, per drafted token seen
ENGINE_DECAY = 0.995  # the same over all sequences of a scope (EngineAcceptance)
SCOPES_KEPT = 1024  # scopes whose acceptance is remembered (a few hundred bytes each)
MIN_GAIN = 1.1  # a draft must promise this much more tokens per second to be verified
# Sequences generating at once from which no sequence drafts: on 2 cores a batch of 16 is
# compute-bound (16 x 2 tokens took 106 ms, 2 x 16 x 1 token 110 ms), so drafts could gain 4 %
# at most, less than the learnt cost's error there; measured with drafts allowed, 16 clients
# ran at 0.77-0.85x of no speculation.
WIDE_BATCH = 8
FORCED_VALUE = 0.5  # `speculate = "draft"`: a drafted token's least chance of being kept


def trust_key(source: str, n: int, length: int) -> Match:
    """The key a draft's acceptance is learnt under: its source and the n-gram length
    matched, or `LONG_MATCH` when the match goes back that far."""
    return (source, LONG_MATCH if length >= LONG_MATCH else n)


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

    def lookup(self, limit: int) -> tuple[tuple[int, ...], int, int]:
        """`limit` tokens that followed the latest earlier occurrence of the longest n-gram
        the history ends with, that n-gram's length and how far back the match goes
        (pool.matched_length); ((), 0, 0) when none occurred before.

        A draft that reaches the end of the history goes on copying its own beginning, as
        a repeating answer would (a loop of period p drafts p tokens again and again)."""
        history = self.tokens
        for n in self.sizes:
            if len(history) <= n:
                continue
            start = self._after.get(tuple(history[-n:]))
            if start is not None:
                draft = history[start : start + limit]
                period = len(history) - start
                while len(draft) < limit:
                    draft.append(draft[len(draft) - period])
                return tuple(draft), n, matched_length(history, start, history)
        return (), 0, 0


@dataclass
class Acceptance:
    """How often drafted tokens are kept, recent verifications weighing most (`decay` per
    drafted token seen).

    A sequence keeps one per source and match (`Acceptances`): a draft found by a long match
    starts out trusted more (`prior`), and each learns on its own."""

    accepted: float = 1.0
    rejected: float = 1.0
    decay: float = DECAY

    @classmethod
    def prior(cls, rate: float, decay: float = DECAY) -> Acceptance:
        """Trusted at `rate` before any draft is verified, held as `PRIOR_WEIGHT` tokens' worth
        of evidence: the first verifications outweigh it."""
        return cls(PRIOR_WEIGHT * rate, PRIOR_WEIGHT * (1 - rate), decay)

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def record(self, drafted: int, kept: int) -> None:
        """`kept` of `drafted` tokens were kept; a draft cut short counts one rejection."""
        rejected = 1 if kept < drafted else 0
        fade = self.decay ** (kept + rejected)  # the past fades by the trials just seen
        self.accepted = fade * self.accepted + kept
        self.rejected = fade * self.rejected + rejected


class Acceptances(dict[Match, Acceptance]):
    """A sequence's acceptance per source and n-gram length of the match its drafts came
    from, each starting from the engine's (`EngineAcceptance`) when there is one."""

    def __init__(self, engine: EngineAcceptance | None = None) -> None:
        super().__init__()
        self.engine = engine

    def __missing__(self, match: Match) -> Acceptance:
        rate = self.engine[match].rate if self.engine else PRIORS.get(match, 0.5)
        self[match] = Acceptance.prior(rate)
        return self[match]

    def record(self, match: Match, drafted: int, kept: int) -> None:
        """Count a verification for this sequence and for the engine."""
        self[match].record(drafted, kept)
        if self.engine is not None:
            self.engine[match].record(drafted, kept)


class EngineAcceptance(dict[Match, Acceptance]):
    """Acceptance per source and match over every sequence of one cache scope the engine
    ran, learning slowly (`ENGINE_DECAY`): where the scope's new sequences start. So a
    workload whose drafts of some kind are often wrong (essays that only resemble earlier
    ones, say) stops starting each new request at `PRIORS`' trust. Per scope, as the pool
    (pool.py): one tenant's outcomes never steer another's drafts."""

    def __missing__(self, match: Match) -> Acceptance:
        self[match] = Acceptance.prior(PRIORS.get(match, 0.5), ENGINE_DECAY)
        return self[match]


@dataclass
class Candidate:
    """One generating sequence this step: how much it could draft and how often it is right."""

    key: int  # the scheduler's handle for it (its slot)
    size: int  # most tokens it can draft
    rate: float
    position: int  # where its pending token goes: drafted tokens follow it
    # Seconds one drafting step of a draft model takes (0: a lookup draft, free): drafting d
    # tokens takes d steps, shared by every sequence the draft model drafts for.
    draft_seconds: float = 0.0


@dataclass
class Speculator:
    """Chooses each step how many drafted tokens every sequence verifies."""

    cost: StepCost
    max_tokens: int = 8  # `spec_max_tokens`: drafted tokens per sequence and step
    mode: SpeculateMode = "auto"  # see EngineConfig.speculate
    pools: ScopedPools = field(default_factory=ScopedPools)  # earlier answers, per scope
    acceptance: Scoped[EngineAcceptance] = field(  # per scope, the most recent SCOPES_KEPT
        default_factory=lambda: Scoped(EngineAcceptance, SCOPES_KEPT)
    )

    def draft(self, own: NgramIndex, acceptance: Acceptances, scope: str, limit: int
              ) -> tuple[tuple[int, ...], Match]:  # fmt: skip
        """Up to `limit` tokens a sequence could draft, and the match they came from: its
        own lookup's, or its scope's pool's where that matches further back (or as far
        back, with drafts kept more often)."""
        draft, n, length = own.lookup(limit)
        key = trust_key("own", n, length)
        pool = self.pools.get(scope)
        if pool is None:
            return draft, key
        pooled, pool_n, pool_length = pool.draft(own.tokens, limit)
        pool_key = trust_key("pool", pool_n, pool_length)
        mine = (length, acceptance[key].rate if draft else 0.0)
        if pooled and (pool_length, acceptance[pool_key].rate) > mine:
            return pooled, pool_key
        return draft, key

    def remember(self, scope: str, prompt: Sequence[int], answer: Sequence[int]) -> None:
        """Keep a finished answer for later requests of `scope` to draft from."""
        self.pools.add(scope, prompt, answer)

    def plan(self, candidates: list[Candidate], prompts: list[int], prompt_attended: float
             ) -> dict[int, int]:  # fmt: skip
        """How many drafted tokens each sequence verifies this step (keys with none are left
        out).

        Without drafts the batch holds one token per candidate (at `position`) plus the
        prompt chunks of `prompts` tokens, attending over `prompt_attended` positions
        (stepcost.py). Drafted tokens are ranked by their expected value (a sequence's i-th
        drafted token is kept with probability `rate ** i`); of the prefixes of that
        ranking, the one with the most expected tokens per second is taken, if it beats no
        drafts at all by `MIN_GAIN`. The scan goes past a first loss (a step's second token
        costs more than its third, a sequence's first drafted token adds a ubatch) and stops
        once a token's value over its own cost is below the best speed: every later one is
        worth less for about the same cost (unless a step of `BULK_TOKENS` lies ahead, where
        ggml's faster products make every token cheaper: stepcost.py).
        """
        if not candidates:
            return {}
        batch = _Batch(self.cost, candidates, prompts, prompt_attended)
        best = MIN_GAIN * batch.speed()
        taken: list[int] = []
        best_len = 0
        for value, key, position in self._ranked(candidates):
            if (
                taken
                and value / self.cost.marginal(position) < best
                and not self.cost.cheaper_ahead(batch.tokens)
            ):
                break
            batch.add(key, value, position)
            taken.append(key)
            if (speed := batch.speed()) > best:
                best, best_len = speed, len(taken)
        return dict(collections.Counter(taken[:best_len]))

    def _ranked(self, candidates: list[Candidate]) -> Iterator[tuple[float, int, int]]:
        """Every draftable token as (expected value, sequence key, position), most valuable
        first, produced as the caller asks."""
        heap = [(-c.rate, 1, c.key, c) for c in candidates if c.size and c.rate > 0]
        heapq.heapify(heap)
        while heap:
            value, depth, key, candidate = heapq.heappop(heap)
            yield -value, key, candidate.position + depth
            if depth < min(self.max_tokens, candidate.size):
                heapq.heappush(heap, (value * candidate.rate, depth + 1, key, candidate))


def forced_length(rate: float, limit: int) -> int:
    """How many tokens a draft model drafts when told to (`speculate = "draft"`): those whose
    chance of being kept (`rate ** i`) is at least `FORCED_VALUE`, one at least."""
    length = 1
    while length < limit and rate ** (length + 1) >= FORCED_VALUE:
        length += 1
    return min(length, limit)


class _Batch:
    """A step's batch as the planner grows it: its tokens, their attended positions, the
    expected tokens it emits, how many tokens each sequence brings (for its ubatches) and
    the drafting steps a draft model takes for it."""

    def __init__(
        self, cost: StepCost, candidates: list[Candidate], prompts: list[int], attended: float
    ) -> None:
        self.cost = cost
        self.emitted = float(len(candidates))
        self.tokens = len(candidates) + sum(prompts)
        self.attended = attended + sum(c.position + 1 for c in candidates)
        self.brings = {c.key: 1 for c in candidates}
        self.counts = collections.Counter([*prompts, *self.brings.values()])
        self.draft_seconds = {c.key: c.draft_seconds for c in candidates}
        self.drafting = 0.0  # seconds the draft model takes for the drafts added

    def add(self, key: int, value: float, position: int) -> None:
        self.emitted += value
        self.tokens += 1
        self.attended += position
        before = self.brings[key]
        self.brings[key] = before + 1
        self.counts[before] -= 1
        if not self.counts[before]:
            del self.counts[before]
        self.counts[before + 1] += 1
        self.drafting = max(self.drafting, before * self.draft_seconds[key])

    def speed(self) -> float:
        """Expected tokens emitted per second of this step, drafting included."""
        seconds = self.cost.seconds(self.tokens, len(self.counts), self.attended)
        return self.emitted / (seconds + self.drafting)

"""Speculative decoding on the scripted backend: drafts, the planner, and lossless output.

The fake checks every batch against each slot's KV (positions must continue it), so a
rejected draft whose KV was not dropped fails the next step. Its scripted reply copies the
prompt, so prompt lookup drafts it; its `chain` mode is a small random model whose output
distribution is known, for the statistical test.
"""

import asyncio
import collections
import math
import random
import tracemalloc

import pytest

from inkstand.backends.fake import EOG, FakeBackend
from inkstand.engine import EngineConfig, GenerationRequest, SamplingParams, TokenEvent
from inkstand.engine.engine import Engine, speculator
from inkstand.engine.observer import NullObserver
from inkstand.engine.pool import SCOPE_TOKENS, NgramPool, ScopedPools
from inkstand.engine.speculation import (
    LONG_MATCH,
    Acceptance,
    Acceptances,
    Candidate,
    EngineAcceptance,
    NgramIndex,
    Speculator,
    trust_key,
)
from inkstand.engine.stepcost import StepCost, attended, ubatches_of

from .events import collect, finishes, text_of

DOCUMENT = "The quick brown fox jumps over the lazy dog. " * 3 + "Pack my box with five jugs."


class FixedCost(StepCost):
    """A step cost fitted to `fixed + per_token * tokens` seconds that learns nothing more:
    the fake backend's steps take microseconds, which would teach the planner nonsense."""

    def __init__(self, fixed: float, per_token: float) -> None:
        super().__init__()
        for tokens in (1, 2, 3, 4, 8, 16, 32, 64):
            super().observe(tokens, 1, attended(0, tokens), fixed + per_token * tokens)
            seconds = 2 * fixed + per_token * (tokens + 1)
            super().observe(tokens + 1, 2, attended(0, tokens + 1), seconds)
        self.fit()

    def observe(self, tokens: int, ubatches: int, attended: float, seconds: float) -> None:
        pass


CHEAP_DRAFTS = FixedCost(0.010, 0.001)  # weights-bound: a token more costs a tenth of a step
COSTLY_DRAFTS = FixedCost(0.001, 0.010)  # compute-bound: every token costs a full step


def request(prompt=DOCUMENT, max_tokens=200, **fields):
    sampling = fields.pop("sampling", SamplingParams(temperature=0))
    return GenerationRequest(tuple(prompt.encode()), max_tokens, sampling=sampling, **fields)


def drafted_batches(backend) -> int:
    return sum(1 for batch in backend.decode_calls for e in batch if e.outputs > 1)


# -- prompt lookup ---------------------------------------------------------------------------


def test_lookup_proposes_what_followed_the_latest_occurrence_of_the_longest_ngram():
    index = NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 7, 8], sizes=(3, 2))
    index.extend([2, 3])
    assert index.lookup(3)[:2] == ((7, 8, 2), 2)  # "2 3" last followed by 7 (not by 4)
    index.extend([4])
    assert index.lookup(2)[:2] == ((5, 9), 3)  # "2 3 4" occurred once: the longest match wins


def test_lookup_drafts_nothing_for_an_unseen_ngram_and_stops_at_the_history_end():
    index = NgramIndex([1, 2, 3], sizes=(3, 2))
    assert index.lookup(4)[:2] == ((), 0)
    index.extend([1, 2])
    assert index.lookup(4)[:2] == ((3, 1, 2, 3), 2)  # past the end: the loop goes on


def test_acceptance_moves_towards_recent_outcomes():
    acceptance = Acceptance()
    start = acceptance.rate
    for _ in range(5):
        acceptance.record(4, 4)
    assert acceptance.rate > 0.85 > start
    rates = []
    for _ in range(15):
        acceptance.record(4, 0)
        rates.append(acceptance.rate)
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.5


def test_a_long_match_is_trusted_more_than_a_short_one():
    prior = Acceptances().__getitem__  # a sequence's, without an engine: from PRIORS
    assert prior(("own", 12)).rate > prior(("own", 6)).rate > prior(("own", 2)).rate
    assert prior(("pool", 12)).rate > prior(("pool", 6)).rate
    assert trust_key("own", 12, LONG_MATCH + 5) == ("own", LONG_MATCH)  # matched far back
    assert prior(("own", LONG_MATCH)).rate > prior(("own", 12)).rate


def test_a_new_sequence_starts_from_what_the_engine_saw():
    engine = EngineAcceptance()
    first = Acceptances(engine)
    trusted = first[("pool", LONG_MATCH)].rate
    for _ in range(40):  # pool drafts keep failing half way
        first.record(("pool", LONG_MATCH), 8, 2)
    later = Acceptances(engine)
    assert later[("pool", LONG_MATCH)].rate < 0.8 < trusted
    assert later[("own", 12)].rate == first[("own", 12)].rate  # other matches untouched


# -- the planner -----------------------------------------------------------------------------


def test_step_cost_recovers_a_linear_cost():
    assert CHEAP_DRAFTS.seconds(1, 1, 1) == pytest.approx(0.011, rel=0.02)
    assert CHEAP_DRAFTS.seconds(20, 1, attended(0, 20)) == pytest.approx(0.030, rel=0.02)
    assert CHEAP_DRAFTS.seconds(20, 2, attended(0, 20)) == pytest.approx(0.040, rel=0.02)


def bulk_cost() -> StepCost:
    """Steps of 10 ms plus 5 ms a token, and 30 % less from 64 tokens on (ggml's faster
    products), at several contexts."""
    cost = StepCost()
    for context in (0, 500, 1000):
        for tokens in (1, 2, 4, 8, 16, 32, 48, 60, 64, 80, 128):
            seconds = 0.010 + 0.005 * tokens + 0.002 * context / 1000
            cost.observe(
                tokens, 1, attended(context, tokens), seconds * (0.7 if tokens >= 64 else 1)
            )
    cost.fit()
    return cost


def test_step_cost_learns_the_step_down_at_64_tokens_and_no_weight_below_zero():
    cost = bulk_cost()
    assert cost.seconds(64, 1, attended(500, 64)) < cost.seconds(60, 1, attended(500, 60))
    assert all(w >= 0 for w in cost.weights[:4]) and cost.weights[4] < 0
    assert cost.cheaper_ahead(20) and not cost.cheaper_ahead(64)


def test_planner_reaches_for_the_cheaper_64_token_step_when_drafts_are_right():
    planner = Speculator(bulk_cost(), max_tokens=64)
    sure = Candidate(0, 64, rate=0.995, position=500)
    assert planner.plan([sure], prompts=[], prompt_attended=0) == {0: 63}  # a step of 64


def test_ubatches_count_the_distinct_token_counts_of_the_sequences():
    assert ubatches_of([1, 1, 1, 5]) == 2
    assert ubatches_of([1, 5, 3, 0]) == 3
    assert ubatches_of([7]) == 1


def test_planner_drafts_where_tokens_are_cheap_and_acceptance_high():
    planner = Speculator(CHEAP_DRAFTS, max_tokens=6)
    right = Candidate(0, 10, rate=0.9, position=100)
    wrong = Candidate(1, 10, rate=0.05, position=100)
    drafts = planner.plan([right, wrong], prompts=[], prompt_attended=0)
    assert drafts == {0: 6}  # capped at max_tokens; the poor guesser gets none


def test_planner_weighs_a_draft_models_drafting_time():
    planner = Speculator(CHEAP_DRAFTS, max_tokens=6)
    cheap = Candidate(0, 10, rate=0.9, position=100, draft_seconds=0.0005)
    assert planner.plan([cheap], prompts=[], prompt_attended=0) == {0: 6}
    costly = Candidate(0, 10, rate=0.9, position=100, draft_seconds=0.010)  # a step a token
    assert planner.plan([costly], prompts=[], prompt_attended=0) == {}


def test_planner_backs_off_when_a_token_costs_a_whole_step():
    planner = Speculator(COSTLY_DRAFTS, max_tokens=8)
    candidates = [Candidate(slot, 4, rate=0.8, position=50) for slot in range(16)]
    assert planner.plan(candidates, prompts=[], prompt_attended=0) == {}


def test_planner_drafts_nothing_without_candidates_or_when_off():
    assert Speculator(CHEAP_DRAFTS).plan([], [], 0) == {}
    assert speculator(EngineConfig(speculate="off"), CHEAP_DRAFTS) is None  # no planner at all


# -- lossless output on the engine ------------------------------------------------------------


@pytest.fixture
def engines(make_engine):
    """`engines(reply, **config)`: (without speculation, with it) over copies of the fake."""

    def make(reply=DOCUMENT, slots=2, **config):
        plain = make_engine(FakeBackend(reply, n_seq_max=slots, n_ctx=2048), **config)
        backend = FakeBackend(reply, n_seq_max=slots, n_ctx=2048)
        fast = make_engine(backend, cost=CHEAP_DRAFTS, speculate="auto", **config)
        return plain, fast, backend

    return make


async def both(engines_pair, req):
    plain, fast, _ = engines_pair
    return await collect(plain, req), await collect(fast, req)


async def test_a_copied_answer_is_drafted_and_comes_out_the_same(engines):
    pair = engines()
    without, with_ = await both(pair, request())
    assert text_of(with_) == text_of(without) == DOCUMENT
    assert finishes(with_) == finishes(without)
    assert drafted_batches(pair[2]) > 0
    steps = [b for b in pair[2].decode_calls if any(e.want_logits for e in b)]
    assert len(steps) < len(DOCUMENT) / 2  # several tokens a step


async def test_rejected_drafts_leave_the_kv_and_the_prefix_cache_right(engines):
    reply = DOCUMENT.replace("lazy dog. Pack", "lazy cat. Pack")  # drafts go wrong there
    pair = engines(reply)
    without, with_ = await both(pair, request())
    assert text_of(with_) == text_of(without) == reply
    backend, scheduler = pair[2], pair[1]._scheduler
    slot = next(s for s, tokens in enumerate(scheduler.cache.tokens) if tokens)
    assert scheduler.cache.tokens[slot] == backend.kv[slot]  # the fake's KV, token for token
    follow_up = request(DOCUMENT + reply + " And again.")
    again = await collect(pair[1], follow_up)
    assert finishes(again)[0].cached_tokens >= len(DOCUMENT) + len(reply) - 1


@pytest.mark.parametrize("max_tokens", [1, 7, 50])
async def test_max_tokens_is_exact(engines, max_tokens):
    without, with_ = await both(engines(), request(max_tokens=max_tokens))
    assert text_of(with_) == text_of(without) == DOCUMENT[:max_tokens]
    assert [(f.reason, f.completion_tokens) for f in finishes(with_)] == [("length", max_tokens)]


async def test_a_stop_sequence_ends_the_answer_where_it_would_have(engines):
    req = request(stop=("jugs",))
    without, with_ = await both(engines(), req)
    assert text_of(with_) == text_of(without) == DOCUMENT[: DOCUMENT.index("jugs")]
    assert finishes(with_)[0].completion_tokens == finishes(without)[0].completion_tokens


async def test_n_choices_and_logprobs_are_kept_per_token(engines):
    sampling = SamplingParams(temperature=0, logprobs=True, top_logprobs=2)
    req = request(n=2, sampling=sampling)
    without, with_ = await both(engines(), req)
    for index in (0, 1):
        assert text_of(with_, index) == text_of(without, index) == DOCUMENT
        infos = [e.token for e in with_ if isinstance(e, TokenEvent) and e.index == index]
        infos = [info for info in infos if info is not None]
        assert len(infos) == len(DOCUMENT) + 1  # every token, the end of generation too
        assert all(len(info.top) == 2 for info in infos)
    assert [f.completion_tokens for f in finishes(with_)] == [len(DOCUMENT) + 1] * 2


async def test_usage_counts_emitted_tokens_only(engines):
    pair = engines()
    without, with_ = await both(pair, request(max_tokens=30))
    assert finishes(with_)[0].completion_tokens == finishes(without)[0].completion_tokens == 30


# -- sampling keeps its distribution ----------------------------------------------------------

# A three-token Markov chain: after each token, the next one's probabilities.
CHAIN = {
    97: [(97, 0.6), (98, 0.3), (99, 0.1)],
    98: [(97, 0.2), (98, 0.5), (99, 0.3)],
    99: [(97, 0.45), (98, 0.1), (99, 0.45)],
}


async def sample_pairs(engine, runs: int, length: int) -> collections.Counter:
    """How often each (token, next token) pair was generated over `runs` answers."""
    pairs: collections.Counter = collections.Counter()
    for seed in range(runs):
        sampling = SamplingParams(temperature=1.0, seed=seed)
        events = await collect(engine, request("abcab", max_tokens=length, sampling=sampling))
        tokens = [ord("b")] + [ord(ch) for ch in text_of(events)]
        pairs.update(zip(tokens, tokens[1:], strict=False))
    return pairs


def chi_square(pairs: collections.Counter) -> float:
    """Pearson's statistic of the observed pairs against CHAIN's transition probabilities."""
    total = 0.0
    for first, nexts in CHAIN.items():
        seen = sum(pairs[(first, n)] for n, _ in nexts)
        for nxt, p in nexts:
            expected = seen * p
            total += (pairs[(first, nxt)] - expected) ** 2 / expected
    return total


async def test_sampling_with_speculation_keeps_the_models_distribution(make_engine):
    backend = FakeBackend(n_seq_max=1, n_ctx=2048)
    backend.chain = {**CHAIN, EOG: CHAIN[97]}
    engine = make_engine(backend, cost=CHEAP_DRAFTS, speculate="auto")
    pairs = await asyncio.wait_for(sample_pairs(engine, runs=60, length=60), 60)
    assert drafted_batches(backend) > 50  # drafts were verified, and some were rejected
    statistic = chi_square(pairs)
    # 6 degrees of freedom (3 rows of 3 outcomes); p = 0.001 lies at 22.46.
    assert statistic < 22.46, (statistic, pairs)
    assert math.isfinite(statistic)


# -- earlier answers, per scope -----------------------------------------------------------------

REPLY = "Zebras quietly munch vivid yellow kumquats near Oslo."  # nothing in DOCUMENT


class Drafts(NullObserver):
    """Counts the drafted tokens verified and those kept."""

    def __init__(self) -> None:
        self.drafted = self.kept = 0

    def speculated(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.kept += accepted


def test_pool_drafts_what_followed_in_an_earlier_answer():
    pool = NgramPool(capacity=1000, sizes=(3,))
    pool.add([1, 2, 3, 4, 5, 6, 7])
    assert pool.draft([9, 9, 2, 3, 4], 2) == ((5, 6), 3, 3)
    assert pool.draft([9, 3, 4, 8], 2) == ((), 0, 0)


def test_pool_drafts_a_looping_answer_from_its_first_turn_and_newer_answers_first():
    pool = NgramPool(capacity=1000, sizes=(2,))
    pool.add([1, 2, 3, 1, 2, 3, 1, 2, 3])
    assert pool.draft([1, 2], 5) == ((3, 1, 2, 3, 1), 2, 2)  # not just the last (3,)
    pool.add([1, 2, 7])
    assert pool.draft([1, 2], 5) == ((7,), 2, 2)


def test_pools_keep_their_scopes_apart_and_drop_the_least_recent():
    pools = ScopedPools(scopes=2, capacity=1000)
    pools.add("a", [1, 2, 3], list(range(10, 30)))
    pools.add("b", [1, 2, 3], [40, 41])
    assert pools.get("b").draft([10, 11, 12, 13, 14, 15], 2) == ((), 0, 0)
    assert pools.get("a").draft([10, 11, 12, 13, 14, 15], 2)[0] == (16, 17)
    pools.add("c", [], [50])  # "b" was used least recently ("a" was just looked up)
    assert pools.get("b") is None and pools.get("a") is not None


def test_pool_memory_stays_within_its_capacity():
    pool = NgramPool(capacity=100, sizes=(6, 3))
    for start in range(0, 2000, 30):
        pool.add(list(range(start, start + 30)))
        assert len(pool) <= 100
        assert len(pool.newer.after) + len(pool.older.after) <= 2 * 100
    pool.add(list(range(500)))  # longer than half the capacity: its end is kept
    assert len(pool) <= 100 and pool.draft([495, 496, 497], 5)[0] == (498, 499)


def test_pool_bytes_per_full_scope_are_as_documented():
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    pool = NgramPool()
    randoms = random.Random(0)
    while len(pool) < SCOPE_TOKENS - 2000:
        pool.add([randoms.randrange(49152) for _ in range(1000)])
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used < 8_000_000  # pool.py: about 6.5 MB a full scope


async def test_a_repeated_request_drafts_from_the_pool_of_its_own_scope_only():
    backend = FakeBackend(REPLY, n_seq_max=1, n_ctx=2048)
    drafts = Drafts()
    engine = Engine(
        backend, config=EngineConfig(speculate="auto"), observer=drafts, cost=CHEAP_DRAFTS
    )
    engine.start()
    try:
        seen = []
        for scope in ("a", "b", "a"):
            drafts.drafted = drafts.kept = 0
            events = await collect(engine, request(cache_scope=scope))
            assert text_of(events) == REPLY
            seen.append((drafts.drafted, drafts.kept))
    finally:
        engine.close()
    first, other_scope, again = seen
    assert other_scope == first  # scope "b" drafted exactly what a fresh engine would
    assert again[1] >= len(REPLY) - 12  # scope "a" drafted its earlier answer
    assert again[1] > 3 * first[1]

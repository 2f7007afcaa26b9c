"""Continuous batching on the scripted backend: admission, budget, prefix reuse, forks, load."""

import asyncio
import time
from types import SimpleNamespace

import pytest

from inkstand.backends.fake import EOG, FakeBackend
from inkstand.engine import (
    GenerationRequest,
    SamplingParams,
)
from inkstand.engine.prefix import RUN_COST, SlotCache, common_prefix
from inkstand.engine.scheduler import AHEAD_TOKENS, PROMPT_PATIENCE, Sequence, prompt_rank
from inkstand.errors import EngineError, OverloadedError

from .events import collect, finishes
from .events import text_of as texts


def request(prompt="hello", max_tokens=50, n=1):
    return GenerationRequest(tuple(prompt.encode()), max_tokens, n=n)


def test_common_prefix_matches_a_plain_scan():
    for a, b in [([], [1]), ([1, 2, 3], [1, 2, 4]), ([5] * 100, [5] * 60 + [6]), ([1], [1])]:
        plain = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        assert common_prefix(a, b) == plain


def cache_holding(n_slots, contents):
    """A SlotCache whose slots hold `contents` (slot -> tokens), used in that order."""
    cache = SlotCache(n_slots)
    for slot, tokens in contents.items():
        cache.use(slot, 0)
        cache.extend(slot, tokens)
    return cache


def test_slot_choice_on_an_idle_engine_prefers_longest_prefix_then_least_recent():
    cache = cache_holding(3, {0: [1, 2, 3], 1: [1, 2], 2: []})
    assert cache.best({0, 1, 2}, (1, 2, 3, 4)) == (0, 3)
    assert cache.best({0, 1, 2}, [9]) == (0, 0)  # no match anywhere: the least recently used


def test_slot_choice_keeps_running_slots_in_one_run():
    cache = cache_holding(16, {slot: [7, slot] for slot in range(16)})
    free = set(range(16)) - {5}
    assert cache.best(free, [7, 9])[0] in (4, 6)  # next to the running slot
    assert cache.best(set(range(16)) - {5, 7}, [7, 9])[0] == 6  # joins 5 and 7 into one run
    assert cache.best(set(range(16)) - {0, 1}, [7, 99])[0] == 2  # one shared token is not enough


def test_a_long_cached_history_outweighs_a_new_run():
    history = list(range(RUN_COST + 10))
    cache = cache_holding(16, {12: history, 1: [1]})
    free = set(range(16)) - {0}
    assert cache.best(free, history + [5]) == (12, len(history))
    assert cache.best(free, history[:20] + [5])[0] == 1


async def test_sixteen_requests_share_decode_steps(make_engine):
    reply = "abcdef"
    backend = FakeBackend(reply, n_seq_max=16, n_batch=256)
    engine = make_engine(backend)
    results = await asyncio.gather(*(collect(engine, request(f"p{i}")) for i in range(16)))
    assert all(texts(r) == reply for r in results)
    assert max(len(call) for call in backend.decode_calls) == 16


async def test_prompt_chunks_respect_the_step_budget_while_others_generate(make_engine):
    backend = FakeBackend("x" * 100_000, n_seq_max=2, n_batch=256, n_ctx=200_000)
    engine = make_engine(backend, step_tokens=16)
    async with engine.stream(request("a", max_tokens=100_000)) as running:
        await anext(running)  # the first sequence is generating from here on
        await collect(engine, request("b" * 100, max_tokens=2))
    mixed = [c for c in backend.decode_calls if len(c) == 2]
    assert mixed and all(sum(len(e.tokens) for e in c) <= 17 for c in mixed)


def prompt_sequence(length: int, fed: int, admitted_at: float) -> Sequence:
    job = SimpleNamespace(request=SimpleNamespace(prompt_tokens=(1,) * length))
    return Sequence(job, 0, 0, fed=fed, cached=0, admitted_at=admitted_at)  # type: ignore[arg-type]


def test_prompts_get_the_budget_shortest_rest_first_and_overdue_ones_before_all():
    now = 1000.0
    long_old = prompt_sequence(900, 100, now - 1)
    short_new = prompt_sequence(40, 0, now)
    half_read = prompt_sequence(600, 580, now - 0.5)  # 20 left
    overdue = prompt_sequence(2000, 0, now - PROMPT_PATIENCE - 1)
    older_overdue = prompt_sequence(3000, 0, now - PROMPT_PATIENCE - 2)
    ranked = sorted(
        [long_old, short_new, half_read, overdue, older_overdue],
        key=lambda seq: prompt_rank(seq, now - PROMPT_PATIENCE),
    )
    assert ranked == [older_overdue, overdue, half_read, short_new, long_old]


class SlowFakeBackend(FakeBackend):
    """Decodes take a little time, so prompts are still being read when others arrive."""

    def decode(self, batch):
        time.sleep(0.002)
        return super().decode(batch)


async def test_a_short_prompt_gets_its_first_token_before_a_long_one_admitted_earlier(make_engine):
    backend = SlowFakeBackend("x" * 100_000, n_seq_max=3, n_batch=256, n_ctx=200_000)
    engine = make_engine(backend, step_tokens=8)
    firsts: list[str] = []

    async def first_token(name: str, prompt: str) -> None:
        async with engine.stream(request(prompt, max_tokens=2)) as events:
            await anext(events)
            firsts.append(name)
            async for _ in events:
                pass

    async with engine.stream(request("a", max_tokens=100_000)) as running:
        await anext(running)  # from here on the budget is step_tokens per step
        long = asyncio.create_task(first_token("long", "L" * 800))
        async with asyncio.timeout(5):
            while len(engine._scheduler.active) < 2:
                await asyncio.sleep(0.001)
        await first_token("short", "s" * 10)
        await long
    assert firsts == ["short", "long"]


async def test_waiting_requests_are_admitted_in_arrival_order(make_engine):
    backend = FakeBackend("zz", n_seq_max=1)
    engine = make_engine(backend)
    order = []

    async def run(i):
        await collect(engine, request(f"q{i}"))
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(run(i)))
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_repeated_prompt_reuses_the_cached_prefix(make_engine):
    backend = FakeBackend("ok", n_seq_max=2)
    engine = make_engine(backend)
    first = finishes(await collect(engine, request("the same long prompt")))[0]
    second = finishes(await collect(engine, request("the same long prompt!")))[0]
    assert first.cached_tokens == 0
    assert second.cached_tokens == len("the same long prompt")
    assert second.prompt_tokens == len("the same long prompt!")


async def test_conversation_turn_reuses_prompt_and_answer(make_engine):
    backend = FakeBackend("REPLY", n_seq_max=4)
    engine = make_engine(backend)
    await collect(engine, request("turn one|"))
    turn_two = finishes(await collect(engine, request("turn one|REPLY|turn two")))[0]
    assert turn_two.cached_tokens == len("turn one|REPLY")


async def test_n_choices_fork_one_prefill(make_engine):
    backend = FakeBackend("abc", n_seq_max=4, n_batch=256)
    engine = make_engine(backend)
    events = await collect(engine, request("shared prompt", n=4))
    assert [f.index for f in finishes(events)] == [0, 1, 2, 3]
    assert all(texts(events, i) == "abc" for i in range(4))
    prompt_tokens_decoded = sum(
        len(e.tokens) for call in backend.decode_calls for e in call if len(e.tokens) > 1
    )
    assert prompt_tokens_decoded == len("shared prompt")


async def test_n_choices_reuse_their_scopes_cache_beside_slots_never_used(make_engine):
    # Found by tests/api/test_contract.py: the sibling slots of a request that reuses its
    # key's cache were asked to keep that many tokens of a slot no key had used: a 500.
    backend = FakeBackend("ok", n_seq_max=4)
    engine = make_engine(backend)
    prompt = tuple(b"the same long prompt")
    await collect(engine, GenerationRequest(prompt, 50, cache_scope="key-a"))
    again = GenerationRequest((*prompt, ord("!")), 50, n=3, cache_scope="key-a")
    ends = finishes(await collect(engine, again))
    assert [(f.index, f.reason) for f in ends] == [(0, "stop"), (1, "stop"), (2, "stop")]
    assert ends[0].cached_tokens == len(prompt)


async def test_cancel_frees_the_slot_for_a_waiting_request(make_engine):
    backend = FakeBackend("y" * 100_000, n_seq_max=1, n_ctx=200_000)
    engine = make_engine(backend)
    async with engine.stream(request(max_tokens=100_000)) as events:
        await anext(events)
    done = await asyncio.wait_for(collect(engine, request(max_tokens=3)), 10)
    assert finishes(done)[0].reason == "length"


async def test_full_wait_line_refuses_at_once(make_engine):
    backend = FakeBackend("y" * 100_000, n_seq_max=1, n_ctx=200_000)
    engine = make_engine(backend, max_waiting=1)
    async with engine.stream(request(max_tokens=100_000)) as running:
        await anext(running)
        async with engine.stream(request()):
            with pytest.raises(OverloadedError) as refused:
                async with engine.stream(request()):
                    pass
    assert refused.value.retry_after


async def test_request_waiting_too_long_gets_overloaded(make_engine):
    backend = FakeBackend("y" * 100_000, n_seq_max=1, n_ctx=200_000)
    engine = make_engine(backend, queue_timeout=0.05)
    async with engine.stream(request(max_tokens=100_000)) as running:
        await anext(running)
        with pytest.raises(OverloadedError):
            await collect(engine, request())


async def test_full_kv_sheds_the_newest_request_and_keeps_the_rest(make_engine):
    backend = FakeBackend("abcdefgh", n_seq_max=2)
    engine = make_engine(backend)
    older = asyncio.create_task(collect(engine, request("old")))
    await asyncio.sleep(0.02)
    backend.kv_full_decodes = 1
    with pytest.raises(OverloadedError):
        await collect(engine, request("new"))
    assert finishes(await older)[0].reason == "stop"


async def test_batches_list_sequences_in_slot_order_and_slots_stay_together(make_engine):
    backend = FakeBackend("abcdefgh", n_seq_max=16, n_batch=256)
    engine = make_engine(backend)
    await asyncio.gather(*(collect(engine, request(f"p{i}")) for i in range(4)))
    assert all([e.seq_id for e in c] == sorted(e.seq_id for e in c) for c in backend.decode_calls)
    used = {e.seq_id for c in backend.decode_calls for e in c}
    assert max(used) - min(used) == len(used) - 1 == 3


async def test_choices_of_a_seeded_request_get_seeds_of_their_own(make_engine):
    backend = FakeBackend("abc", n_seq_max=4, n_batch=256)
    engine = make_engine(backend)
    seeded = GenerationRequest(tuple(b"hello"), 5, SamplingParams(temperature=0.8, seed=7), n=3)
    await collect(engine, seeded)
    assert sorted(s.seed for s in backend.sampling.values()) == [7, 8, 9]


# -- decoding ahead: a finished answer's turn tail goes into its idle slot ---------------
TAIL = (EOG, *b"|user:")  # what a follow-up prompt puts after the answer (cf. ChatML's)


def chat_turn(prompt: bytes, max_tokens=50, stop=()) -> GenerationRequest:
    return GenerationRequest(tuple(prompt), max_tokens, stop=stop, turn_tail=TAIL)


async def until(condition, timeout=5.0):
    """Wait for the engine thread to get somewhere (not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the engine never got there"
        await asyncio.sleep(0.005)


def ahead_calls(backend) -> list[list]:
    return [c for c in backend.decode_calls if not any(e.want_logits for e in c)]


async def test_an_answer_ending_at_eog_gets_its_turn_tail_decoded_and_reused(make_engine):
    backend = FakeBackend("REPLY", n_seq_max=2)
    engine = make_engine(backend)
    await collect(engine, chat_turn(b"turn one|"))
    held = tuple(b"turn one|REPLY") + TAIL
    await until(lambda: any(tuple(kv) == held for kv in backend.kv.values()))
    follow_up = GenerationRequest((*held, *b"turn two"), 5, turn_tail=TAIL)
    turn_two = finishes(await collect(engine, follow_up))[0]
    assert turn_two.cached_tokens == len(held)
    assert turn_two.prompt_tokens == len(held) + len("turn two")


async def test_an_answer_cut_by_max_tokens_gets_its_last_token_and_tail(make_engine):
    backend = FakeBackend("REPLY", n_seq_max=1)
    engine = make_engine(backend)
    assert finishes(await collect(engine, chat_turn(b"q|", max_tokens=3)))[0].reason == "length"
    held = (*b"q|REP", *TAIL)  # "P" was sampled, never decoded, until now
    await until(lambda: tuple(backend.kv[0]) == held)
    turn_two = finishes(await collect(engine, GenerationRequest((*held, *b"more"), 5)))[0]
    assert turn_two.cached_tokens == len(held)


async def test_no_tail_after_a_stop_sequence_or_without_one(make_engine):
    backend = FakeBackend("REPLY", n_seq_max=2)
    engine = make_engine(backend)
    await collect(engine, chat_turn(b"a|", stop=("PL",)))
    await collect(engine, request("b|"))
    await collect(engine, request("c|"))  # gives the engine thread a pass after the others
    assert ahead_calls(backend) == []


async def test_tails_go_in_small_batches_in_slot_order(make_engine):
    backend = FakeBackend("REPLY", n_seq_max=4, n_batch=256)
    engine = make_engine(backend)
    await asyncio.gather(*(collect(engine, chat_turn(b"p%d|" % i)) for i in range(4)))
    await until(lambda: sum(len(c) for c in ahead_calls(backend)) == 4)
    calls = ahead_calls(backend)
    assert all(sum(len(e.tokens) for e in c) <= AHEAD_TOKENS for c in calls)
    assert len(TAIL) == 7 and AHEAD_TOKENS == 16 and len(calls) == 2  # two tails a call
    assert all([e.seq_id for e in c] == sorted(e.seq_id for e in c) for c in calls)
    assert all(kv[-len(TAIL) :] == list(TAIL) for kv in backend.kv.values())


async def test_a_new_request_takes_a_slot_whose_tail_is_pending(make_engine):
    # Whether or not the tail went in first, the slot's KV positions stay consistent (the
    # fake checks every batch against its cache) and the next request is answered.
    backend = FakeBackend("REPLY", n_seq_max=1)
    engine = make_engine(backend)
    for i in range(20):
        await collect(engine, chat_turn(b"turn %d|" % i))
        assert finishes(await collect(engine, request(f"other {i}")))[0].reason == "stop"


class FailingAhead(FakeBackend):
    """Fails every decode that wants no logits: the decode-ahead ones."""

    def decode(self, batch):
        if not any(e.want_logits for e in batch):
            self.decode_calls.append(batch)
            raise EngineError("scripted failure ahead")
        return super().decode(batch)


async def test_a_failed_decode_ahead_forgets_the_slot_and_harms_nobody(make_engine):
    backend = FailingAhead("REPLY", n_seq_max=1)
    engine = make_engine(backend)
    await collect(engine, chat_turn(b"turn one|"))
    await until(lambda: ahead_calls(backend))
    held = (*b"turn one|REPLY", *TAIL)
    turn_two = finishes(await collect(engine, GenerationRequest((*held, *b"two"), 50)))[0]
    assert (turn_two.reason, turn_two.cached_tokens) == ("stop", 0)

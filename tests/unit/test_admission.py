"""Admission on the scripted backend: a request needing many slots blocks nobody, starves
never, and every request's wait for a slot is timed from its arrival."""

import asyncio

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.engine import Finish, GenerationRequest, TokenEvent
from inkstand.engine.scheduler import RETRY_AFTER
from inkstand.errors import OverloadedError

ENDLESS = 100_000  # tokens: a request that generates until its client leaves


def request(prompt="hello", max_tokens=5, n=1):
    return GenerationRequest(tuple(prompt.encode()), max_tokens, n=n)


@pytest.fixture
def endless_engine(make_engine):
    """`endless_engine(slots, **config)`: an engine whose answers go on until cancelled."""

    def make(slots=2, **config):
        return make_engine(FakeBackend("y" * ENDLESS, n_seq_max=slots, n_ctx=2 * ENDLESS), **config)

    return make


async def first_event_at(engine, req, timeline: list, name: str) -> list:
    """Collect the request's events, noting on `timeline` when its first one came."""
    async with engine.stream(req) as events:
        out = [await anext(events)]
        timeline.append(name)
        out += [event async for event in events]
    return out


async def until_waiting(engine, count: int) -> None:
    """Until `count` requests wait in the engine's line (not a timing assertion)."""
    async with asyncio.timeout(5):
        while len(engine._scheduler.waiting) != count:
            await asyncio.sleep(0.002)


async def test_a_request_needing_more_slots_than_are_free_lets_smaller_ones_in(endless_engine):
    engine = endless_engine(slots=2, aging=60)
    timeline: list[str] = []
    async with engine.stream(request(max_tokens=ENDLESS)) as running:
        await anext(running)  # one slot busy, one free
        big = asyncio.create_task(first_event_at(engine, request(n=2), timeline, "big"))
        await until_waiting(engine, 1)
        small = await asyncio.wait_for(first_event_at(engine, request(), timeline, "small"), 5)
        assert [e.reason for e in small if isinstance(e, Finish)] == ["length"]
        assert timeline == ["small"] and not big.done()
    # the running request's client left: both slots free up for the big one
    events = await asyncio.wait_for(big, 5)
    assert sorted(e.index for e in events if isinstance(e, Finish)) == [0, 1]


async def test_a_request_that_waited_its_patience_is_overtaken_no_more(endless_engine):
    engine = endless_engine(slots=2, aging=0.05)
    timeline: list[str] = []
    async with engine.stream(request(max_tokens=ENDLESS)) as running:
        await anext(running)
        big = asyncio.create_task(first_event_at(engine, request(n=2), timeline, "big"))
        await until_waiting(engine, 1)
        await asyncio.sleep(0.1)  # past its patience
        small = asyncio.create_task(first_event_at(engine, request(), timeline, "small"))
        await until_waiting(engine, 2)
        await asyncio.sleep(0.05)
        assert timeline == []  # the free slot is kept for the big request
    await asyncio.wait_for(asyncio.gather(big, small), 5)
    assert timeline == ["big", "small"]


async def test_smaller_requests_keep_going_in_until_the_big_one_has_waited(endless_engine):
    engine = endless_engine(slots=3, aging=0.3)
    timeline: list[str] = []
    async with engine.stream(request(max_tokens=ENDLESS)) as running:
        await anext(running)
        big = asyncio.create_task(first_event_at(engine, request(n=3), timeline, "big"))
        await until_waiting(engine, 1)
        small = [first_event_at(engine, request(max_tokens=3), timeline, "small") for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*small), 5)  # two free slots, taken in turn
        assert timeline == ["small"] * 4
    await asyncio.wait_for(big, 5)
    assert timeline[-1] == "big"


async def test_the_wait_for_a_slot_is_timed_from_arrival_even_while_others_overtake(endless_engine):
    engine = endless_engine(slots=2, aging=60, queue_timeout=0.3)
    loop = asyncio.get_running_loop()
    async with engine.stream(request(max_tokens=ENDLESS)) as running:
        await anext(running)
        sent = loop.time()
        big = asyncio.create_task(first_event_at(engine, request(n=2), [], "big"))
        overtook = 0
        while not big.done():  # small requests keep taking the free slot meanwhile
            await asyncio.wait_for(first_event_at(engine, request(max_tokens=2), [], "s"), 5)
            overtook += not big.done()
        with pytest.raises(OverloadedError) as refused:
            await big
    assert 0.3 <= loop.time() - sent < 2.0 and overtook > 1
    assert refused.value.retry_after == RETRY_AFTER > 0


async def test_a_cancelled_request_leaves_the_wait_line_at_once(endless_engine):
    engine = endless_engine(slots=1)
    async with engine.stream(request(max_tokens=ENDLESS)) as running:
        await anext(running)
        for _ in range(3):
            async with engine.stream(request()):
                await until_waiting(engine, 1)
        await until_waiting(engine, 0)  # its client left: no slot needed to drop it
        assert isinstance(await anext(running), TokenEvent)

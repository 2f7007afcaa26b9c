"""The engine thread with a scripted backend: finish reasons, batching, cancellation, faults."""

import asyncio
import queue
import threading
from dataclasses import replace
from functools import partial

import pytest

from inkstand.backends.base import BackendBrokenError
from inkstand.backends.fake import EOG, FakeBackend
from inkstand.backends.faults import POINTS, Faults, FaultyBackend, InjectedFault
from inkstand.engine import Engine, Finish, GenerationRequest, SamplingParams, TokenEvent
from inkstand.engine.engine import EngineStream
from inkstand.engine.outbox import Outbox
from inkstand.engine.scheduler import MAX_FAILURES, STOP, Job, Scheduler
from inkstand.errors import EngineError, InkstandError, ModelFailedError

from .events import collect


@pytest.fixture
def backend():
    return FakeBackend("Hello world")


@pytest.fixture
def engine(backend):
    engine = Engine(backend)
    engine.start()
    yield engine
    engine.close()


def request(max_tokens=50, stop=(), logprobs=False, prompt="hi"):
    return GenerationRequest(
        tuple(prompt.encode()), max_tokens, SamplingParams(logprobs=logprobs), tuple(stop)
    )


async def test_reply_then_finish_stop_with_exact_counts(engine):
    events = await collect(engine, request())
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert text == "Hello world"
    assert events[-1] == Finish("stop", 2, len("Hello world") + 1, 0)


async def test_max_tokens_ends_with_length(engine):
    events = await collect(engine, request(max_tokens=4))
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "Hell"
    assert events[-1].reason == "length"
    assert events[-1].completion_tokens == 4


async def test_stop_sequence_ends_with_stop_and_hides_it(engine):
    events = await collect(engine, request(stop=("o w",)))
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "Hell"
    assert events[-1].reason == "stop"


async def test_logprobs_come_with_every_token(engine):
    events = await collect(engine, request(max_tokens=3, logprobs=True))
    tokens = [e.token for e in events if isinstance(e, TokenEvent)]
    assert [t.raw for t in tokens] == [b"H", b"e", b"l"]
    assert all(t.logprob <= 0 for t in tokens)


async def test_long_prompt_is_fed_in_batch_sized_chunks(backend, engine):
    await collect(engine, request(prompt="x" * 150))
    prompt_runs = [len(e.tokens) for call in backend.decode_calls for e in call]
    assert prompt_runs[:3] == [64, 64, 22]


async def test_leaving_early_cancels_and_frees_the_slot(backend, engine):
    async with engine.stream(request()) as events:
        await anext(events)
    # The slot is free again: the next request runs to completion.
    events = await asyncio.wait_for(collect(engine, request()), 10)
    assert events[-1].reason == "stop"
    assert len(backend.ended) == 2


async def test_decode_failure_fails_the_request_and_engine_recovers(backend, engine):
    backend.fail_decodes = 1
    with pytest.raises(EngineError):
        await collect(engine, request())
    events = await collect(engine, request())
    assert events[-1].reason == "stop"


async def test_several_slots_decode_in_one_batch():
    backend = FakeBackend("abc", n_seq_max=2)
    engine = Engine(backend)
    engine.start()
    try:
        results = await asyncio.gather(collect(engine, request()), collect(engine, request()))
    finally:
        engine.close()
    assert all(r[-1].reason == "stop" for r in results)
    assert max(len(call) for call in backend.decode_calls) == 2


async def test_close_fails_waiting_requests(backend):
    engine = Engine(backend)
    engine.start()
    engine.close()
    assert not engine._thread.is_alive()


class FailingSampler(FakeBackend):
    """Fails to sample for one slot, as a grammar with no way on would."""

    def __init__(self, bad_slot: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad_slot = bad_slot

    def sample(self, seq_id: int, logits_index: int) -> int:
        if seq_id == self.bad_slot:
            raise EngineError("the grammar allows no next token")
        return super().sample(seq_id, logits_index)


async def test_a_sampling_failure_fails_its_request_and_the_engine_carries_on():
    backend = FailingSampler(0, reply="ok", n_seq_max=2)
    engine = Engine(backend)
    engine.start()

    async def finish_reasons() -> list[str]:
        async with engine.stream(GenerationRequest((1, 2, 3), 8)) as events:
            return [e.reason async for e in events if isinstance(e, Finish)]

    try:
        with pytest.raises(EngineError):
            await asyncio.wait_for(finish_reasons(), 10)
        backend.bad_slot = -1
        assert await asyncio.wait_for(finish_reasons(), 10) == ["stop"]
    finally:
        engine.close()


# -- faults: nothing raised on the engine thread ends it or leaves a request waiting ----------

TWO_CHOICES = GenerationRequest(tuple(b"hi"), 50, SamplingParams(logprobs=True), n=2)


def faulty_engine(faults, *, observer=None, slots=2, reply="Hello world", n_ctx=512) -> Engine:
    backend = FakeBackend(reply, n_seq_max=slots, n_ctx=n_ctx)
    engine = Engine(FaultyBackend(backend, faults), observer=observer)
    engine.start()
    return engine


async def outcome(engine, req):
    """The request's events, or the error that ended it."""
    try:
        return await asyncio.wait_for(collect(engine, req), 10)
    except InkstandError as exc:
        return exc


def finishes(events) -> list[str]:
    return [e.reason for e in events if isinstance(e, Finish)]


def logged_traceback(caplog, kind=InjectedFault) -> bool:
    return any(r.exc_info and isinstance(r.exc_info[1], kind) for r in caplog.records)


async def assert_only_the_victim_fails(run, faults, caplog) -> None:
    """A request of two choices meets the fault; one queued behind it, and the next, are served.

    Two choices with logprobs make the victim use every backend call (fork included); with
    two slots the second request waits until the victim's slots are free.
    """
    victim, queued = await asyncio.gather(run(TWO_CHOICES), run(TWO_CHOICES))
    assert isinstance(victim, EngineError) and victim.status == 500, victim
    assert finishes(queued) == ["stop", "stop"]
    assert finishes(await run(request())) == ["stop"]
    assert faults.raised == 1
    assert logged_traceback(caplog)


# calls let through before the fault: begin, fork and end run once per choice, the others
# once or twice per token, so each fault strikes while the victim runs
BACKEND_CALLS = {
    "begin": 0,
    "fork": 0,
    "decode": 1,
    "sample": 3,
    "logprob": 3,
    "token_bytes": 3,
    "is_eog": 3,
    "end": 0,
}


@pytest.mark.parametrize("point", POINTS)
async def test_a_fault_in_any_backend_call_fails_only_its_request(point, caplog):
    faults = Faults()
    faults.arm(point, skip=BACKEND_CALLS[point])
    engine = faulty_engine(faults)
    try:
        await assert_only_the_victim_fails(partial(outcome, engine), faults, caplog)
        assert engine.healthy and engine._thread.is_alive()
    finally:
        engine.close()


class FaultyObserver:
    """An engine observer that fails where `faults` says (a bug in the metrics, say)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def __getattr__(self, name: str):
        return lambda *args: self.faults.check(name, *args)


@pytest.mark.parametrize("point", ["admitted", "first_token", "token_gap", "generated"])
async def test_a_failing_observer_fails_only_the_request_it_reports_on(point, caplog):
    faults = Faults()
    faults.arm(point)
    engine = faulty_engine(Faults(), observer=FaultyObserver(faults))
    try:
        await assert_only_the_victim_fails(partial(outcome, engine), faults, caplog)
        assert engine.healthy and engine._thread.is_alive()
    finally:
        engine.close()


class FaultyScheduler(Scheduler):
    """The scheduler, failing where `faults` says inside its own step (a bug there)."""

    def __init__(self, faults: Faults) -> None:
        super().__init__(FakeBackend("Hello world", n_seq_max=2), queue.SimpleQueue())
        self.faults = faults

    def _collect(self, *, block):
        self.faults.check("collect")
        return super()._collect(block=block)

    def _drop_cancelled(self):
        self.faults.check("drop_cancelled")
        super()._drop_cancelled()

    def _expire_waiting(self, now):
        self.faults.check("expire_waiting")
        super()._expire_waiting(now)

    def _admit(self):
        self.faults.check("admit")
        super()._admit()

    def _build_batch(self):
        self.faults.check("build_batch")
        return super()._build_batch()

    def _commit(self, entries, owners):
        self.faults.check("commit")
        super()._commit(entries, owners)

    def _take(self, seq, logits_index, now):
        self.faults.check("take")
        super()._take(seq, logits_index, now)

    def _finish(self, seq, reason, ahead=()):
        self.faults.check("finish")
        super()._finish(seq, reason, ahead)

    async def outcome(self, req):
        """`Engine.stream` without the engine: submit a job, collect its events."""
        job = Job(req, asyncio.get_running_loop(), self.outbox)
        self.inbox.put(job)
        events = EngineStream(job)
        try:
            return await asyncio.wait_for(_events(events), 10)
        except InkstandError as exc:
            return exc
        finally:
            job.cancel()


async def _events(events: EngineStream) -> list:
    return [event async for event in events]


# passes or calls let through before the fault strikes the running victim
SCHEDULER_POINTS = {
    "collect": 2,
    "drop_cancelled": 2,
    "expire_waiting": 2,
    "admit": 2,
    "build_batch": 1,
    "commit": 1,
    "take": 2,
    "finish": 0,
}


@pytest.mark.parametrize("point", list(SCHEDULER_POINTS))
async def test_a_fault_at_any_point_of_a_step_fails_only_the_requests_it_touched(point, caplog):
    faults = Faults()
    faults.arm(point, skip=SCHEDULER_POINTS[point])
    scheduler = FaultyScheduler(faults)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    try:
        await assert_only_the_victim_fails(scheduler.outcome, faults, caplog)
        assert thread.is_alive() and scheduler.failure is None
    finally:
        scheduler.inbox.put(STOP)
        thread.join()


async def test_a_failed_sequence_fails_alone_among_running_ones(caplog):
    faults = Faults()
    endless = 100_000  # tokens: the first request is still generating when the second fails
    engine = faulty_engine(faults, reply="x" * endless, n_ctx=2 * endless)
    fake = engine.backend.backend
    try:
        async with engine.stream(request(max_tokens=endless)) as running:
            await anext(running)  # generating now, in the one busy slot
            busy = next(iter(fake.sampled))
            faults.arm("sample", when=lambda slot, _: slot != busy)
            assert isinstance(await outcome(engine, request()), EngineError)
            assert [len(batch) for batch in fake.decode_calls].count(2) == 1  # side by side
            for _ in range(3):  # and the first goes on
                assert isinstance(await anext(running), TokenEvent)
        assert faults.raised == 1 and logged_traceback(caplog)
    finally:
        engine.close()


async def test_a_failed_request_leaves_no_cache_behind():
    faults = Faults()
    engine = faulty_engine(faults, slots=1)
    prompt = "a prompt long enough to be worth caching"
    try:
        assert (await outcome(engine, request(prompt=prompt)))[-1].cached_tokens == 0
        assert (await outcome(engine, request(prompt=prompt)))[-1].cached_tokens > 0
        faults.arm("sample", skip=2)
        assert isinstance(await outcome(engine, request(prompt=prompt)), EngineError)
        assert (await outcome(engine, request(prompt=prompt)))[-1].cached_tokens == 0
    finally:
        engine.close()


async def test_a_failed_decode_ahead_forgets_the_slot_and_harms_no_request(caplog):
    faults = Faults()
    faults.arm("decode", when=lambda batch: not batch[0].want_logits)  # only decodes ahead
    engine = faulty_engine(faults, slots=1, reply="ok")
    first = replace(request(), turn_tail=(EOG, *b"\nuser\n"))
    try:
        assert finishes(await outcome(engine, first)) == ["stop"]
        async with asyncio.timeout(5):
            while not faults.raised:  # idle now: it decodes the tail ahead, and fails
                await asyncio.sleep(0.001)
        follow_up = (*first.prompt_tokens, *b"ok", *first.turn_tail, *b"more")
        events = await outcome(engine, replace(first, prompt_tokens=follow_up))
        assert faults.raised == 1
        assert events[-1].reason == "stop" and events[-1].cached_tokens == 0
        assert engine.healthy and logged_traceback(caplog)
    finally:
        engine.close()


class FlakyOutbox(Outbox):
    """Fails its first hand-off of events to an event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def _hand_over(self, loop, deliveries):
        if not self.failed:
            self.failed = True
            raise InjectedFault("injected fault at the outbox")
        super()._hand_over(loop, deliveries)


async def test_a_failed_hand_off_is_retried_and_the_request_completes(engine, caplog):
    engine._scheduler.outbox = FlakyOutbox()
    assert finishes(await outcome(engine, request())) == ["stop"]
    assert engine._scheduler.outbox.failed and logged_traceback(caplog)


async def test_failed_steps_in_a_row_make_the_engine_give_up():
    faults = Faults()
    faults.arm("decode", times=MAX_FAILURES)
    engine = faulty_engine(faults, slots=1)
    try:
        for _ in range(MAX_FAILURES - 1):
            assert isinstance(await outcome(engine, request()), EngineError)
        assert engine.healthy
        last, queued = await asyncio.gather(outcome(engine, request()), outcome(engine, request()))
        assert isinstance(last, EngineError) and last.status == 500
        assert isinstance(queued, ModelFailedError) and queued.status == 503
        assert not engine.healthy and engine._thread.is_alive()
        with pytest.raises(ModelFailedError):  # at once: it never reaches the engine thread
            async with engine.stream(request()):
                pass
    finally:
        engine.close()


async def test_a_decoded_batch_resets_the_count_of_failures():
    faults = Faults()
    engine = faulty_engine(faults, slots=1)
    try:
        for _ in range(2):
            faults.arm("decode", times=MAX_FAILURES - 1)
            for _ in range(MAX_FAILURES - 1):
                assert isinstance(await outcome(engine, request()), EngineError)
            assert finishes(await outcome(engine, request())) == ["stop"]
        assert engine.healthy
    finally:
        engine.close()


async def test_a_broken_backend_makes_the_engine_give_up_at_once():
    faults = Faults()
    faults.arm("decode", BackendBrokenError("the context is lost"))
    engine = faulty_engine(faults, slots=1)
    try:
        assert isinstance(await outcome(engine, request()), EngineError)
        assert isinstance(await outcome(engine, request()), ModelFailedError)
        assert not engine.healthy
    finally:
        engine.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_an_error_that_ends_the_thread_still_answers_every_request():
    faults = Faults()
    faults.arm("sample", SystemExit(), skip=1)
    engine = faulty_engine(faults, slots=1)
    try:
        running, queued = await asyncio.gather(
            outcome(engine, request()), outcome(engine, request())
        )
        assert isinstance(running, ModelFailedError) and isinstance(queued, ModelFailedError)
        engine._thread.join(5)
        assert not engine.healthy
        with pytest.raises(ModelFailedError):
            async with engine.stream(request()):
                pass
    finally:
        engine.close()


async def test_a_stopped_engine_refuses_at_once(engine):
    engine.close()
    with pytest.raises(ModelFailedError):
        async with asyncio.timeout(5), engine.stream(request()) as events:
            await anext(events)

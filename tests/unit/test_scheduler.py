"""The engine thread with a scripted backend: finish reasons, batching, cancellation, failure."""

import asyncio

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.engine import Engine, Finish, GenerationRequest, SamplingParams, TokenEvent
from inkstand.errors import EngineError


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


async def collect(engine, req):
    async with engine.stream(req) as events:
        return [event async for event in events]


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

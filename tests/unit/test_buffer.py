"""The event buffer: a reader far behind gets the same text in fewer events, in bounded memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from inkstand.engine.buffer import EventBuffer
from inkstand.engine.types import Finish, TokenEvent, TokenInfo
from inkstand.errors import EngineError

LIMIT = 4


def drain(buffer: EventBuffer) -> list:
    out = []
    while not buffer.empty():
        out.append(buffer.get_nowait())
    return out


def text_of(events: list, index: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.index == index)


async def test_a_reader_that_keeps_up_gets_every_event_as_it_came():
    buffer = EventBuffer(LIMIT)
    events = [TokenEvent(str(i)) for i in range(LIMIT)] + [Finish("stop", 3, 4)]
    for event in events:
        buffer.put_nowait(event)
        assert buffer.get_nowait() is event


async def test_past_the_limit_text_is_merged_and_the_queue_stops_growing():
    buffer = EventBuffer(LIMIT)
    for i in range(1000):
        buffer.put_nowait(TokenEvent(f"{i} "))
    assert buffer.qsize() == LIMIT  # and one piece held back
    buffer.put_nowait(Finish("length", 3, 1000))
    out = drain(buffer)
    assert len(out) == LIMIT + 2
    assert text_of(out) == "".join(f"{i} " for i in range(1000))
    assert isinstance(out[-1], Finish)


async def test_held_text_comes_out_once_the_reader_catches_up():
    buffer = EventBuffer(LIMIT)
    for i in range(LIMIT + 3):
        buffer.put_nowait(TokenEvent(str(i)))
    assert buffer.held() == 3
    first = buffer.get_nowait()
    assert first.text == "0" and buffer.held() == 0  # the held piece is queued now
    assert [e.text for e in drain(buffer)] == ["1", "2", "3", "456"]


async def test_an_error_comes_after_all_held_text():
    buffer = EventBuffer(1)
    buffer.put_nowait(TokenEvent("a", index=0))
    buffer.put_nowait(TokenEvent("b", index=1))
    buffer.put_nowait(TokenEvent("c", index=0))
    error = EngineError("boom")
    buffer.put_nowait(error)
    out = drain(buffer)
    assert out[-1] is error
    assert (text_of(out, 0), text_of(out, 1)) == ("ac", "b")


async def test_tokens_with_log_probabilities_are_never_merged():
    buffer = EventBuffer(1)
    info = TokenInfo(1, "x", b"x", -0.5)
    for _ in range(5):
        buffer.put_nowait(TokenEvent("x", info))
    assert buffer.qsize() == 5 and all(e.token is info for e in drain(buffer))


choices = st.integers(min_value=0, max_value=2)
text = st.tuples(st.just("text"), choices, st.text(max_size=3))
logprob = st.tuples(st.just("logprob"), choices, st.text(max_size=3))
read = st.tuples(st.just("read"), st.just(0), st.just(""))


def run(script: list, limit: int, check=lambda buffer: None) -> tuple[dict, list]:
    """Put and read as `script` says; what was put per choice, and everything read."""
    buffer = EventBuffer(limit)
    sent: dict[int, list] = {0: [], 1: [], 2: []}
    got: list = []
    info = TokenInfo(1, "x", b"x", 0.0)
    for kind, index, piece in script:
        if kind == "read":
            if not buffer.empty():
                got.append(buffer.get_nowait())
        else:
            event = TokenEvent(piece, info if kind == "logprob" else None, index)
            sent[index].append(event)
            buffer.put_nowait(event)
        check(buffer)
    return sent, got + drain(buffer)


@given(st.lists(st.one_of(text, logprob, read), max_size=80), st.integers(1, 6))
def test_each_choice_reads_what_was_put_in_order(script, limit):
    sent, got = run(script, limit)
    for index in range(3):
        put = [(e.token, e.text) for e in sent[index]]
        assert _joined([(e.token, e.text) for e in got if e.index == index]) == _joined(put)


@given(st.lists(st.one_of(text, read), max_size=200), st.integers(1, 6))
def test_plain_text_never_queues_more_than_the_limit_and_a_piece_a_choice(script, limit):
    def check(buffer: EventBuffer) -> None:
        assert buffer.qsize() <= limit + 3

    run(script, limit, check)


def _joined(events: list) -> list:
    """Runs of plain text joined into one string; tokens with info as they are."""
    out: list = []
    for token, piece in events:
        if token is None and out and out[-1][0] is None:
            out[-1] = (None, out[-1][1] + piece)
        else:
            out.append((token, piece))
    return [item for item in out if item != (None, "")]

"""The outbox: a step's events reach each event loop in one hand-off, in order."""

from __future__ import annotations

import asyncio

from inkstand.engine.outbox import HAND_OFF_TRIES, Outbox


class RecordingLoop:
    def __init__(self, closed: bool = False) -> None:
        self.calls: list[tuple] = []
        self.closed = closed

    def is_closed(self) -> bool:
        return self.closed

    def call_soon_threadsafe(self, callback, *args):
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append((callback, args))


def test_one_hand_off_per_loop_per_flush_in_posting_order():
    outbox, first, second = Outbox(), RecordingLoop(), RecordingLoop()
    queues = [asyncio.Queue() for _ in range(3)]
    for i, events in enumerate(queues):
        outbox.post(first, (events, f"token {i}", lambda: None))
        outbox.post(first, (events, f"finish {i}", lambda: None))
    outbox.post(second, (queues[0], "other", lambda: None))
    outbox.flush()
    assert len(first.calls) == len(second.calls) == 1
    callback, args = first.calls[0]
    callback(*args)
    assert [q.get_nowait() for q in queues for _ in range(2)] == [
        "token 0", "finish 0", "token 1", "finish 1", "token 2", "finish 2"
    ]  # fmt: skip
    outbox.flush()
    assert len(first.calls) == 1  # nothing new: no hand-off


def test_a_closed_loop_cancels_its_requests():
    outbox, gone = Outbox(), RecordingLoop(closed=True)
    cancelled = []
    outbox.post(gone, (asyncio.Queue(), "token", lambda: cancelled.append(1)))
    outbox.flush()
    assert cancelled == [1]


class FlakyLoop(RecordingLoop):
    """Fails its first `failures` hand-offs, as a bug or a resource error might."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def call_soon_threadsafe(self, callback, *args):
        if self.failures:
            self.failures -= 1
            raise OSError("injected failure")
        super().call_soon_threadsafe(callback, *args)


def test_a_failed_hand_off_is_tried_again_in_order(caplog):
    outbox, flaky, events = Outbox(), FlakyLoop(1), asyncio.Queue()
    outbox.post(flaky, (events, "first", lambda: None))
    outbox.flush()
    assert outbox.pending and not flaky.calls
    outbox.post(flaky, (events, "second", lambda: None))
    outbox.flush()
    callback, args = flaky.calls[0]
    callback(*args)
    assert [events.get_nowait() for _ in range(2)] == ["first", "second"]
    assert not outbox.pending
    assert any(record.exc_info for record in caplog.records)


def test_a_loop_that_keeps_failing_is_given_up():
    outbox, broken = Outbox(), FlakyLoop(HAND_OFF_TRIES)
    cancelled = []
    outbox.post(broken, (asyncio.Queue(), "token", lambda: cancelled.append(1)))
    for _ in range(HAND_OFF_TRIES):
        outbox.flush()
    assert cancelled == [1] and not outbox.pending and not broken.calls

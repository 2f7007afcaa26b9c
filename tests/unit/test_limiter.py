"""The rate limiter: exact counts over a sliding minute, honest retry-after, settling."""

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inkstand.config import Settings
from inkstand.errors import RateLimitError, RequestOverLimitError
from inkstand.gateway import Gateway
from inkstand.gateway.limiter import RateLimiter
from inkstand.store import KeyRecord, UsageRecord


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_admits_exactly_the_limit_then_refuses_with_retry_after():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(3):
        clock.now += 10
        limiter.admit("k", 3)
    with pytest.raises(RateLimitError) as refused:
        limiter.admit("k", 3)
    # the first request (at +10) leaves the window 60 s after it was made: 40 s from now
    assert refused.value.retry_after == 40
    assert refused.value.status == 429
    clock.now += 39
    with pytest.raises(RateLimitError):
        limiter.admit("k", 3)
    clock.now += 1
    limiter.admit("k", 3)


def test_keys_are_limited_separately_and_zero_means_no_limit():
    limiter = RateLimiter(FakeClock())
    limiter.admit("a", 1)
    limiter.admit("b", 1)
    for _ in range(100):
        assert limiter.admit("a", 0) is None


def test_retry_after_is_between_one_and_sixty_seconds():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.admit("k", 1)
    for step in (0, 0.2, 59.5):
        clock.now = 1000.0 + step
        with pytest.raises(RateLimitError) as refused:
            limiter.admit("k", 1)
        assert refused.value.retry_after is not None
        assert 1 <= refused.value.retry_after <= 60


def test_token_reservation_is_settled_to_actual_use():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    hold = limiter.reserve("k", 100, 80)  # prompt + max_tokens
    with pytest.raises(RateLimitError):
        limiter.reserve("k", 100, 30)
    limiter.settle(hold, 50)  # the answer ended early
    limiter.reserve("k", 100, 30)
    with pytest.raises(RateLimitError):
        limiter.reserve("k", 100, 30)


def test_released_admission_does_not_count():
    limiter = RateLimiter(FakeClock())
    hold = limiter.admit("k", 1)
    limiter.release(hold)
    limiter.admit("k", 1)


def test_a_request_larger_than_the_whole_limit_is_told_not_to_retry():
    limiter = RateLimiter(FakeClock())
    with pytest.raises(RequestOverLimitError) as refused:
        limiter.reserve("k", 100, 101)
    assert refused.value.should_retry is False
    assert refused.value.retry_after is None
    assert refused.value.extras == {"limit": "tpm", "value": 100, "tokens": 101}


def test_settling_after_the_window_moved_on_changes_nothing():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    hold = limiter.reserve("k", 100, 100)
    clock.now += 61
    limiter.reserve("k", 100, 100)  # the old reservation left the window
    limiter.settle(hold, 5)
    with pytest.raises(RateLimitError):
        limiter.reserve("k", 100, 1)


def test_exact_under_concurrency():
    limiter = RateLimiter()
    passed, refused = [], []
    barrier = threading.Barrier(50)

    def attempt() -> None:
        barrier.wait()
        try:
            limiter.admit("k", 10)
            passed.append(1)
        except RateLimitError:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(passed), len(refused)) == (10, 40)


class NoUsageLog:
    def record(self, record):
        return None


@pytest.mark.parametrize(
    ("status", "finish", "charged"),
    [(499, None, 100), (200, None, 100), (200, "stop", 10), (503, None, 10), (400, None, 10)],
    ids=["client-left", "stream-cut", "finished", "refused", "bad-request"],
)
def test_settling_charges_what_was_used_unless_the_answer_was_cut_short(status, finish, charged):
    # a request that reserved 100 tokens and whose record says 10 prompt, 0 completion
    gateway = Gateway(Settings(data_dir="unused", models=()), None, NoUsageLog())  # type: ignore[arg-type]
    admission = gateway.admit(KeyRecord("k", "k", tpm=100))
    admission.reserve(100)
    gateway.finish(admission, UsageRecord("t", "k", "m", "/v1/chat", 10, 0, 0, 1.0, status, finish))
    assert admission.token_hold is not None
    assert admission.token_hold.window.total == charged


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 50),
    events=st.lists(
        st.tuples(st.floats(0, 30, allow_nan=False), st.integers(1, 20), st.integers(0, 25)),
        max_size=60,
    ),
)
def test_decisions_match_a_plain_sliding_window(limit, events):
    """Each decision equals a brute-force recount of the last 60 s, settling included."""
    clock = FakeClock()
    limiter = RateLimiter(clock)
    spent: list[list[float]] = []  # [time, amount] of every admitted reservation
    for gap, amount, used in events:
        clock.now += gap
        live = [entry for entry in spent if entry[0] > clock.now - 60]
        fits = sum(entry[1] for entry in live) + amount <= limit
        if amount > limit:
            with pytest.raises(RequestOverLimitError):
                limiter.reserve("k", limit, amount)
            continue
        try:
            hold = limiter.reserve("k", limit, amount)
        except RateLimitError as refused:
            assert not fits
            # waiting `retry_after` seconds is enough for this amount to fit
            later = clock.now + refused.retry_after + 1e-6  # (float noise at the boundary)
            assert sum(e[1] for e in spent if e[0] > later - 60) + amount <= limit
            # and not a whole second more than needed (Retry-After is whole seconds, >= 1)
            sooner = later - 1 - 2e-6
            if refused.retry_after > 1:
                assert sum(e[1] for e in spent if e[0] > sooner - 60) + amount > limit
            assert 1 <= refused.retry_after <= 60
            continue
        assert fits
        entry = [clock.now, min(used, amount)]
        spent.append(entry)
        limiter.settle(hold, entry[1])

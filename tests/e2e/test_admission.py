"""Admission: a request for several choices blocks no smaller one, and is never starved.

A four-slot server. `occupying` holds one slot with an endless greedy essay, so a request
for `n = 4` choices cannot start; `/metrics` says when it waits, so nothing here depends on
how fast the model is. Its patience (a third of `--queue-timeout`) bounds how long smaller
requests may pass it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .support import (
    KEY,
    RUNNING,
    WAITING,
    greedy,
    occupying,
    post,
    running_server,
    scrape,
    wait_for_metric,
    wait_until_idle,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

QUEUE_TIMEOUT = 30  # seconds; patience 10 s
FOUR = greedy(max_tokens=4, n=4, temperature=0.7)


@pytest.fixture(scope="module")
def four_slots(tmp_path_factory):
    flags = ("--slots", "4", "--queue-timeout", str(QUEUE_TIMEOUT), "--ctx-size", "4096",
             "--threads", "1")  # fmt: skip
    with running_server(tmp_path_factory.mktemp("four"), *flags, key=KEY) as server:
        yield server


def test_a_small_request_goes_in_while_a_request_for_four_choices_waits(four_slots):
    wait_until_idle(four_slots)
    with ThreadPoolExecutor(1) as pool:
        with occupying(four_slots):
            big = pool.submit(post, four_slots, FOUR)
            wait_for_metric(four_slots, WAITING, 1)
            started = time.monotonic()
            small = post(four_slots, greedy(max_tokens=2))
            assert small.status_code == 200, small.text
            assert time.monotonic() - started < QUEUE_TIMEOUT / 3  # it did not wait its turn
            assert not big.done() and scrape(four_slots)[WAITING] == 1
        served = big.result(timeout=60)  # the essay's client left: four slots are free
    assert served.status_code == 200, served.text
    assert sorted(c["index"] for c in served.json()["choices"]) == [0, 1, 2, 3]


def test_a_request_for_four_choices_is_served_while_small_ones_keep_coming(four_slots):
    """Three clients keep three slots busy with short answers, one after another; the
    request for four gets them all once it has waited its patience, long before its
    queue timeout, and every short answer is served too."""
    wait_until_idle(four_slots)
    stop = threading.Event()

    def keep_busy() -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append(post(four_slots, greedy(max_tokens=24)).status_code)
        return statuses

    with ThreadPoolExecutor(3) as pool:
        clients = [pool.submit(keep_busy) for _ in range(3)]
        wait_for_metric(four_slots, RUNNING, 3, timeout=30)
        started = time.monotonic()
        served = post(four_slots, FOUR, timeout=QUEUE_TIMEOUT + 30)
        waited = time.monotonic() - started
        stop.set()
        statuses = [status for client in clients for status in client.result(timeout=60)]
    assert served.status_code == 200, served.text
    assert len(served.json()["choices"]) == 4
    assert waited < QUEUE_TIMEOUT * 2 / 3, waited  # patience, then the running ones' ends
    assert set(statuses) == {200} and len(statuses) > 3

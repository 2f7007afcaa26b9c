"""Replica choice: affinity keeps a conversation on one replica, load overrides it, failures
take a replica out and the prober's answer puts it back."""

import asyncio

import pytest

from inkstand.errors import OverloadedError
from inkstand.upstream.replicas import AFFINITY_SLACK, FAILURES_TO_EJECT, ReplicaSet, choose

URLS = ("http://a/v1", "http://b/v1", "http://c/v1")


def replica_set(max_in_flight: int = 8, queue_timeout: float = 0.2) -> ReplicaSet:
    return ReplicaSet.of(URLS, max_in_flight, queue_timeout)


def test_one_conversation_goes_to_one_replica_and_many_spread_over_all():
    replicas = replica_set().replicas
    picks = {choose(replicas, b"scope\0system\0hello", 8).url for _ in range(10)}
    assert len(picks) == 1
    spread = {choose(replicas, f"conversation {i}".encode(), 8).url for i in range(60)}
    assert spread == set(URLS)


def test_a_much_busier_affine_replica_gives_way_to_the_least_loaded():
    replicas = replica_set().replicas
    affine = choose(replicas, b"k", 8)
    affine.in_flight = AFFINITY_SLACK
    assert choose(replicas, b"k", 8) is affine  # busier, but not by more than the slack
    affine.in_flight = AFFINITY_SLACK + 1
    assert choose(replicas, b"k", 8) is not affine


def test_a_replica_down_moves_only_its_own_conversations():
    replicas = replica_set().replicas
    keys = [f"c{i}".encode() for i in range(60)]
    before = {k: choose(replicas, k, 8) for k in keys}
    gone = replicas[0]
    after = {k: choose([r for r in replicas if r is not gone], k, 8) for k in keys}
    assert all(after[k] is before[k] for k in keys if before[k] is not gone)


async def test_failures_take_a_replica_out_and_restoring_puts_it_back():
    pool = replica_set()
    first = pool.replicas[0]
    for _ in range(FAILURES_TO_EJECT - 1):
        assert not pool.failed(first)
    assert pool.failed(first) and first not in pool.live
    assert pool.restored(first) and first in pool.live


async def test_requests_wait_for_a_free_slot_then_get_503():
    pool = replica_set(max_in_flight=1, queue_timeout=0.3)
    held = [await pool.acquire(b"k", set()) for _ in URLS]
    waiting = asyncio.create_task(pool.acquire(b"k", set()))
    await asyncio.sleep(0.05)
    await pool.release(held[1])
    assert await waiting is held[1]
    with pytest.raises(OverloadedError):
        await pool.acquire(b"k", set())


async def test_no_live_replica_is_a_503_at_once():
    pool = replica_set()
    for replica in pool.replicas:
        replica.up = False
    with pytest.raises(OverloadedError) as caught:
        await pool.acquire(b"k", set())
    assert caught.value.retry_after

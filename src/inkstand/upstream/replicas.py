"""Which replica of an upstream engine takes a request: least-loaded, with prefix affinity.

A conversation's turns go to the replica its affinity key hashes to (rendezvous hashing over
the live replicas, so a replica going down moves only its own conversations), where the
engine still holds its prefix in KV cache, unless that replica has `AFFINITY_SLACK` more
requests in flight than the least-loaded one; then the least-loaded takes it.

Each replica takes at most `max_in_flight` requests; more wait here, in order, up to
`queue_timeout` seconds, then get 503. `FAILURES_TO_EJECT` consecutive failures (refused
connections, timeouts, 5xx) take a replica out, and so does the prober, which asks a replica
at its first failure whether it still answers; the prober puts it back when it answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from inkstand.errors import OverloadedError

AFFINITY_SLACK = 4
FAILURES_TO_EJECT = 2


@dataclass(eq=False)
class Replica:
    url: str
    number: int  # its place in the config (clients see this, never the URL)
    in_flight: int = 0
    failures: int = 0
    up: bool = True  # optimistic until a failure says otherwise
    down_since: float | None = None
    served: int = 0
    # How its engine takes a forced tool choice: "native" or "json_schema"; None until a
    # probe (or the config) says, and again after it was out.
    tools_mode: str | None = None
    # How its engine counts a prompt's tokens: "llama" (`/apply-template` + `/tokenize`),
    # "vllm" (`/tokenize` with messages), "none"; None until first tried.
    tokenizer: str | None = None
    engine: str = ""  # who serves it, from `/models` (`owned_by`: "vllm", "llamacpp" ...)

    def state(self) -> dict:
        return {"replica": self.number, "up": self.up, "in_flight": self.in_flight}


@dataclass
class Fleet:
    """Every replica by URL, shared by the model ids one engine serves (its state and its
    requests in flight are the engine's), and the one wake-up for requests waiting on any."""

    by_url: dict[str, Replica] = field(default_factory=dict)
    _freed: asyncio.Condition | None = None

    def freed(self) -> asyncio.Condition:
        if self._freed is None:
            self._freed = asyncio.Condition()
        return self._freed


@dataclass
class ReplicaSet:
    replicas: list[Replica]
    max_in_flight: int
    queue_timeout: float
    fleet: Fleet = field(default_factory=Fleet)

    @classmethod
    def of(
        cls,
        urls: tuple[str, ...],
        max_in_flight: int,
        queue_timeout: float,
        fleet: Fleet | None = None,
    ) -> ReplicaSet:
        """Replicas for `urls`, shared through `fleet` with other model ids on them."""
        fleet = fleet or Fleet()
        replicas = [fleet.by_url.setdefault(url, Replica(url, i)) for i, url in enumerate(urls)]
        return cls(replicas, max_in_flight, queue_timeout, fleet)

    @property
    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.up]

    async def acquire(self, affinity: bytes, tried: set[Replica]) -> Replica:
        """A replica for the request (its in-flight count taken); 503 when none is up or
        none frees up within `queue_timeout`."""
        deadline = time.monotonic() + self.queue_timeout
        freed = self.fleet.freed()
        async with freed:
            while True:
                candidates = [r for r in self.live if r not in tried]
                if not candidates:
                    raise OverloadedError(
                        "No replica of this model's engine is reachable; retry shortly.",
                        retry_after=2.0,
                    )
                replica = choose(candidates, affinity, self.max_in_flight)
                if replica is not None:
                    replica.in_flight += 1
                    return replica
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OverloadedError(
                        "Every replica of this model's engine is at its `max_in_flight`; "
                        "retry shortly.",
                        retry_after=1.0,
                    )
                try:
                    await asyncio.wait_for(freed.wait(), left)
                except TimeoutError:
                    continue

    async def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        freed = self.fleet.freed()
        async with freed:
            freed.notify_all()  # waiters for other replicas or model ids look again

    def succeeded(self, replica: Replica) -> None:
        replica.failures = 0
        replica.served += 1

    def failed(self, replica: Replica) -> bool:
        """Count a failure; True when it took the replica out."""
        replica.failures += 1
        if replica.up and replica.failures >= FAILURES_TO_EJECT:
            replica.up = False
            replica.down_since = time.monotonic()
            return True
        return False

    def taken_out(self, replica: Replica) -> None:
        """The prober could not reach it."""
        replica.up = False
        replica.down_since = time.monotonic()

    def restored(self, replica: Replica) -> bool:
        """The prober reached it; True when it was out."""
        was_down = not replica.up
        replica.up, replica.failures, replica.down_since = True, 0, None
        if was_down:
            replica.tools_mode = replica.tokenizer = None  # it may be another engine now
        return was_down


def choose(candidates: list[Replica], affinity: bytes, max_in_flight: int) -> Replica | None:
    """The affine replica unless it is much busier than the least-loaded; None when all are
    full."""
    open_ = [r for r in candidates if r.in_flight < max_in_flight]
    if not open_:
        return None
    preferred = max(open_, key=lambda r: _weight(affinity, r.url))
    least = min(open_, key=lambda r: (r.in_flight, r.number))
    if preferred.in_flight - least.in_flight > AFFINITY_SLACK:
        return least
    return preferred


def _weight(affinity: bytes, url: str) -> bytes:
    return hashlib.blake2b(affinity + b"\0" + url.encode(), digest_size=8).digest()

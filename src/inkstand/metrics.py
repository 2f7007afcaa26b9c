"""Prometheus metrics, named in the style of vLLM's and llama.cpp's (`inkstand:...`).

One `Metrics` per app with its own registry (no process globals); it is the engine's
observer, so the engine thread reports tokens and timings as they happen, and the gauges of
running and waiting requests are read from the engines when scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from inkstand.engine import Engine

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
QUEUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._engines: Callable[[], Iterable[Engine]] = tuple
        r = self.registry
        self.running = Gauge(
            "inkstand:num_requests_running", "Requests generating now.", registry=r
        )
        self.waiting = Gauge(
            "inkstand:num_requests_waiting", "Requests waiting for a slot.", registry=r
        )
        self.running.set_function(lambda: sum(e.load()[0] for e in self._engines()))
        self.waiting.set_function(lambda: sum(e.load()[1] for e in self._engines()))
        self.prompt_tokens = Counter(
            "inkstand:prompt_tokens", "Prompt tokens admitted.", registry=r
        )
        self.cached_tokens = Counter(
            "inkstand:prompt_tokens_cached",
            "Prompt tokens reused from the prefix cache.",
            registry=r,
        )
        self.generation_tokens = Counter(
            "inkstand:generation_tokens", "Tokens generated.", registry=r
        )
        self.ttft = Histogram(
            "inkstand:time_to_first_token_seconds",
            "From arrival to the first generated token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "inkstand:inter_token_latency_seconds",
            "Between consecutive tokens of one sequence.",
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "inkstand:request_queue_time_seconds",
            "From arrival to admission into a slot.",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "inkstand:queue_rejections",
            "Requests refused with 503 (queue full or waited too long).",
            registry=r,
        )
        self.cancellations = Counter(
            "inkstand:cancellations", "Requests cancelled because the client went away.", registry=r
        )
        self.ahead_tokens = Counter(
            "inkstand:prompt_tokens_decoded_ahead",
            "Turn-tail tokens decoded into idle slots for a conversation's next turn.",
            registry=r,
        )
        self.spec_drafts = Counter(
            "inkstand:spec_decode_num_drafts", "Drafts verified (speculative decoding).", registry=r
        )
        self.spec_drafted = Counter(
            "inkstand:spec_decode_num_draft_tokens",
            "Drafted tokens verified (speculative decoding).",
            registry=r,
        )
        self.spec_accepted = Counter(
            "inkstand:spec_decode_num_accepted_tokens",
            "Drafted tokens kept: each is also counted in generation_tokens.",
            registry=r,
        )
        self.spec_rate = Gauge(
            "inkstand:spec_decode_acceptance_rate",
            "Accepted over drafted tokens since the start (0 before any draft).",
            registry=r,
        )
        self._spec_totals = (0, 0)  # (drafted, accepted) over every engine
        self._spec_lock = threading.Lock()
        self.spec_rate.set_function(self._acceptance_rate)
        self.unauthenticated = Counter(
            "inkstand:unauthenticated_requests",
            "API requests refused with 401 (counted here, never stored).",
            registry=r,
        )
        self.kv_bytes = Gauge(
            "inkstand:kv_cache_bytes",
            "Size of an engine's KV cache (role: model, or draft for its draft model).",
            ["engine", "role"],
            registry=r,
        )
        self.store_bytes = Gauge(
            "inkstand:store_bytes", "Size of the SQLite store: database and WAL files.", registry=r
        )

    def watch(self, engines: Callable[[], Iterable[Engine]]) -> None:
        self._engines = engines

    def watch_store(self, size: Callable[[], int]) -> None:
        """Read the store's size (bytes) at every scrape."""
        self.store_bytes.set_function(size)

    def _acceptance_rate(self) -> float:
        drafted, accepted = self._spec_totals
        return accepted / drafted if drafted else 0.0

    def render(self) -> bytes:
        for engine in self._engines():
            for role, size in engine.kv_bytes().items():
                self.kv_bytes.labels(engine.name, role).set(size)
        return generate_latest(self.registry)

    # -- EngineObserver ------------------------------------------------------------------
    def admitted(self, waited: float, prompt_tokens: int, cached_tokens: int) -> None:
        self.queue_time.observe(waited)
        self.prompt_tokens.inc(prompt_tokens)
        self.cached_tokens.inc(cached_tokens)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def token_gap(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def generated(self, tokens: int) -> None:
        self.generation_tokens.inc(tokens)

    def cancelled(self) -> None:
        self.cancellations.inc()

    def rejected(self) -> None:
        self.rejections.inc()

    def decoded_ahead(self, tokens: int) -> None:
        self.ahead_tokens.inc(tokens)

    def speculated(self, drafted: int, accepted: int) -> None:
        self.spec_drafts.inc()
        self.spec_drafted.inc(drafted)
        self.spec_accepted.inc(accepted)
        with self._spec_lock:
            total_drafted, total_accepted = self._spec_totals
            self._spec_totals = (total_drafted + drafted, total_accepted + accepted)

"""The engine thread's loop: continuous batching over sequence slots, with prefix reuse.

Threading rule: everything here runs on the engine thread, except `Job.cancel`, which is
safe from any thread. Events reach the requests' event loops through the `Outbox`, flushed
once at the end of every pass of the loop.

One step: drop cancelled requests, expire requests that waited too long, admit waiting
requests into free slots (reusing each slot's cached prefix), then build one batch holding
the next token of every generating sequence plus prompt chunks of newly admitted ones, up to
a per-step token budget, and decode it once. A request with `n` choices prefills one slot and
forks its KV into `n - 1` more when the prompt is done.

Decoding ahead: when an answer ends, the scheduler notes its request's `turn_tail` (what a
follow-up turn's prompt puts right after the answer) and, once nothing else is running or
waiting, decodes it into the slot's cache, `AHEAD_TOKENS` at a time, so the next turn of the
conversation finds it cached. Any request admitted in the meantime goes first.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field, replace

from inkstand.backends.base import Backend, BatchEntry, KVFullError
from inkstand.engine.observer import EngineObserver, NullObserver
from inkstand.engine.outbox import Outbox
from inkstand.engine.prefix import SlotCache
from inkstand.engine.stops import TextAssembler
from inkstand.engine.types import (
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    TokenEvent,
    TokenInfo,
)
from inkstand.errors import EngineError, InkstandError, OverloadedError

log = logging.getLogger("inkstand.engine")

AHEAD_TOKENS = 16  # most tokens decoded ahead per idle pass (what a new arrival may wait for)

STOP = object()  # put on the inbox to end the thread
DRAIN = object()  # put on the inbox to refuse everything in flight (the server is stopping)


@dataclass(frozen=True)
class SchedulerConfig:
    queue_timeout: float = 30.0  # seconds a request may wait for a slot before a 503
    step_tokens: int = 128  # prompt tokens per step while other sequences are generating


class Job:
    """A request in flight; owned by the engine thread, cancelled from anywhere."""

    def __init__(
        self, request: GenerationRequest, loop: asyncio.AbstractEventLoop, outbox: Outbox
    ) -> None:
        self.request = request
        self.loop = loop
        self.outbox = outbox
        self.events: asyncio.Queue[Event | InkstandError] = asyncio.Queue()
        self.cancelled = False
        self.enqueued_at = time.monotonic()
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, event: Event | InkstandError) -> None:
        """Engine thread: queue `event` for the caller; it leaves with the step's flush."""
        self.outbox.post(self.loop, (self.events, event, self.cancel))


@dataclass(eq=False)
class Sequence:
    job: Job
    index: int
    slot: int
    fed: int  # prompt tokens in the KV, cached ones included
    cached: int
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    last_token_at: float = 0.0
    forks: list[Sequence] = field(default_factory=list)  # choices waiting for this prefill
    awaiting_fork: bool = False
    assembler: TextAssembler = field(default_factory=TextAssembler)

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.job.request.prompt_tokens

    @property
    def position(self) -> int:
        """Where the next token to decode goes."""
        return self.fed + self.generated - (1 if self.next_token is not None else 0)


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        inbox: queue.SimpleQueue,
        config: SchedulerConfig = SchedulerConfig(),
        observer: EngineObserver | None = None,
    ) -> None:
        self.backend = backend
        self.inbox = inbox
        self.config = config
        self.observer: EngineObserver = observer or NullObserver()
        self.waiting: deque[Job] = deque()
        self.active: dict[int, Sequence] = {}
        self.free: set[int] = set(range(backend.n_seq_max))
        self.cache = SlotCache(backend.n_seq_max)
        self.ahead: dict[int, tuple[int, ...]] = {}  # free slot -> tokens to decode ahead
        self.outbox = Outbox()
        self.n_ctx = backend.info.n_ctx

    @property
    def running_jobs(self) -> int:
        return len({id(s.job) for s in list(self.active.values())})

    def run(self) -> None:
        while self._collect(block=not (self.active or self.waiting or self.ahead)):
            self._drop_cancelled()
            self._expire_waiting(time.monotonic())
            self._admit()
            if self.active:
                self._step()
            elif self.ahead and not self.waiting:
                self._decode_ahead()
            self.outbox.flush()
        self._shutdown()
        self.outbox.flush()

    # -- admission -----------------------------------------------------------------------
    def _collect(self, *, block: bool) -> bool:
        """Move new jobs from the inbox to the waiting line; False once told to stop."""
        try:
            item = self.inbox.get(block=block)
            while True:
                if item is STOP:
                    return False
                if item is DRAIN:
                    self._drain()
                else:
                    self.waiting.append(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return True

    def _expire_waiting(self, now: float) -> None:
        limit = self.config.queue_timeout
        if not self.waiting or now - self.waiting[0].enqueued_at <= limit:
            return
        kept: deque[Job] = deque()
        for job in self.waiting:
            if now - job.enqueued_at > limit and not job.cancelled:
                self.observer.rejected()
                job.emit(
                    OverloadedError(
                        f"The request waited over {limit:g} s for a free slot; retry later.",
                        retry_after=2,
                    )
                )
            else:
                kept.append(job)
        self.waiting = kept

    def _admit(self) -> None:
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                self.observer.cancelled()
                continue
            if len(self.free) < job.request.n:
                return  # first come, first served: nobody overtakes a waiting request
            self.waiting.popleft()
            try:
                self._start(job)
            except EngineError as exc:  # e.g. a sampler the backend cannot build
                log.error("could not start a request: %s", exc)
                job.emit(exc)
                self._release_job(job, forget=True)

    def _start(self, job: Job) -> None:
        request = job.request
        slot, shared = self.cache.best(self.free, request.prompt_tokens)
        reuse = min(shared, len(request.prompt_tokens) - 1)
        primary = self._occupy(job, 0, slot, reuse)
        self.backend.begin(slot, request.sampling, reuse)
        for index in range(1, request.n):
            slot, _ = self.cache.best(self.free, ())  # next to its siblings: one run
            sibling = self._occupy(job, index, slot, reuse)
            sibling.fed = len(request.prompt_tokens)
            sibling.awaiting_fork = True
            primary.forks.append(sibling)
        self.observer.admitted(
            time.monotonic() - job.enqueued_at, len(request.prompt_tokens), reuse
        )

    def _occupy(self, job: Job, index: int, slot: int, reuse: int) -> Sequence:
        self.free.discard(slot)
        self.ahead.pop(slot, None)
        self.cache.use(slot, reuse)
        seq = Sequence(job, index, slot, fed=reuse, cached=reuse)
        seq.assembler = TextAssembler(job.request.stop)
        self.active[slot] = seq
        return seq

    def _drop_cancelled(self) -> None:
        cancelled = {id(s.job): s.job for s in self.active.values() if s.job.cancelled}
        for job in cancelled.values():
            self.observer.cancelled()
            self._release_job(job)

    def _release(self, seq: Sequence) -> None:
        self.observer.generated(seq.generated)
        self.backend.end(seq.slot)
        del self.active[seq.slot]
        self.free.add(seq.slot)

    def _release_job(self, job: Job, *, forget: bool = False) -> None:
        for seq in [s for s in self.active.values() if s.job is job]:
            if forget:
                self.cache.forget(seq.slot)
            self._release(seq)

    # -- one step ------------------------------------------------------------------------
    def _step(self) -> None:
        entries, owners = self._build_batch()
        if not entries:
            return
        try:
            logits_at = self.backend.decode(entries)
        except KVFullError:
            self._shed_newest()
            return
        except EngineError as exc:
            self._fail({id(s.job): s.job for s in owners}.values(), exc)
            return
        self._commit(entries, owners)
        wanting = [seq for seq, entry in zip(owners, entries, strict=True) if entry.want_logits]
        now = time.monotonic()
        for seq, index in zip(wanting, logits_at, strict=True):
            try:
                for sibling in seq.forks:
                    if self.active.get(seq.slot) is not seq:
                        break  # a sibling's failure ended the whole request
                    self._fork(seq, sibling, index, now)
            except EngineError as exc:
                log.error("could not fork a request: %s", exc)
                seq.job.emit(exc)
                self._release_job(seq.job, forget=True)
                continue
            seq.forks = []
            self._take(seq, index, now)

    def _build_batch(self) -> tuple[list[BatchEntry], list[Sequence]]:
        """Every generating sequence's next token, then prompt chunks up to the step budget.

        The batch lists its sequences in slot order: llama.cpp groups consecutive ids of
        one KV stream each into one ubatch only when they come in ascending order.
        """
        entries: list[tuple[BatchEntry, Sequence]] = []
        for seq in self.active.values():
            if seq.next_token is not None:
                entries.append((BatchEntry(seq.slot, (seq.next_token,), seq.position, True), seq))
        room = self.backend.n_batch - len(entries)
        budget = min(room, self.config.step_tokens) if entries else room
        for seq in self.active.values():
            if seq.next_token is None and not seq.awaiting_fork and budget > 0:
                chunk = seq.prompt[seq.fed : seq.fed + budget]
                done = seq.fed + len(chunk) == len(seq.prompt)
                entries.append((BatchEntry(seq.slot, chunk, seq.fed, done), seq))
                budget -= len(chunk)
        entries.sort(key=lambda pair: pair[0].seq_id)
        return [entry for entry, _ in entries], [seq for _, seq in entries]

    def _commit(self, entries: list[BatchEntry], owners: list[Sequence]) -> None:
        """The batch is in the KV now: advance prompt positions and the prefix cache."""
        for seq, entry in zip(owners, entries, strict=True):
            if seq.next_token is None:
                seq.fed += len(entry.tokens)
            self.cache.extend(seq.slot, entry.tokens)

    def _fork(self, primary: Sequence, sibling: Sequence, logits_index: int, now: float) -> None:
        sampling = primary.job.request.sampling
        if sampling.seed is not None:  # one seed for all choices would make them all the same
            sampling = replace(sampling, seed=sampling.seed + sibling.index)
        self.backend.fork(primary.slot, sibling.slot, sampling)
        self.cache.copy(primary.slot, sibling.slot)
        sibling.awaiting_fork = False
        self._take(sibling, logits_index, now)

    def _take(self, seq: Sequence, logits_index: int, now: float) -> None:
        """Sample the sequence's next token and emit what it releases."""
        if self.active.get(seq.slot) is not seq:
            return  # its request failed earlier in this step
        try:
            token = self.backend.sample(seq.slot, logits_index)
        except EngineError as exc:  # e.g. a grammar with no way on: this request only
            log.error("sampling failed: %s", exc)
            seq.job.emit(EngineError("The model failed while generating; please retry."))
            self._release_job(seq.job, forget=True)
            return
        seq.generated += 1
        seq.next_token = token
        self._note_timing(seq, now)
        info = self._token_info(seq, token, logits_index)
        if self.backend.is_eog(token):
            if info is not None:
                seq.job.emit(TokenEvent("", info, seq.index))
            self._finish(seq, "stop", _ahead(seq, token, eog=True))
            return
        text = seq.assembler.feed(self.backend.token_bytes(token))
        if text or info is not None:
            seq.job.emit(TokenEvent(text, info, seq.index))
        if seq.assembler.stopped:
            self._finish(seq, "stop")  # the answer's text ends before its last tokens
        elif seq.generated >= seq.job.request.max_tokens or seq.position >= self.n_ctx:
            self._finish(seq, "length", _ahead(seq, token, eog=False))

    def _note_timing(self, seq: Sequence, now: float) -> None:
        if seq.generated == 1:
            if seq.job.first_token_at is None:
                seq.job.first_token_at = now
                self.observer.first_token(now - seq.job.enqueued_at)
        else:
            self.observer.token_gap(now - seq.last_token_at)
        seq.last_token_at = now

    def _token_info(self, seq: Sequence, token: int, logits_index: int) -> TokenInfo | None:
        if not seq.job.request.sampling.logprobs:
            return None
        raw = b"" if self.backend.is_eog(token) else self.backend.token_bytes(token)
        logprob = self.backend.logprob(logits_index, token)
        return TokenInfo(token, raw.decode("utf-8", errors="replace"), raw, logprob)

    def _finish(self, seq: Sequence, reason: FinishReason, ahead: tuple[int, ...] = ()) -> None:
        """End the choice; `ahead` is what its slot's KV should get next, decoded when idle."""
        rest = seq.assembler.flush()
        if rest:
            seq.job.emit(TokenEvent(rest, None, seq.index))
        self._release(seq)  # before the Finish, so a follow-up request finds the slot free
        seq.job.emit(Finish(reason, len(seq.prompt), seq.generated, seq.cached, seq.index))
        held = len(self.cache.tokens[seq.slot])
        if ahead and seq.job.request.n == 1 and held + len(ahead) <= self.n_ctx:
            self.ahead[seq.slot] = ahead

    def _decode_ahead(self) -> None:
        """Idle: put finished answers' turn tails into their slots' KV, newest first."""
        chosen: list[int] = []
        size = 0
        for slot in reversed(self.ahead):  # the newest answer is the likeliest followed up
            if chosen and size + len(self.ahead[slot]) > AHEAD_TOKENS:
                break
            chosen.append(slot)
            size += len(self.ahead[slot])
        entries = [
            BatchEntry(slot, self.ahead.pop(slot), len(self.cache.tokens[slot]), False)
            for slot in sorted(chosen)
        ]
        try:
            self.backend.decode(entries)
        except EngineError as exc:  # nobody is waiting for these: forget them and go on
            log.warning("could not decode ahead: %s", exc)
            for entry in entries:
                self.cache.forget(entry.seq_id)
            return
        for entry in entries:
            self.cache.extend(entry.seq_id, entry.tokens)
        self.observer.decoded_ahead(size)

    # -- failures ------------------------------------------------------------------------
    def _fail(self, jobs, exc: EngineError) -> None:
        jobs = list(jobs)
        log.error("decode failed for %d request(s): %s", len(jobs), exc)
        for job in jobs:
            job.emit(EngineError("The model failed while generating; please retry."))
            self._release_job(job, forget=True)

    def _shed_newest(self) -> None:
        """No KV room for this step: refuse the most recently admitted request."""
        newest = max(self.active.values(), key=lambda s: s.job.enqueued_at).job
        log.warning("KV cache full: refusing the newest request")
        self.observer.rejected()
        newest.emit(OverloadedError("The server is out of KV cache; retry shortly.", retry_after=2))
        self._release_job(newest, forget=True)

    def _drain(self) -> None:
        jobs = {id(s.job): s.job for s in self.active.values()}
        jobs.update((id(job), job) for job in self.waiting)
        self.waiting.clear()
        for job in jobs.values():
            job.emit(OverloadedError("The server is shutting down; retry shortly.", retry_after=5))
            self._release_job(job)

    def _shutdown(self) -> None:
        for seq in list(self.active.values()):
            seq.job.emit(EngineError("The server is shutting down."))
            self._release(seq)
        for job in self.waiting:
            job.emit(EngineError("The server is shutting down."))
        self.waiting.clear()


def _ahead(seq: Sequence, last: int, *, eog: bool) -> tuple[int, ...]:
    """What a finished answer's slot should get next: its request's turn tail.

    The last sampled token was never decoded, so it goes first, unless it ended the
    generation: then it must be the tail's own first token, or nothing is decoded ahead.
    """
    tail = seq.job.request.turn_tail
    if eog:
        return tail if tail[:1] == (last,) else ()
    return (last, *tail) if tail else ()

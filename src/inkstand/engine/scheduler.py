"""The engine thread's loop: continuous batching over sequence slots, with prefix reuse.

Threading rule: everything here runs on the engine thread, except `Job.cancel`, which is
safe from any thread. Events reach the requests' event loops through the `Outbox`, flushed
once at the end of every pass of the loop.

One step: drop cancelled requests, expire requests that waited too long, admit waiting
requests into free slots (reusing each slot's cached prefix), then build one batch holding
the next token of every generating sequence plus prompt chunks of newly admitted ones, up to
a per-step token budget, and decode it once. A request with `n` choices prefills one slot
and forks its KV into `n - 1` more when the prompt is done.

Decoding ahead: when an answer ends, the scheduler notes its request's `turn_tail` (what a
follow-up turn's prompt puts right after the answer) and, once nothing else is running or
waiting, decodes it into the slot's cache, `AHEAD_TOKENS` at a time, so the next turn of the
conversation finds it cached. Any request admitted in the meantime goes first.

Failures: nothing raised in a step ends the thread. Whatever raises, at whichever point, fails
the requests it touched with a 500 (`EngineError`), is logged with its traceback (a backend's
own `EngineError` with its message) and forgets those requests' slot caches, since their KV may
be half written; then the loop carries on. The requests it touched: the one being admitted,
sampled, forked or finished; every request in the batch for a failed decode or commit; every
running request when the batch cannot be built or a fault escapes the narrower guards. After
`MAX_FAILURES` failed steps in a row (no batch decoded between), or when the backend says it is
broken (`BackendBrokenError`), the engine gives up: its model reports not ready (`failure`),
and every request in flight or arriving gets a 503 at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from inkstand.backends.base import Backend, BackendBrokenError, BatchEntry, KVFullError
from inkstand.engine.admission import WaitLine
from inkstand.engine.drafter import MODEL_DRAFT, DraftModel
from inkstand.engine.observer import EngineObserver, NullObserver
from inkstand.engine.outbox import Outbox
from inkstand.engine.prefix import SlotCache
from inkstand.engine.speculation import (
    NO_MATCH,
    WIDE_BATCH,
    Acceptances,
    Candidate,
    Match,
    NgramIndex,
    Speculator,
    forced_length,
)
from inkstand.engine.stepcost import CALIBRATION, CALIBRATION_ROUNDS, attended, ubatches_of
from inkstand.engine.stops import TextAssembler
from inkstand.engine.types import (
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    TokenEvent,
    TokenInfo,
)
from inkstand.errors import EngineError, InkstandError, ModelFailedError, OverloadedError

log = logging.getLogger("inkstand.engine")

AHEAD_TOKENS = 16  # most tokens decoded ahead per idle pass (what a new arrival may wait for)
MAX_FAILURES = 3  # steps failed in a row (no batch decoded between) before the engine gives up
PROMPT_PATIENCE = 5.0  # seconds a prompt may be passed over by shorter ones (see _prompts_in_order)
RETRY_AFTER = 2  # seconds a request refused for want of a slot is told to wait

STOP = object()  # put on the inbox to end the thread
DRAIN = object()  # put on the inbox to refuse everything in flight (the server is stopping)


@dataclass(frozen=True)
class SchedulerConfig:
    queue_timeout: float = 30.0  # seconds a request may wait for a slot before a 503
    step_tokens: int = 512  # prompt tokens per step while other sequences are generating
    # Seconds a request needing more slots than are free waits while smaller ones overtake
    # it; after that nobody does until it fits. None: a third of `queue_timeout`.
    aging: float | None = None

    @property
    def patience(self) -> float:
        return self.queue_timeout / 3 if self.aging is None else self.aging


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

    @property
    def slots(self) -> int:
        """How many slots it takes: one per choice."""
        return self.request.n

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
    admitted_at: float = field(default_factory=time.monotonic)
    assembler: TextAssembler = field(default_factory=TextAssembler)
    # Speculation: the prompt and output looked up for drafts (built at the first token),
    # how often this sequence's drafts were kept, and the draft verified in this step.
    lookup: NgramIndex | None = None
    acceptance: Acceptances = field(default_factory=Acceptances)  # by source and match
    draft: tuple[int, ...] = ()
    match: Match = NO_MATCH  # where `draft` (or `guess`) was found; MODEL_DRAFT: drafter
    guess: int | None = None  # the first drafted token when the planner verified none

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
        speculator: Speculator | None = None,
        drafter: DraftModel | None = None,
    ) -> None:
        self.backend = backend
        self.drafter = drafter if speculator is not None else None
        self.inbox = inbox
        self.config = config
        self.observer: EngineObserver = observer or NullObserver()
        self.speculator = speculator
        self.waiting: WaitLine[Job] = WaitLine(config.patience)
        self.active: dict[int, Sequence] = {}
        self.free: set[int] = set(range(backend.n_seq_max))
        self.cache = SlotCache(backend.n_seq_max)
        self.ahead: dict[int, tuple[int, ...]] = {}  # free slot -> tokens to decode ahead
        self.outbox = Outbox()
        self.n_ctx = backend.info.n_ctx
        self.failures = 0  # steps failed in a row
        self.failure: str | None = None  # why the engine gave up: it then refuses everything
        self.stopped = False  # the thread is ending or has ended
        self.calibrated = threading.Event()  # set once the thread may take requests

    @property
    def running_jobs(self) -> int:
        return len({id(s.job) for s in list(self.active.values())})

    def run(self) -> None:
        try:
            try:
                self._calibrate()
            finally:
                self.calibrated.set()
            while self._pass():
                self._flush()
        except BaseException:  # past every guard (SystemExit...): leave nobody waiting
            self._give_up("the engine thread stopped")
            raise
        finally:
            self.stopped = True  # from now on `Engine.stream` refuses at once
            self._shutdown()
            self._flush()

    def _calibrate(self) -> None:
        """Time a few decodes in one or two idle slots before serving, so the speculation
        planner starts with a fair idea of what a step costs (stepcost.py); the slots' KV is
        then dropped. Skipped when the planner has learnt already, or on any failure. A draft
        model's drafting steps are timed too."""
        if self.speculator is None or not self.free:
            return
        filler = self.backend.tokenize("The quick brown fox jumps over the lazy dog. " * 8)
        if self.drafter is not None:
            self.drafter.calibrate(filler[:64])
        if not self.speculator.cost.observed:
            self._time_steps(filler)

    def _time_steps(self, filler: list[int]) -> None:
        slots = sorted(self.free)[:2]
        largest = max(sum(counts) for _, counts in CALIBRATION)
        try:
            for context in sorted({c for c, _ in CALIBRATION if c + largest <= self.n_ctx}):
                batches = [n for c, n in CALIBRATION if c == context and len(n) <= len(slots)]
                for slot in slots[: max(len(n) for n in batches)]:
                    self._fill(slot, filler, context)
                for counts in batches * CALIBRATION_ROUNDS:
                    entries = [
                        BatchEntry(slot, _cycle(filler, n), context, True, n)
                        for slot, n in zip(slots, counts, strict=False)
                    ]
                    started = time.perf_counter()
                    self.backend.decode(entries)
                    self._observe_cost(entries, time.perf_counter() - started)
                    for entry in entries:
                        self.backend.truncate(entry.seq_id, context)
        except Exception:
            log.exception("could not time decode steps for speculation; it learns as it runs")
        finally:
            for slot in slots:
                with contextlib.suppress(Exception):
                    self.backend.truncate(slot, 0)
                self.cache.forget(slot)

    def _fill(self, slot: int, filler: list[int], context: int) -> None:
        """Make `slot`'s KV `context` tokens of `filler`, decoded a batch at a time."""
        self.backend.truncate(slot, 0)
        for start in range(0, context, self.backend.n_batch):
            run = _cycle(filler, min(self.backend.n_batch, context - start))
            self.backend.decode([BatchEntry(slot, run, start, False)])

    def _pass(self) -> bool:
        """One pass of the loop; False once told to stop. Never raises an `Exception`."""
        try:
            if not self._collect(block=self._idle()):
                return False
            if self.failure is not None:
                self._refuse_all()
                return True
            self._drop_cancelled()
            self._expire_waiting(time.monotonic())
            self._admit()
            if self.active:
                self._step()
            elif self.ahead and not self.waiting:
                self._decode_ahead()
        except Exception as exc:  # a fault the narrower guards did not catch
            self.ahead.clear()
            self._fault(exc, "the engine loop", self._running(), step=True)
        return True

    def _idle(self) -> bool:
        return not (self.active or self.waiting or self.ahead or self.outbox.pending)

    def _flush(self) -> None:
        try:
            self.outbox.flush()
        except Exception:  # the outbox keeps what it could not hand over, for the next pass
            log.exception("could not hand the step's events over")

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
                    self.waiting.add(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return True

    def _expire_waiting(self, now: float) -> None:
        """503 to every request that has waited `queue_timeout` since it reached the engine."""
        limit = self.config.queue_timeout
        for job in self.waiting.expire(now, limit):
            with self._guard("refusing a request that waited too long", job):
                if job.cancelled:
                    self.observer.cancelled()
                    continue
                job.emit(
                    OverloadedError(
                        f"The request waited over {limit:g} s for a free slot; retry later.",
                        retry_after=RETRY_AFTER,
                    )
                )
                self.observer.rejected()

    def _admit(self) -> None:
        """Start waiting requests as the wait line says (admission.py), while slots are free."""
        for job in self.waiting.drop_cancelled():
            with self._guard("dropping a cancelled request", job):
                self.observer.cancelled()
        now = time.monotonic()
        while self.free and (admitted := self.waiting.next(len(self.free), now)) is not None:
            try:
                self._start(admitted)
            except Exception as exc:  # e.g. a sampler the backend cannot build
                told = exc if isinstance(exc, EngineError) else None
                self._fault(exc, "starting a request", [admitted], tell=told)

    def _start(self, job: Job) -> None:
        request = job.request
        slot, shared = self.cache.best(self.free, request.prompt_tokens, request.cache_scope)
        reuse = min(shared, len(request.prompt_tokens) - 1)
        primary = self._occupy(job, 0, slot, reuse)
        self.backend.begin(slot, request.sampling, reuse)
        for index in range(1, request.n):
            slot, _ = self.cache.best(self.free, (), request.cache_scope)  # one run
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
        # A sibling's KV arrives whole when the first choice forks: its slot keeps nothing.
        self.cache.use(slot, reuse if index == 0 else 0, job.request.cache_scope)
        seq = Sequence(job, index, slot, fed=reuse, cached=reuse)
        if self.speculator is not None:
            seq.acceptance = Acceptances(self.speculator.acceptance.of(job.request.cache_scope))
        seq.assembler = TextAssembler(job.request.stop)
        self.active[slot] = seq
        return seq

    def _drop_cancelled(self) -> None:
        cancelled = {id(s.job): s.job for s in self.active.values() if s.job.cancelled}
        for job in cancelled.values():
            with self._guard("dropping a cancelled request", job):
                self.observer.cancelled()
                self._release_job(job)

    def _release(self, seq: Sequence) -> None:
        """Free the slot; changes nothing here if the backend or the observer raises."""
        self.observer.generated(seq.generated)
        self.backend.end(seq.slot)
        del self.active[seq.slot]
        self.free.add(seq.slot)

    def _release_job(self, job: Job) -> None:
        for seq in [s for s in self.active.values() if s.job is job]:
            self._release(seq)

    def _discard(self, job: Job) -> None:
        """Free a failed request's slots, forgetting their caches (their KV may be half
        written); never raises."""
        for seq in [s for s in self.active.values() if s.job is job]:
            del self.active[seq.slot]
            self.free.add(seq.slot)
            self.cache.forget(seq.slot)
            try:
                self.observer.generated(seq.generated)
                self.backend.end(seq.slot)
            except Exception:
                log.exception("could not release slot %d", seq.slot)

    # -- one step ------------------------------------------------------------------------
    def _step(self) -> None:
        try:
            entries, owners = self._build_batch()
        except Exception as exc:
            self._fault(exc, "building a batch", self._running(), step=True)
            return
        if not entries:
            return
        try:
            started = time.perf_counter()
            logits_at = self.backend.decode(entries)
            self._observe_cost(entries, time.perf_counter() - started)
            self._commit(entries, owners)
        except KVFullError:
            self._shed_newest()
            return
        except Exception as exc:
            self._fault(exc, "decoding a batch", [s.job for s in owners], step=True)
            return
        self.failures = 0
        wanting = [seq for seq, entry in zip(owners, entries, strict=True) if entry.want_logits]
        now = time.monotonic()
        for seq, index in zip(wanting, logits_at, strict=True):
            with self._guard("sampling", seq.job):
                for sibling in seq.forks:
                    if self.active.get(seq.slot) is not seq:
                        break  # a sibling's failure ended the whole request
                    self._fork(seq, sibling, index, now)
                seq.forks = []
                self._take(seq, index, now)

    def _build_batch(self) -> tuple[list[BatchEntry], list[Sequence]]:
        """Every generating sequence's next token, then prompt chunks up to the step budget.

        Prompts get the budget in `_prompts_in_order`, packed into one step up to
        `step_tokens` while anything generates, up to the whole batch otherwise. Both
        alternatives measured worse (bench/latency.py, docs/benchmarks.md "Tail latency"):
        one prompt a step left slots idle between prompts (a sixth of the throughput at 16
        clients), and the budget held while nothing generates gave a worse TTFT p95 at 80 %
        load (1.14x llama-server's against 0.77x) and no better at 40 %.

        The batch lists its sequences in slot order: llama.cpp groups consecutive ids of
        one KV stream each into one ubatch only when they come in ascending order.
        """
        generating = [seq for seq in self.active.values() if seq.next_token is not None]
        entries: list[tuple[BatchEntry, Sequence]] = []
        room = self.backend.n_batch - len(generating)
        budget = min(room, self.config.step_tokens) if generating else room
        prompt_tokens = 0
        for seq in self._prompts_in_order():
            if prompt_tokens >= budget:
                break
            chunk = seq.prompt[seq.fed : seq.fed + budget - prompt_tokens]
            done = seq.fed + len(chunk) == len(seq.prompt)
            entries.append((BatchEntry(seq.slot, chunk, seq.fed, done), seq))
            prompt_tokens += len(chunk)
        self._plan_drafts(generating, [e for e, _ in entries])
        for seq in generating:
            assert seq.next_token is not None
            tokens = (seq.next_token, *seq.draft)
            entry = BatchEntry(seq.slot, tokens, seq.position, True, outputs=len(tokens))
            entries.append((entry, seq))
        entries.sort(key=lambda pair: pair[0].seq_id)
        return [entry for entry, _ in entries], [seq for _, seq in entries]

    def _plan_drafts(self, generating: list[Sequence], prompts: list[BatchEntry]) -> None:
        """Give each generating sequence the draft it verifies this step (speculation.py),
        within the batch's room and what the sequence may still emit: a prompt-lookup draft,
        or where lookup finds none, one from the draft model if there is one (drafter.py)."""
        for seq in generating:
            seq.draft = ()
        if self.speculator is None or not generating or len(generating) >= WIDE_BATCH:
            return
        room = self.backend.n_batch - sum(len(e.tokens) for e in prompts) - len(generating)
        candidates, lookups = self._candidates(generating, room)
        if self.speculator.mode == "draft":
            counts = {c.key: forced_length(c.rate, c.size) for c in candidates}
        else:
            seen = sum(attended(e.start_pos, len(e.tokens)) for e in prompts)
            counts = self.speculator.plan(candidates, [len(e.tokens) for e in prompts], seen)
        counts = _within(counts, room)
        drafts = {slot: lookups[slot][:n] for slot, n in counts.items() if slot in lookups}
        wanted = {s: n for s, n in counts.items() if s not in lookups}
        if wanted and self.drafter is not None:
            histories = {s: (_history(self.active[s]), n) for s, n in wanted.items()}
            drafts |= self.drafter.propose(histories)
        for seq in generating:
            seq.draft = drafts.get(seq.slot, ())
            unverified = lookups.get(seq.slot, ()) if not seq.draft else ()
            seq.guess = unverified[0] if unverified else None

    def _candidates(
        self, generating: list[Sequence], room: int
    ) -> tuple[list[Candidate], dict[int, tuple[int, ...]]]:
        """What every generating sequence could draft: a lookup draft (returned by slot too),
        else as many tokens as it may from the draft model."""
        assert self.speculator is not None
        mode = self.speculator.mode
        candidates: list[Candidate] = []
        lookups: dict[int, tuple[int, ...]] = {}
        for seq in generating:
            limit = min(
                self.speculator.max_tokens,
                seq.job.request.max_tokens - seq.generated,  # the last is sampled, not drafted
                self.n_ctx - seq.position - 1,
                room,
            )
            if seq.lookup is None or limit <= 0:
                continue
            draft: tuple[int, ...] = ()
            seq.match = NO_MATCH
            if mode != "draft":
                scope = seq.job.request.cache_scope
                draft, seq.match = self.speculator.draft(seq.lookup, seq.acceptance, scope, limit)
            if draft:
                lookups[seq.slot] = draft
                rate = seq.acceptance[seq.match].rate
                candidates.append(Candidate(seq.slot, len(draft), rate, seq.position))
            elif self.drafter is not None and mode != "ngram":
                seq.match = MODEL_DRAFT
                rate = seq.acceptance[MODEL_DRAFT].rate
                step = self.drafter.step_seconds or self.speculator.cost.seconds(1, 1, 0)
                candidates.append(Candidate(seq.slot, limit, rate, seq.position, step))
        return candidates, lookups

    def _prompts_in_order(self) -> list[Sequence]:
        """The sequences whose prompts are not all in, in the order they get the budget.

        Shortest rest first: a short prompt's first token is not kept waiting behind a long
        one (measured in bench/latency.py: lower TTFT p50 and p95 than arrival order).
        A prompt admitted over `PROMPT_PATIENCE` seconds ago goes before all others, in
        arrival order, so a stream of short prompts cannot starve a long one.
        """
        prompts = [s for s in self.active.values() if s.next_token is None and not s.awaiting_fork]
        overdue = time.monotonic() - PROMPT_PATIENCE
        prompts.sort(key=lambda s: prompt_rank(s, overdue))
        return prompts

    def _observe_cost(self, entries: list[BatchEntry], seconds: float) -> None:
        """Teach the speculation planner what this step cost."""
        if self.speculator is not None:
            tokens = sum(len(e.tokens) for e in entries)
            seen = sum(attended(e.start_pos, len(e.tokens)) for e in entries)
            ubatches = ubatches_of(len(e.tokens) for e in entries)
            self.speculator.cost.observe(tokens, ubatches, seen, seconds)

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
        """Sample the sequence's next token, or verify its draft, and emit what it releases.

        A draft is verified by sampling each of its positions in turn (the logits after the
        pending token, then after each drafted token) while the sampled token is the drafted
        one; the first that differs, or the token after a whole draft, is the new pending
        token. See speculation.py for why this is exact. The KV of drafted tokens past the
        last kept one is dropped, and so is their record in the prefix cache.
        """
        if self.active.get(seq.slot) is not seq:
            return  # its request failed earlier in this step
        draft, seq.draft = seq.draft, ()
        start, kept = seq.position, 0
        for row in range(len(draft) + 1):
            token = self.backend.sample(seq.slot, logits_index + row)  # may fail: this request
            right = row < len(draft) and token == draft[row]
            kept += right
            if self._emit(seq, token, logits_index + row, now) or not right:
                break
        if draft:
            self._settle_draft(seq, start, len(draft), min(row + 1, len(draft)), kept)
        elif seq.guess is not None:  # not verified, but was it right? (so drafting can resume)
            seq.acceptance.record(seq.match, 1, int(token == seq.guess))
            seq.guess = None

    def _settle_draft(
        self, seq: Sequence, start: int, drafted: int, examined: int, kept: int
    ) -> None:
        """Drop the KV (and the prefix cache's record) of the drafted tokens past the kept
        ones, and count the draft.

        What stays is what `seq.position` says: the pending token and the kept drafted
        tokens but the last one sampled, which is never in the KV (a finished answer's
        slot gets it back with its turn tail, see `_ahead`)."""
        in_kv = seq.position
        if in_kv < start + 1 + drafted:
            self.backend.truncate(seq.slot, in_kv)
            del self.cache.tokens[seq.slot][in_kv:]
        seq.acceptance.record(seq.match, examined, kept)  # those after an answer's end: unseen
        self.observer.speculated(drafted, kept)

    def _emit(self, seq: Sequence, token: int, logits_index: int, now: float) -> bool:
        """Take `token` as the sequence's next; True when it ended the choice."""
        seq.generated += 1
        seq.next_token = token
        if self.speculator is not None:
            if seq.lookup is None:
                seq.lookup = NgramIndex(seq.prompt)
            seq.lookup.extend((token,))
        self._note_timing(seq, now)
        info = self._token_info(seq, token, logits_index)
        if self.backend.is_eog(token):
            if info is not None:
                seq.job.emit(TokenEvent("", info, seq.index))
            self._finish(seq, "stop", _ahead(seq, token, eog=True))
            return True
        text = seq.assembler.feed(self.backend.token_bytes(token))
        if text or info is not None:
            seq.job.emit(TokenEvent(text, info, seq.index))
        if seq.assembler.stopped:
            self._finish(seq, "stop")  # the answer's text ends before its last tokens
            return True
        if seq.generated >= seq.job.request.max_tokens or seq.position >= self.n_ctx:
            self._finish(seq, "length", _ahead(seq, token, eog=False))
            return True
        return False

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
        logprob = self.backend.logprob(logits_index, token)
        k = seq.job.request.sampling.top_logprobs
        top = self.backend.top_logprobs(logits_index, k) if k else []
        return replace(self._token(token, logprob), top=tuple(self._token(t, lp) for t, lp in top))

    def _token(self, token: int, logprob: float) -> TokenInfo:
        raw = b"" if self.backend.is_eog(token) else self.backend.token_bytes(token)
        return TokenInfo(token, raw.decode("utf-8", errors="replace"), raw, logprob)

    def _finish(self, seq: Sequence, reason: FinishReason, ahead: tuple[int, ...] = ()) -> None:
        """End the choice; `ahead` is what its slot's KV should get next, decoded when idle."""
        rest = seq.assembler.flush()
        if rest:
            seq.job.emit(TokenEvent(rest, None, seq.index))
        self._release(seq)  # before the Finish, so a follow-up request finds the slot free
        if self.speculator is not None and seq.lookup is not None:
            answer = seq.lookup.tokens[len(seq.prompt) :]
            self.speculator.remember(seq.job.request.cache_scope, seq.prompt, answer)
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
        except Exception as exc:  # nobody is waiting for these: forget them and go on
            for entry in entries:
                self.cache.forget(entry.seq_id)
            self._fault(exc, "decoding ahead", [], step=True)
            return
        self.failures = 0
        for entry in entries:
            self.cache.extend(entry.seq_id, entry.tokens)
        self.observer.decoded_ahead(size)

    # -- failures ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self, where: str, *jobs: Job) -> Iterator[None]:
        """Fail `jobs` if the block raises: its work touched them and nothing else."""
        try:
            yield
        except Exception as exc:
            self._fault(exc, where, jobs)

    def _fault(
        self,
        exc: Exception,
        where: str,
        jobs: Iterable[Job],
        *,
        step: bool = False,
        tell: EngineError | None = None,
    ) -> None:
        """Log `exc`, fail the requests it touched with a 500 (`tell`, or a generic one) and
        free their slots; a failed `step` counts towards giving up."""
        touched = list({id(job): job for job in jobs}.values())
        if isinstance(exc, EngineError) and not isinstance(exc, BackendBrokenError):
            log.error("%s failed for %d request(s): %s", where, len(touched), exc)
        else:
            log.error("%s failed for %d request(s)", where, len(touched), exc_info=exc)
        error = tell or EngineError("The model failed while generating; please retry.")
        for job in touched:
            job.emit(error)
            self._discard(job)
        if step:
            self.failures += 1
        if isinstance(exc, BackendBrokenError):
            self._give_up(f"the backend is broken: {exc}")
        elif self.failures >= MAX_FAILURES:
            self._give_up(f"{self.failures} steps failed in a row")

    def _give_up(self, reason: str) -> None:
        """The engine cannot carry on: its model is not ready, everything in flight gets 503."""
        if self.failure is None:
            log.error("the engine stops serving its model: %s", reason)
            self.failure = reason
        self._refuse_all()

    def _refuse_all(self) -> None:
        jobs = self._running() + self.waiting.clear()
        self.ahead.clear()
        for job in jobs:
            job.emit(model_failed(self.failure))
            self._discard(job)

    def _running(self) -> list[Job]:
        return list({id(s.job): s.job for s in self.active.values()}.values())

    def _shed_newest(self) -> None:
        """No KV room for this step: refuse the most recently admitted request."""
        newest = max(self.active.values(), key=lambda s: s.job.enqueued_at).job
        log.warning("KV cache full: refusing the newest request")
        newest.emit(OverloadedError("The server is out of KV cache; retry shortly.", retry_after=2))
        self._discard(newest)
        with self._guard("refusing a request"):
            self.observer.rejected()

    def _drain(self) -> None:
        jobs = self._running() + self.waiting.clear()
        for job in jobs:
            job.emit(OverloadedError("The server is shutting down; retry shortly.", retry_after=5))
            self._discard(job)

    def _shutdown(self) -> None:
        """The thread ends: answer every request in flight, and any still in the inbox."""
        with contextlib.suppress(queue.Empty):
            while True:
                item = self.inbox.get_nowait()
                if isinstance(item, Job):
                    self.waiting.add(item)
        for job in self._running() + self.waiting.clear():
            if self.failure is None:
                job.emit(EngineError("The server is shutting down."))
            else:
                job.emit(model_failed(self.failure))
            self._discard(job)


def prompt_rank(seq: Sequence, overdue: float) -> tuple[bool, float, float]:
    """Overdue prompts first (oldest first), then the shortest rest of a prompt."""
    late = seq.admitted_at <= overdue
    rest = 0 if late else len(seq.prompt) - seq.fed
    return (not late, rest, seq.admitted_at)


def model_failed(reason: str | None) -> ModelFailedError:
    """What a request to an engine that stopped serving gets: 503, not worth retrying here."""
    return ModelFailedError(f"The model stopped serving after a failure: {reason}.")


def _history(seq: Sequence) -> list[int]:
    """The sequence's prompt and output so far, its pending token last."""
    assert seq.lookup is not None
    return seq.lookup.tokens


def _within(counts: dict[int, int], room: int) -> dict[int, int]:
    """`counts` cut, in slot order, to `room` drafted tokens in all."""
    kept = {}
    for slot in sorted(counts):
        take = min(counts[slot], room)
        if take > 0:
            kept[slot] = take
            room -= take
    return kept


def _cycle(tokens: list[int], length: int) -> list[int]:
    """`tokens` repeated to `length`."""
    return [tokens[i % len(tokens)] for i in range(length)]


def _ahead(seq: Sequence, last: int, *, eog: bool) -> tuple[int, ...]:
    """What a finished answer's slot should get next: its request's turn tail.

    The last sampled token was never decoded, so it goes first, unless it ended the
    generation: then it must be the tail's own first token, or nothing is decoded ahead.
    """
    tail = seq.job.request.turn_tail
    if eog:
        return tail if tail[:1] == (last,) else ()
    return (last, *tail) if tail else ()

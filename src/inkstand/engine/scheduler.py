"""The engine thread's loop: admit jobs into sequence slots, decode one batch per step.

Threading rule: everything in this module runs on the engine thread, except `Job.cancel`
and `Job.emit`'s hand-off, which are safe from any thread. Each step builds one batch with
the next token of every generating sequence plus prompt chunks of newly admitted ones, up
to the backend's batch size, so one long prompt cannot stall the others.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections import deque
from dataclasses import dataclass, field

from inkstand.backends.base import Backend, BatchEntry
from inkstand.engine.stops import TextAssembler
from inkstand.engine.types import (
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    TokenEvent,
    TokenInfo,
)
from inkstand.errors import EngineError, InkstandError

log = logging.getLogger("inkstand.engine")

STOP = object()  # put on the inbox to end the thread


class Job:
    """A request in flight; owned by the engine thread, cancelled from anywhere."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.events: asyncio.Queue[Event | InkstandError] = asyncio.Queue()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def emit(self, event: Event | InkstandError) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled = True


@dataclass
class Sequence:
    job: Job
    seq_id: int
    prompt: tuple[int, ...]
    fed: int = 0
    next_token: int | None = None
    generated: int = 0
    assembler: TextAssembler = field(default_factory=TextAssembler)

    @property
    def position(self) -> int:
        return self.fed + self.generated - (1 if self.next_token is not None else 0)


class Scheduler:
    def __init__(self, backend: Backend, inbox: queue.SimpleQueue) -> None:
        self.backend = backend
        self.inbox = inbox
        self.waiting: deque[Job] = deque()
        self.active: dict[int, Sequence] = {}
        self.free_slots = list(range(backend.n_seq_max))[::-1]
        self.n_ctx = backend.info.n_ctx

    def run(self) -> None:
        while self._collect(block=not self.active and not self.waiting):
            self._drop_cancelled()
            self._admit()
            if self.active:
                self._step()
        self._shutdown()

    # -- admission -----------------------------------------------------------------------
    def _collect(self, *, block: bool) -> bool:
        """Move new jobs from the inbox to the waiting line; False once told to stop."""
        try:
            item = self.inbox.get(block=block)
            while True:
                if item is STOP:
                    return False
                self.waiting.append(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return True

    def _admit(self) -> None:
        while self.waiting and self.free_slots:
            job = self.waiting.popleft()
            if job.cancelled:
                continue
            seq_id = self.free_slots.pop()
            self.backend.begin(seq_id, job.request.sampling)
            seq = Sequence(job, seq_id, job.request.prompt_tokens)
            seq.assembler = TextAssembler(job.request.stop)
            self.active[seq_id] = seq

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.active.values() if s.job.cancelled]:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.backend.end(seq.seq_id)
        del self.active[seq.seq_id]
        self.free_slots.append(seq.seq_id)

    # -- one step ------------------------------------------------------------------------
    def _step(self) -> None:
        entries, owners = self._build_batch()
        try:
            logits_at = self.backend.decode(entries)
        except EngineError as exc:
            self._fail(owners, exc)
            return
        wanting = [seq for seq, entry in zip(owners, entries, strict=True) if entry.want_logits]
        for seq, index in zip(wanting, logits_at, strict=True):
            self._advance(seq, index)

    def _build_batch(self) -> tuple[list[BatchEntry], list[Sequence]]:
        entries: list[BatchEntry] = []
        owners: list[Sequence] = []
        budget = self.backend.n_batch
        for seq in self.active.values():
            if seq.next_token is not None:
                entries.append(BatchEntry(seq.seq_id, (seq.next_token,), seq.position, True))
                owners.append(seq)
                budget -= 1
        for seq in self.active.values():
            if seq.next_token is None and budget > 0:
                chunk = seq.prompt[seq.fed : seq.fed + budget]
                done = seq.fed + len(chunk) == len(seq.prompt)
                entries.append(BatchEntry(seq.seq_id, chunk, seq.fed, done))
                owners.append(seq)
                seq.fed += len(chunk)
                budget -= len(chunk)
        return entries, owners

    def _advance(self, seq: Sequence, logits_index: int) -> None:
        token = self.backend.sample(seq.seq_id, logits_index)
        seq.generated += 1
        seq.next_token = token
        info = self._token_info(seq, token, logits_index)
        if self.backend.is_eog(token):
            if info is not None:
                seq.job.emit(TokenEvent("", info))
            self._finish(seq, "stop")
            return
        text = seq.assembler.feed(self.backend.token_bytes(token))
        if text or info is not None:
            seq.job.emit(TokenEvent(text, info))
        if seq.assembler.stopped:
            self._finish(seq, "stop")
        elif seq.generated >= seq.job.request.max_tokens or seq.position >= self.n_ctx:
            self._finish(seq, "length")

    def _token_info(self, seq: Sequence, token: int, logits_index: int) -> TokenInfo | None:
        if not seq.job.request.sampling.logprobs:
            return None
        raw = b"" if self.backend.is_eog(token) else self.backend.token_bytes(token)
        logprob = self.backend.logprob(logits_index, token)
        return TokenInfo(token, raw.decode("utf-8", errors="replace"), raw, logprob)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        rest = seq.assembler.flush()
        if rest:
            seq.job.emit(TokenEvent(rest))
        seq.job.emit(Finish(reason, len(seq.prompt), seq.generated, 0))
        self._release(seq)

    def _fail(self, owners: list[Sequence], exc: EngineError) -> None:
        log.error("decode failed for %d sequence(s): %s", len(owners), exc)
        for seq in owners:
            seq.job.emit(EngineError("the model failed while generating; please retry"))
            self._release(seq)

    def _shutdown(self) -> None:
        for seq in list(self.active.values()):
            seq.job.emit(EngineError("the server is shutting down"))
            self._release(seq)
        for job in self.waiting:
            job.emit(EngineError("the server is shutting down"))
        self.waiting.clear()

"""The store's one writer: a thread that owns the write connection and commits in batches.

    future = writer.submit(fn)        # fn(conn) runs on the writer thread, inside a transaction
    await writer.run(fn)              # the same, awaited from the event loop

As Datasette does, every write goes through one queue to one thread, so writers never wait on
SQLite's lock. The thread takes whatever has queued up since its last commit, runs it all in
one transaction and commits once, then resolves every waiter: under load many requests share
one commit, and a waiter is resolved only after its write is durable against a process crash
(WAL with `synchronous=NORMAL`: a committed transaction survives kill -9; a power cut may lose
the last ones). If a write fails, the batch is rolled back and its writes are run again one
transaction each, so only the failing write raises (in its waiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

log = logging.getLogger("inkstand.store")

Write = Callable[[sqlite3.Connection], Any]
_STOP = object()
MAX_BATCH = 512


class StoreWriter:
    def __init__(self, conn: sqlite3.Connection, name: str = "inkstand-store") -> None:
        self._conn = conn
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.commits = 0  # transactions committed (batches), for tests and benchmarks

    def submit(self, fn: Write) -> Future:
        future: Future = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError("the store is closed"))
            return future
        self._inbox.put((fn, future))
        return future

    async def run(self, fn: Write) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def close(self) -> None:
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join()
        self._conn.close()

    def _loop(self) -> None:
        while True:
            batch = [self._inbox.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            try:
                self._commit([item for item in batch if item is not _STOP])
            except Exception:  # never let one batch end the only writer
                log.exception("store writer: a batch failed")
            if stop:
                return

    def _commit(self, batch: list[tuple[Write, Future]]) -> None:
        if not batch:
            return
        try:
            values = self._transaction([fn for fn, _ in batch])
        except Exception:
            # One write failed (or the commit did): run each alone, so only the bad one fails.
            for fn, future in batch:
                try:
                    (value,) = self._transaction([fn])
                except Exception as exc:
                    _settle(future, exception=exc)
                else:
                    _settle(future, value)
            return
        for (_, future), value in zip(batch, values, strict=True):
            _settle(future, value)

    def _transaction(self, writes: list[Write]) -> list[Any]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            values = [fn(self._conn) for fn in writes]
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return values


def _settle(future: Future, value: Any = None, *, exception: BaseException | None = None) -> None:
    """Resolve a write's future unless its waiter gave up (cancelled it): the write stands."""
    with contextlib.suppress(InvalidStateError):
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)

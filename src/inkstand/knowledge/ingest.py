"""The ingestion worker: files waiting `in_progress` -> chunks in the store, or `failed`.

A thread (`inkstand-ingest`) takes the waiting files in upload order; each file's extraction
and chunking run in a worker process (pypdf, python-docx and the rest are Python holding
the GIL: in this process they would hold the event loop), and its chunks are written through
the store's writer in batches of `WRITE_BATCH`, the file marked `completed` last. So the
event loop and the engine thread never do this work, and a restart finds the files still
`in_progress` and does them again (their chunks from the interrupted run deleted first).

A file that cannot be read is marked `failed` with the extractor's reason (encrypted PDF,
only images, unsupported content). A file deleted while it is being read is dropped
quietly: every write checks that its row still stands. The worker sleeps until woken
(`wake()`, after an upload or a retry) or `POLL_SECONDS` pass.

With an embedding model (`start(embedder)`, knowledge/embedding.py) each batch of chunks is
embedded once written, `EMBED_BATCH` chunks a call, here on this thread, and the vectors
written beside them (`chunk_vectors`) before the file is marked `completed`. Then, once no
file is waiting, the chunks of completed files with no vector of this model (files ingested
before semantic search was turned on, or whose embedding failed) are embedded too
(backfill), in id order, yielding to any file that arrives. An embedding failure loses
nothing: it is logged, the file is still completed (keyword search finds it), and its chunks
are left to the backfill, tried again at the next pass.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inkstand.knowledge.chunking import Chunk, chunk
from inkstand.knowledge.embedding import Embedder, EmbeddingError
from inkstand.knowledge.extract import ExtractionError, extract
from inkstand.knowledge.semantic import vector_blob
from inkstand.workers import worker_pool

log = logging.getLogger("inkstand.ingest")

POLL_SECONDS = 30.0
WRITE_BATCH = 500  # chunks per store transaction: other writes wait no longer than that
MAX_CHUNK_CHARS = 2000  # ~500 tokens: recall@5 0.89 at 1,200, 0.96 at 2,000 (bench/kg.py)
# Chunks a call to the embedder, their vectors written together; the worker looks for a stop
# between calls (4 chunks: ~15 s for the embedded model on one slow core, within close()'s wait).
EMBED_BATCH = 4


@dataclass(frozen=True)
class Waiting:
    id: str
    name: str
    sha256: str


class Ingestion:
    """The worker thread; `start()` it with the store's writer and a way to read blobs."""

    def __init__(
        self,
        submit: Callable[[Callable[[sqlite3.Connection], Any]], concurrent.futures.Future],
        read_blob: Callable[[str], bytes],
        *,
        processes: int = 1,
    ) -> None:
        self._submit = submit
        self._read_blob = read_blob
        self._processes = processes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._embedder: Embedder | None = None
        self._backfill_due = True  # chunks may lack vectors: at start, and after a failure
        self._embedding_fails = False
        self.done = 0  # files finished (completed or failed), for tests
        self.embedded = 0  # chunks given a vector, for tests

    def start(self, embedder: Embedder | None = None) -> None:
        """Run the worker; with `embedder`, chunks get vectors too (the caller closes it)."""
        self._embedder = embedder
        self._thread = threading.Thread(target=self._loop, name="inkstand-ingest", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Stop: a file being read is abandoned (its worker ended; it stays `in_progress` and
        is read again at the next start), a file being written stops at its next batch."""
        self._stop.set()
        self._wake.set()
        pool = self._pool
        if pool is not None:
            _end_workers(pool)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                for waiting in self._write(_waiting_files):
                    if self._stop.is_set():
                        return
                    self._ingest(waiting)
                self._backfill()
            except Exception:  # the worker outlives any one failure
                log.exception("ingestion: a pass failed")
            self._wake.wait(POLL_SECONDS)

    def _ingest(self, waiting: Waiting) -> None:
        try:
            data = self._read_blob(waiting.sha256)
            chunks = self._chunks(data, waiting.name)
        except ExtractionError as exc:
            reason = exc.reason
            self._write(lambda conn: _fail(conn, waiting.id, reason))
        except FileNotFoundError:
            self._write(lambda conn: _fail(conn, waiting.id, "the stored file is missing"))
        except concurrent.futures.process.BrokenProcessPool:
            self._pool = None  # a fresh one for the next file
            if self._stop.is_set():
                return  # ended by `close()`: left in progress, redone at the next start
            reason = "reading the file crashed its worker process; it may be corrupt"
            self._write(lambda conn: _fail(conn, waiting.id, reason))
        else:
            self._store(waiting.id, chunks)
        self.done += 1

    def _chunks(self, data: bytes, name: str) -> list[Chunk]:
        if self._processes == 0:
            return read_chunks(data, name)
        return self._workers().submit(read_chunks, data, name).result()

    def _store(self, file_id: str, chunks: list[Chunk]) -> None:
        if not self._write(lambda conn: _clear(conn, file_id)):
            return  # deleted meanwhile
        embedding = self._embedder is not None
        for at in range(0, len(chunks), WRITE_BATCH):
            batch = chunks[at : at + WRITE_BATCH]
            if self._stop.is_set():
                return  # left in progress: redone at the next start
            ids = self._write(_inserting(file_id, at, batch))
            if ids is None:
                return
            for start in range(0, len(ids), EMBED_BATCH) if embedding else ():
                part = slice(start, start + EMBED_BATCH)
                stored = self._embed(ids[part], [c.text for c in batch[part]])
                if stored is False or self._stop.is_set():
                    return  # deleted meanwhile, or stopping (redone at the next start)
                embedding = stored is not None  # failed: the rest is left to the backfill
        self._write(lambda conn: _complete(conn, file_id))

    # -- embeddings --------------------------------------------------------------------------

    def _embed(self, ids: list[int], texts: list[str]) -> bool | None:
        """Embed and store; False if the chunks are gone, None if embedding failed."""
        assert self._embedder is not None
        try:
            vectors = self._embedder.embed(texts)
        except EmbeddingError as exc:
            self._backfill_due = True
            if not self._embedding_fails and not self._stop.is_set():
                log.warning("embedding failed; keyword search only until it works: %s", exc)
            self._embedding_fails = True
            return None
        if self._embedding_fails:
            log.info("embedding works again")
            self._embedding_fails = False
        name = self._embedder.name
        stored = self._write(lambda conn: _store_vectors(conn, name, ids, vectors))
        self.embedded += stored
        return stored > 0

    def _backfill(self) -> None:
        """Embed completed files' chunks with no vector of this model, until none is left, a
        file arrives (`wake()`) or embedding fails (retried at the next pass)."""
        if self._embedder is None or not self._backfill_due:
            return
        name = self._embedder.name
        after = 0
        while not self._stop.is_set() and not self._wake.is_set():
            rows = self._write(functools.partial(_unembedded, model=name, after=after))
            if not rows:
                self._backfill_due = False
                return
            ids = [chunk_id for chunk_id, _ in rows]
            if self._embed(ids, [text for _, text in rows]) is None:
                return
            after = ids[-1]

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return self._submit(fn).result()

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = worker_pool(self._processes)  # spawned; they die with the server
        return self._pool


def _end_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End a pool's worker processes now (Python 3.11's pool has no public way; a worker
    reading a large PDF would otherwise hold the server's exit for as long as it takes)."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()


def read_chunks(data: bytes, name: str) -> list[Chunk]:
    """A file's chunks (in the worker process); ExtractionError when it cannot be read."""
    return chunk(extract(data, name), max_chars=MAX_CHUNK_CHARS)


# -- store operations (run on the writer thread) ----------------------------------------------


def _waiting_files(conn: sqlite3.Connection) -> list[Waiting]:
    rows = conn.execute(
        "SELECT id, name, sha256 FROM files WHERE status = 'in_progress' ORDER BY seq"
    ).fetchall()
    return [Waiting(*row) for row in rows]


def _still_waiting(conn: sqlite3.Connection, file_id: str) -> bool:
    row = conn.execute("SELECT status FROM files WHERE id = ?", (file_id,)).fetchone()
    return row is not None and row[0] == "in_progress"


def _clear(conn: sqlite3.Connection, file_id: str) -> bool:
    """Delete chunks an interrupted run left; False if the file is no longer waiting."""
    if not _still_waiting(conn, file_id):
        return False
    conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
    return True


def _inserting(
    file_id: str, first: int, chunks: list[Chunk]
) -> Callable[[sqlite3.Connection], list[int] | None]:
    return lambda conn: _insert(conn, file_id, first, chunks)


def _insert(
    conn: sqlite3.Connection, file_id: str, first: int, chunks: list[Chunk]
) -> list[int] | None:
    """Write the chunks; their ids in order, or None if the file is no longer waiting."""
    if not _still_waiting(conn, file_id):
        return None
    conn.executemany(
        'INSERT INTO chunks (file_id, ord, text, page, start, "end") VALUES (?, ?, ?, ?, ?, ?)',
        [(file_id, first + i, c.text, c.page, c.start, c.end) for i, c in enumerate(chunks)],
    )
    rows = conn.execute(
        "SELECT id FROM chunks WHERE file_id = ? AND ord >= ? AND ord < ? ORDER BY ord",
        (file_id, first, first + len(chunks)),
    ).fetchall()
    return [row[0] for row in rows]


def _store_vectors(
    conn: sqlite3.Connection, model: str, ids: list[int], vectors: np.ndarray
) -> int:
    """Write the vectors of the chunks that still exist (a file may have been deleted while
    they were embedded; only this worker adds chunks, so no id was reused meanwhile)."""
    stored = 0
    for chunk_id, vector in zip(ids, vectors, strict=True):
        stored += conn.execute(
            "INSERT OR REPLACE INTO chunk_vectors (chunk_id, model, vector) "
            "SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
            (chunk_id, model, vector_blob(vector), chunk_id),
        ).rowcount
    return stored


def _unembedded(
    conn: sqlite3.Connection, *, model: str, after: int, limit: int = EMBED_BATCH
) -> list[tuple[int, str]]:
    """Chunks of completed files past id `after` with no vector of `model`, in id order."""
    return conn.execute(
        "SELECT c.id, c.text FROM chunks AS c JOIN files AS f ON f.id = c.file_id "
        "WHERE c.id > ? AND f.status = 'completed' AND NOT EXISTS ("
        "    SELECT 1 FROM chunk_vectors AS v WHERE v.chunk_id = c.id AND v.model = ?) "
        "ORDER BY c.id LIMIT ?",
        (after, model, limit),
    ).fetchall()


def _complete(conn: sqlite3.Connection, file_id: str) -> None:
    conn.execute(
        "UPDATE files SET status = 'completed', error = NULL "
        "WHERE id = ? AND status = 'in_progress'",
        (file_id,),
    )


def _fail(conn: sqlite3.Connection, file_id: str, reason: str) -> None:
    conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
    conn.execute(
        "UPDATE files SET status = 'failed', error = ? WHERE id = ? AND status = 'in_progress'",
        (reason, file_id),
    )


def wake_ingestion(app: Any) -> None:
    """Tell the app's ingestion worker that files are waiting (a no-op without one)."""
    worker = getattr(app.state, "ingestion", None)
    if worker is not None:
        worker.wake()

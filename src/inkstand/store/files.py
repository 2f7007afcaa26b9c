"""Uploaded files: their rows in `files`, their bytes content-addressed beside the database,
and the cursor pages both files and graphs are listed in.

    blobs     <store folder>/files/<sha256>: 0600 files in a 0700 dir, one per distinct content
    BlobSink  an upload on its way: a private temp file in that dir, hashed as it is written
              (its `write` and `finish` run on a worker thread, never on the event loop)
    FileStore create (`add`), get, page, delete, retry, stored_bytes

The blob dir sits beside the database: the data dir on a server, a throwaway store's temp
dir (removed with it) in tests, so rows and bytes always live and go together.

Every change to the blob dir that could race another runs on the store's writer thread,
inside the transaction that changes the rows: a new file's temp file is hard-linked to its
blob after its row is inserted, and removed only once that write has settled (a batch that
rolls back and runs again links it again); a deleted file's blob goes in the transaction that
deletes the last row naming its sha256. So an upload never loses its bytes to the deletion
of a file with the same content, whatever order the writes are batched in.

Ids are UUIDv7 (RFC 9562): they sort in creation order, so pages are ranges of ids and a
cursor keeps its place even after the row it names is deleted (deleting files while paging
through them works).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Generic, Literal, TypeVar

from inkstand.errors import InsufficientStorageError, NotFoundError
from inkstand.store.db import Store

STATUSES = ("in_progress", "completed", "failed")
SHA256 = re.compile(r"[0-9a-f]{64}")
TEMP_PREFIX = ".upload-"
STALE_TEMP_SECONDS = 3600.0

Item = TypeVar("Item")


class NoSuchFileError(NotFoundError):
    """No file has these ids (a 404 for an id in the path; the API says 400 elsewhere)."""

    def __init__(self, file_ids: Sequence[str]) -> None:
        listed = ", ".join(file_ids[:10]) + (" ..." if len(file_ids) > 10 else "")
        super().__init__(f"No file with the id {listed}.", extras={"file_ids": list(file_ids)})
        self.file_ids = list(file_ids)


class NoSuchGraphError(NotFoundError):
    """No graph has this id (a 404 for an id in the path; the API says 400 elsewhere)."""

    def __init__(self, graph_id: str) -> None:
        super().__init__(f"No graph with the id {graph_id}.", extras={"graph_id": graph_id})
        self.graph_id = graph_id


def wire_time() -> str:
    """Now in UTC as Writer writes it: `2024-07-10T15:03:48.785843Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TimeOrderedIds:
    """UUIDv7 strings, strictly increasing within the process (RFC 9562 method 2: the 74
    random bits count up within a millisecond), starting past the newest id of `table`."""

    def __init__(self, conn: sqlite3.Connection, table: Literal["files", "graphs"]) -> None:
        self._lock = threading.Lock()
        self._ms, self._tail = 0, 0
        newest = conn.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
        with contextlib.suppress(ValueError, TypeError):
            value = uuid.UUID(newest).int if newest else 0
            if value >> 76 & 0xF == 7:  # clocks can step back across a restart
                self._ms = value >> 80
                self._tail = (value >> 64 & 0xFFF) << 62 | value & (1 << 62) - 1

    def new(self) -> str:
        with self._lock:
            now = time.time_ns() // 1_000_000
            if now > self._ms:
                self._ms, self._tail = now, secrets.randbits(73)  # room to count up
            else:
                self._tail += 1
                if self._tail >> 74:
                    self._ms, self._tail = self._ms + 1, 0
            high, low = self._tail >> 62, self._tail & (1 << 62) - 1
            value = self._ms << 80 | 7 << 76 | high << 64 | 0b10 << 62 | low
        return str(uuid.UUID(int=value))


# -- pages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One page asked for: ids after or before a cursor, newest first unless `order` is asc."""

    after: str | None = None
    before: str | None = None
    limit: int = 50
    order: Literal["asc", "desc"] = "desc"


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    has_more: bool  # more beyond this page, in the direction it was read


def select_page(
    conn: sqlite3.Connection, sql: str, params: Sequence[object], window: Window
) -> tuple[list[tuple], bool]:
    """Rows of `sql` (a SELECT whose first column is `id`, ending in a WHERE clause) in
    `window`; `has_more` when another row lies beyond it."""
    forwards = window.before is None
    ascending = (window.order == "asc") == forwards
    clauses, values = [], list(params)
    if window.after is not None:
        clauses.append("id > ?" if window.order == "asc" else "id < ?")
        values.append(window.after)
    if window.before is not None:
        clauses.append("id < ?" if window.order == "asc" else "id > ?")
        values.append(window.before)
    where = "".join(f" AND {clause}" for clause in clauses)
    direction = "ASC" if ascending else "DESC"
    rows = conn.execute(
        f"{sql}{where} ORDER BY id {direction} LIMIT ?", (*values, window.limit + 1)
    ).fetchall()
    has_more = len(rows) > window.limit
    rows = rows[: window.limit]
    if not forwards:  # read nearest the cursor first; shown in the page's own order
        rows.reverse()
    return rows, has_more


# -- blobs ------------------------------------------------------------------------------------


class BlobSink:
    """An upload being received: appended to a 0600 temp file in the blob dir, hashed as it
    goes. `write` and `finish` do file IO: call them on a worker thread."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        self.size = 0
        self.sha256 = ""
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "xb", opener=_private_opener)  # noqa: SIM115
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> str:
        """Close the temp file; its SHA-256."""
        if self._file is not None:
            self._file.close()
        self.sha256 = self._hash.hexdigest()
        return self.sha256

    def discard(self) -> None:
        """Remove the temp file (a blob linked from it stays)."""
        if self._file is not None and not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


class Blobs:
    """The content-addressed blob dir."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha256: str) -> Path:
        if not SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.folder / sha256

    def read(self, sha256: str) -> bytes:
        """A blob's bytes (for the ingestion worker); FileNotFoundError if it is gone."""
        return self.path(sha256).read_bytes()

    def sink(self) -> BlobSink:
        _private_dir(self.folder)
        return BlobSink(self.folder)

    def place(self, temp: Path, sha256: str) -> None:
        """Make `temp` the blob `sha256` unless that blob exists (writer thread only). The
        temp file stays, so running this again after a rollback works."""
        target = self.path(sha256)
        try:
            os.link(temp, target)
        except FileExistsError:
            return
        except OSError:  # a file system without hard links: copy, then rename into place
            _copy_private(temp, target)

    def sweep(self, older_than: float = STALE_TEMP_SECONDS) -> None:
        """Remove temp files a crashed server left mid-upload (not recent ones: another
        server on this data dir may be receiving them)."""
        if not self.folder.is_dir():
            return
        cutoff = time.time() - older_than
        for temp in self.folder.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()

    def drop_unused(self, conn: sqlite3.Connection, sha256: str) -> None:
        """Remove blob `sha256` if no file row names it any more (writer thread only)."""
        used = conn.execute("SELECT 1 FROM files WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        if used is None:
            self.path(sha256).unlink(missing_ok=True)


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)


def _copy_private(source: Path, target: Path) -> None:
    partial = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        with open(source, "rb") as reader, open(partial, "xb", opener=_private_opener) as writer:
            while block := reader.read(1024 * 1024):
                writer.write(block)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


# -- file records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    id: str
    name: str
    type: str
    bytes: int
    sha256: str
    status: str
    error: str | None
    created_at: str
    graph_ids: tuple[str, ...] = field(default=())  # not a column: from `graph_files`


_COLUMNS = "id, name, type, bytes, sha256, status, error, created_at"


class FileStore:
    """Files' rows (read on the store's read connection, written by its writer thread) and
    their blobs, in `folder` (default: `files/` beside the database)."""

    def __init__(self, store: Store, folder: Path | None = None) -> None:
        self._store = store
        self._conn = store.conn
        self.blobs = Blobs(folder if folder is not None else Path(store.path).parent / "files")
        self.blobs.sweep()
        self._ids = TimeOrderedIds(store.conn, "files")

    def new_sink(self) -> BlobSink:
        return self.blobs.sink()

    def stored_bytes(self) -> int:
        """The bytes of every stored file, as uploaded (what `max_storage_bytes` counts)."""
        return _stored_bytes(self._conn)

    def get(self, file_id: str) -> FileRecord:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,))
        found = row.fetchone()
        if found is None:
            raise NoSuchFileError([file_id])
        return self._with_graphs(self._conn, [FileRecord(*found)])[0]

    def page(
        self,
        window: Window,
        *,
        graph_id: str | None = None,
        status: str | None = None,
        types: Iterable[str] = (),
    ) -> Page[FileRecord]:
        sql, params = f"SELECT {_COLUMNS} FROM files WHERE 1", []
        if graph_id is not None:
            sql += " AND id IN (SELECT file_id FROM graph_files WHERE graph_id = ?)"
            params.append(graph_id)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        kinds = sorted(set(types))
        if kinds:
            sql += f" AND type IN ({','.join('?' * len(kinds))})"
            params.extend(kinds)
        rows, has_more = select_page(self._conn, sql, params, window)
        records = self._with_graphs(self._conn, [FileRecord(*row) for row in rows])
        return Page(records, has_more)

    async def add(
        self,
        sink: BlobSink,
        *,
        name: str,
        kind: str,
        graph_id: str | None = None,
        max_storage: int = 0,
    ) -> FileRecord:
        """Store the finished `sink` as a new `in_progress` file (in `graph_id`, which must
        exist); InsufficientStorageError past `max_storage` (0: no limit). The sink's temp
        file is removed once the write has settled, whatever its outcome."""
        record = FileRecord(
            self._ids.new(), name, kind, sink.size, sink.sha256, "in_progress", None, wire_time()
        )

        def insert(conn: sqlite3.Connection) -> None:
            _check_room(conn, record.bytes, max_storage)
            if graph_id is not None:
                _require_graph(conn, graph_id)
            conn.execute(
                f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                astuple(record)[:8],
            )
            if graph_id is not None:
                link_graph(conn, graph_id, record.id)
            self.blobs.place(sink.path, record.sha256)

        await self._write_then(insert, sink.discard)
        return record

    async def delete(self, file_id: str) -> None:
        """Delete a file: its row, its graph memberships, its chunks, and its blob unless
        another file has the same bytes."""

        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT sha256 FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is None:
                raise NoSuchFileError([file_id])
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            conn.execute("DELETE FROM graph_files WHERE file_id = ?", (file_id,))
            conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            self.blobs.drop_unused(conn, row[0])  # last: nothing after it can fail

        await self._store.writer.run(delete)

    async def retry(self, file_ids: Sequence[str]) -> int:
        """Put the `failed` ones of `file_ids` back `in_progress` (error cleared); the others
        stay as they are. NoSuchFileError, changing nothing, if any id names no file."""
        unique = list(dict.fromkeys(file_ids))

        def retry(conn: sqlite3.Connection) -> int:
            missing = [i for i in unique if not _exists(conn, "files", i)]
            if missing:
                raise NoSuchFileError(missing)
            changed = 0
            for file_id in unique:
                changed += conn.execute(
                    "UPDATE files SET status = 'in_progress', error = NULL "
                    "WHERE id = ? AND status = 'failed'",
                    (file_id,),
                ).rowcount
            return changed

        return await self._store.writer.run(retry)

    async def _write_then(
        self, fn: Callable[[sqlite3.Connection], object], after: Callable[[], None]
    ) -> object:
        """Run `fn` on the writer, then `after()` once it has settled (even if our caller
        was cancelled meanwhile: the write itself is never cancelled)."""
        future = self._store.writer.submit(fn)
        future.add_done_callback(lambda _: after())
        return await asyncio.shield(asyncio.wrap_future(future))

    @staticmethod
    def _with_graphs(conn: sqlite3.Connection, records: list[FileRecord]) -> list[FileRecord]:
        if not records:
            return records
        ids = [r.id for r in records]
        rows = conn.execute(
            f"SELECT file_id, graph_id FROM graph_files WHERE file_id IN "
            f"({','.join('?' * len(ids))}) ORDER BY added_at, graph_id",
            ids,
        ).fetchall()
        graphs: dict[str, list[str]] = {}
        for file_id, graph_id in rows:
            graphs.setdefault(file_id, []).append(graph_id)
        return [replace(r, graph_ids=tuple(graphs.get(r.id, ()))) for r in records]


def _stored_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM files").fetchone()[0]


def _check_room(conn: sqlite3.Connection, size: int, max_storage: int) -> None:
    if not max_storage:
        return
    stored = _stored_bytes(conn)
    if stored + size > max_storage:
        raise storage_full(size, stored, max_storage)


def storage_full(size: int | None, stored: int, max_storage: int) -> InsufficientStorageError:
    """507: storing `size` more bytes (None: any) would pass `max_storage`."""
    this = "this file" if size is None else f"this file ({size} bytes)"
    return InsufficientStorageError(
        f"Storing {this} would pass the server's storage limit of "
        f"{max_storage} bytes (`max_storage_bytes`; {stored} bytes are stored). Delete files "
        "to make room.",
        extras={"limit": "max_storage_bytes", "value": max_storage, "stored": stored},
    )


def _exists(conn: sqlite3.Connection, table: Literal["files", "graphs"], row_id: str) -> bool:
    return conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None


def _require_graph(conn: sqlite3.Connection, graph_id: str) -> None:
    if not _exists(conn, "graphs", graph_id):
        raise NoSuchGraphError(graph_id)


def link_graph(conn: sqlite3.Connection, graph_id: str, file_id: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO graph_files (graph_id, file_id, added_at) VALUES (?, ?, ?)",
        (graph_id, file_id, wire_time()),
    )

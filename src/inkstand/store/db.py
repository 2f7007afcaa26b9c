"""Open the SQLite database in the data dir and bring its schema up to date.

Migrations are the files `migrations/NNNN_name.sql`, applied in order inside one transaction
each; `PRAGMA user_version` records the last one applied, so an older data dir is upgraded in
place and a newer one is refused rather than damaged.

A `Store` holds two connections to one WAL database: `conn`, for reads from the event loop
(each statement sees the latest commit, from this process or another, such as `inkstand
keys`), and the `StoreWriter` thread's, through which every write of the server goes.

The data dir is private to its user (0700) and the database files are 0600: the file is
created with that mode before SQLite opens it, and SQLite gives `-wal` and `-shm` the mode of
the database file. A data dir and files made by an older release are tightened on open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from importlib import resources
from pathlib import Path

from inkstand.config import ConfigError
from inkstand.store.writer import StoreWriter

DB_NAME = "inkstand.sqlite3"
DB_SUFFIXES = ("", "-wal", "-shm")  # the database file and WAL mode's companions

log = logging.getLogger("inkstand.store")


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("inkstand.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Apply the migrations after the database's version (up to `upto`); the new version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    steps = [(n, sql) for n, sql in migrations() if upto is None or n <= upto]
    latest = steps[-1][0] if steps else 0
    if current > latest and upto is None:
        raise ConfigError(
            f"the data dir's database is at schema {current}, newer than this Inkstand "
            f"({latest}); upgrade Inkstand"
        )
    for number, sql in steps:
        if number > current:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
    return max(current, latest)


class Store:
    """The read connection, the writer thread, and the schema version they were migrated to."""

    def __init__(self, path: str, *, temporary_dir: str | None = None) -> None:
        self.path = path
        _private_files(path)
        self.conn = connect(path)
        self.version = migrate(self.conn)
        self.writer = StoreWriter(connect(path))
        self._temporary_dir = temporary_dir

    def size(self) -> int:
        """Bytes on disk now: the database file plus its WAL files."""
        total = 0
        for suffix in DB_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(self.path + suffix).st_size
        return total

    def close(self) -> None:
        self.writer.close()
        self.conn.close()
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def open_store(data_dir: str | None) -> Store:
    """The store in `data_dir` (created if needed); `None` gives a throwaway store."""
    if data_dir is None:
        # Two connections cannot share an in-memory database safely; a temporary file can.
        folder = tempfile.mkdtemp(prefix="inkstand-store-")
        return Store(str(Path(folder) / DB_NAME), temporary_dir=folder)
    folder_path = Path(data_dir)
    _private_dir(folder_path)
    return Store(str(folder_path / DB_NAME))


def _private_dir(folder: Path) -> None:
    """Create `folder` 0700, or take group and other access away from an existing one."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = folder.stat().st_mode
    if not mode & 0o077:
        return
    if mode & stat.S_ISVTX:  # a shared sticky dir such as /tmp: never change it
        log.warning("the data dir %s is shared (mode %o); use a folder of its own", folder, mode)
        return
    try:
        folder.chmod(stat.S_IMODE(mode) & 0o700)
    except OSError as exc:
        log.warning("cannot make the data dir %s private: %s", folder, exc.strerror)


def _private_files(path: str) -> None:
    """Create the database file 0600 before SQLite opens it; tighten existing files."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for suffix in DB_SUFFIXES:
        try:
            os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass
        except OSError as exc:  # another user's file: say so, SQLite decides what works
            log.warning("cannot make %s private: %s", path + suffix, exc.strerror)

"""Open the SQLite database in the data dir and bring its schema up to date.

Migrations are the files `migrations/NNNN_name.sql`, applied in order inside one transaction
each; `PRAGMA user_version` records the last one applied, so an older data dir is upgraded in
place and a newer one is refused rather than damaged.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from inkstand.config import ConfigError

DB_NAME = "inkstand.sqlite3"


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("inkstand.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def migrate(conn: sqlite3.Connection) -> int:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    steps = migrations()
    latest = steps[-1][0] if steps else 0
    if current > latest:
        raise ConfigError(
            f"the data dir's database is at schema {current}, newer than this Inkstand "
            f"({latest}); upgrade Inkstand"
        )
    for number, sql in steps:
        if number > current:
            conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
    return latest


class Store:
    """The connection plus the schema version it was migrated to."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.version = migrate(conn)

    def close(self) -> None:
        self.conn.close()


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def open_store(data_dir: str | None) -> Store:
    """The store in `data_dir` (created if needed); `None` gives an in-memory store."""
    if data_dir is None:
        return Store(connect(":memory:"))
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return Store(connect(str(folder / DB_NAME)))

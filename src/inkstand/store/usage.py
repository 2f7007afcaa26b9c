"""Usage records: one row per API request, written through the store's writer, and reports.

`UsageLog.record()` resolves once the row is committed; the server awaits it before the last
byte of the response (the final frame of a stream) is sent, so a request whose response
completed is on disk even if the process is killed the next moment.

Records older than `usage_retention_days` are deleted when the server starts and once a day
after (`keep_pruned`), and on demand by `inkstand usage prune --before DATE`. Deletes run on
the writer thread in chunks of `PRUNE_CHUNK` rows, so a large prune never holds the writer
(and the usage records of answers waiting to be sent) for long.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from inkstand.config import ConfigError
from inkstand.store.db import Store

log = logging.getLogger("inkstand.store")

Grouping = Literal["all", "day", "key", "model"]
_GROUP_SQL = {
    "all": "'all'",
    "day": "substr(at, 1, 10)",
    "key": "COALESCE(key_id, '-')",
    "model": "model",
}


@dataclass(frozen=True)
class UsageRecord:
    at: str
    key_id: str | None
    model: str | None
    endpoint: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    finish_reason: str | None


PRUNE_CHUNK = 5000  # rows deleted per write transaction
PRUNE_EVERY = 24 * 3600.0  # seconds between the server's prunes

_INSERT = (
    "INSERT INTO usage (at, key_id, model, endpoint, prompt_tokens, cached_tokens, "
    "completion_tokens, latency_ms, status, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class UsageLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, record: UsageRecord) -> Future:
        row = astuple(record)
        return self._store.writer.submit(lambda conn: conn.execute(_INSERT, row))

    def prune(self, before: str, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete the records from before `before` (a store timestamp); how many went."""
        total = 0
        while True:
            deleted = self._delete_chunk(before, chunk).result()
            total += deleted
            if deleted < chunk:
                return total

    async def prune_async(self, before: str, *, chunk: int = PRUNE_CHUNK) -> int:
        """`prune` awaited from the event loop; other writes go between the chunks."""
        total = 0
        while True:
            deleted = await asyncio.wrap_future(self._delete_chunk(before, chunk))
            total += deleted
            if deleted < chunk:
                return total

    def _delete_chunk(self, before: str, chunk: int) -> Future:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE at < ? LIMIT ?)",
                (before, chunk),
            ).rowcount

        return self._store.writer.submit(delete)

    def rows(self, *, key_id: str | None = None, since: str | None = None) -> list[dict]:
        where, params = _filters(key_id, since)
        cursor = self._store.conn.execute(f"SELECT * FROM usage{where} ORDER BY id", params)
        return _dicts(cursor)

    def summary(
        self, by: Grouping, *, key_id: str | None = None, since: str | None = None
    ) -> list[dict]:
        """Requests and token sums in all, per day, key or model (oldest day / largest first)."""
        where, params = _filters(key_id, since)
        group = _GROUP_SQL[by]
        order = "total_tokens DESC, 1" if by in ("key", "model") else "1"
        cursor = self._store.conn.execute(
            f'SELECT {group} AS "{by}", COUNT(*) AS requests, '
            "SUM(status < 400) AS succeeded, SUM(status = 429) AS rate_limited, "
            "SUM(prompt_tokens) AS prompt_tokens, SUM(cached_tokens) AS cached_tokens, "
            "SUM(completion_tokens) AS completion_tokens, "
            "SUM(prompt_tokens + completion_tokens) AS total_tokens "
            f"FROM usage{where} GROUP BY 1 ORDER BY {order}",
            params,
        )
        return _dicts(cursor)


def retention_cutoff(days: int, now: datetime | None = None) -> str | None:
    """The store timestamp records older than `days` days are pruned before; None: keep all."""
    if days < 0:
        raise ConfigError(f"`usage_retention_days` must be 0 (keep forever) or more, got {days}")
    if days == 0:
        return None
    moment = (now or datetime.now(UTC)) - timedelta(days=days)
    return moment.isoformat(timespec="milliseconds")


async def keep_pruned(usage: UsageLog, days: int, every: float = PRUNE_EVERY) -> None:
    """Prune records older than `days` days now and every `every` seconds (the server's task)."""
    while True:
        before = retention_cutoff(days)
        if before is None:
            return
        try:
            deleted = await usage.prune_async(before)
        except Exception:  # a failed prune must not end the task: the next one may pass
            log.exception("usage records could not be pruned")
        else:
            if deleted:
                log.info("pruned %d usage records from before %s", deleted, before)
        await asyncio.sleep(every)


def _filters(key_id: str | None, since: str | None) -> tuple[str, tuple]:
    clauses, params = [], []
    if key_id is not None:
        clauses.append("key_id = ?")
        params.append(key_id)
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _dicts(cursor: sqlite3.Cursor) -> list[dict]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

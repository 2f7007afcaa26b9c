"""Usage records: one row per API request, written through the store's writer, and reports.

`UsageLog.record()` resolves once the row is committed; the server awaits it before the last
byte of the response (the final frame of a stream) is sent, so a request whose response
completed is on disk even if the process is killed the next moment.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from typing import Literal

from inkstand.store.db import Store

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

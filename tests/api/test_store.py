"""The store seen from the running app: its size in `/metrics`, and usage records pruned past
`usage_retention_days` as the server starts (on the store's writer thread)."""

import asyncio
import os
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from inkstand.store import UsageLog, UsageRecord
from inkstand.store.db import DB_SUFFIXES

from .conftest import api_client, build_app, settings


def store_bytes(exposition: str) -> float:
    (value,) = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "inkstand:store_bytes"
    ]
    return value


def files_size(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in DB_SUFFIXES if os.path.exists(path + s))


async def test_metrics_report_the_stores_size_on_disk_when_scraped(app, client):
    path = app.state.store.path
    before = store_bytes((await client.get("/metrics")).text)
    assert before == files_size(path) > 0
    for _ in range(20):
        await client.get("/v1/models")  # each request adds a usage record
    app.state.store.writer.submit(lambda conn: None).result()
    after = store_bytes((await client.get("/metrics")).text)
    assert after == files_size(path) > before


def record(days_ago: float) -> UsageRecord:
    at = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(timespec="milliseconds")
    return UsageRecord(at, "key_x", "palmyra-x5", "/v1/chat", 1, 0, 1, 1.0, 200, "stop")


async def rows_after_start(backend, days: int, ages: list[float]) -> list[dict]:
    """The usage rows left once an app with `usage_retention_days = days` has started."""
    app = build_app(backend, settings(usage_retention_days=days))
    usage = UsageLog(app.state.store)
    for age in ages:
        usage.record(record(age)).result()
    async with api_client(app, lifespan=True):
        for _ in range(100):  # the prune runs in a task of its own: wait for it
            rows = usage.rows()
            if len(rows) < len(ages):
                break
            await asyncio.sleep(0.02)
        return rows


async def test_records_past_the_retention_are_pruned_when_the_server_starts(backend):
    rows = await rows_after_start(backend, 30, [400, 31, 29, 0])
    assert len(rows) == 2
    cutoff = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    assert all(row["at"] > cutoff for row in rows)


async def test_retention_zero_keeps_every_record(backend):
    assert len(await rows_after_start(backend, 0, [4000, 1])) == 2

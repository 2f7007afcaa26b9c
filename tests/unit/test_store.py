"""The SQLite store: migrations upgrade in place; keys are verified, never stored."""

import hashlib
import os
import sqlite3
import stat
import threading
from datetime import UTC, datetime

import pytest

from inkstand.config import ConfigError
from inkstand.store import KeyStore, UsageLog, UsageRecord, open_store
from inkstand.store.db import DB_NAME, DB_SUFFIXES, connect, migrate, migrations
from inkstand.store.keys import PREFIX_LEN
from inkstand.store.usage import retention_cutoff


def test_migrations_are_numbered_and_applied_once():
    numbers = [n for n, _ in migrations()]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1
    store = open_store(None)
    assert store.version == numbers[-1]
    assert migrate(store.conn) == numbers[-1]  # a second run changes nothing
    store.close()


def test_a_newer_database_is_refused():
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA user_version = 999")
    with pytest.raises(ConfigError):
        migrate(conn)


def test_created_key_verifies_and_its_secret_is_not_stored(tmp_path):
    store = open_store(str(tmp_path))
    keys = KeyStore(store)
    assert not keys.has_any()
    new = keys.create("ci")
    assert keys.verify(new.secret) == new.id
    assert keys.verify(new.secret + "x") is None
    assert keys.verify("ink_wrong") is None
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert new.secret.encode() not in raw


def test_configured_keys_verify_without_the_store():
    store = open_store(None)
    keys = KeyStore(store, ("script-key",))
    assert keys.has_any()
    assert keys.verify("script-key") == "configured"
    assert keys.verify("other") is None
    store.close()


def test_a_data_dir_from_schema_1_is_upgraded_in_place_and_its_keys_still_work(tmp_path):
    # Build the database exactly as the first release did: schema 1, a key inserted by its SQL.
    conn = connect(str(tmp_path / DB_NAME))
    assert migrate(conn, upto=1) == 1
    salt = b"0123456789abcdef"
    secret = "ink_old-release-secret-0000000000"
    conn.execute(
        "INSERT INTO api_keys (id, name, prefix, salt, hash, created_at) "
        "VALUES ('key_old', 'old', ?, ?, ?, '2026-01-01T00:00:00+00:00')",
        (secret[:PREFIX_LEN], salt, hashlib.sha256(salt + secret.encode()).digest()),
    )
    conn.close()

    store = open_store(str(tmp_path))
    try:
        assert store.version == migrations()[-1][0] > 1
        keys = KeyStore(store)
        record = keys.lookup(secret)
        assert record is not None and record.id == "key_old"
        assert (record.models, record.rpm, record.tpm, record.expires_at) == (None,) * 4
        assert keys.verify(secret) == "key_old"
        assert [k.id for k in keys.list()] == ["key_old"]
    finally:
        store.close()


def test_keys_carry_scope_limits_and_expiry_and_revoke(tmp_path):
    store = open_store(str(tmp_path))
    keys = KeyStore(store)
    scoped = keys.create("s", models=("palmyra-x4",), rpm=5, tpm=0, expires_at="2999-01-01")
    old = keys.create("e", expires_at="2000-01-01T00:00:00.000+00:00")
    record = keys.lookup(scoped.secret)
    assert record is not None
    assert record.allows("palmyra-x4") and not record.allows("palmyra-x5")
    assert (record.rpm, record.tpm) == (5, 0)
    expired = keys.lookup(old.secret)
    assert expired is not None and expired.expired()
    assert keys.verify(old.secret) is None
    assert keys.revoke(scoped.id) and not keys.revoke(scoped.id)
    assert keys.verify(scoped.secret) is None
    listed = {k["id"]: k for k in (r.public() for r in keys.list())}
    assert listed[scoped.id]["revoked_at"] is not None
    assert all("secret" not in k and "hash" not in k and "salt" not in k for k in listed.values())
    store.close()


def test_usage_records_commit_in_batches_and_report(tmp_path):
    store = open_store(str(tmp_path))
    log = UsageLog(store)
    futures = [
        log.record(
            UsageRecord(
                f"2026-11-2{i % 2}T10:00:00.000+00:00",
                f"key_{i % 3}",
                "palmyra-x5",
                "/v1/chat",
                10,
                2,
                5,
                1.5,
                200 if i % 4 else 429,
                "stop",
            )
        )
        for i in range(40)
    ]
    for future in futures:
        future.result(timeout=5)
    assert store.writer.commits < 40  # writes that queued up together shared a commit
    (total,) = log.summary("all")
    assert total["requests"] == 40 and total["rate_limited"] == 10
    assert total["prompt_tokens"] == 400 and total["completion_tokens"] == 200
    by_day = log.summary("day")
    assert [row["day"] for row in by_day] == ["2026-11-20", "2026-11-21"]
    assert sum(row["requests"] for row in log.summary("key", key_id="key_1")) == 13
    assert len(log.rows(since="2026-11-21")) == 20
    store.close()


def test_a_failing_write_fails_alone(tmp_path):
    store = open_store(str(tmp_path))

    def broken(conn):
        conn.execute("INSERT INTO usage (at) VALUES ('x')")  # misses NOT NULL columns

    bad = store.writer.submit(broken)
    good = UsageLog(store).record(
        UsageRecord("2026-11-26T00:00:00.000+00:00", None, None, "/v1/chat", 0, 0, 0, 1, 401, None)
    )
    with pytest.raises(sqlite3.IntegrityError):
        bad.result(timeout=5)
    good.result(timeout=5)
    assert len(UsageLog(store).rows()) == 1
    store.close()


def test_a_waiter_that_gives_up_neither_loses_its_write_nor_stops_the_writer(tmp_path):
    store = open_store(str(tmp_path))
    log = UsageLog(store)
    record = UsageRecord(
        "2026-11-26T00:00:00.000+00:00", None, None, "/v1/chat", 0, 0, 0, 1, 200, None
    )
    started, release = threading.Event(), threading.Event()

    def slow(conn):
        started.set()
        release.wait(5)

    blocker = store.writer.submit(slow)  # holds the writer while the next write is cancelled
    started.wait(5)
    abandoned = log.record(record)
    assert abandoned.cancel()  # as asyncio does when the awaiting client goes away
    release.set()
    blocker.result(timeout=5)
    log.record(record).result(timeout=5)  # the writer lives on
    assert len(log.rows()) == 2  # and the abandoned record was still written
    store.close()


def usage_at(at: str) -> UsageRecord:
    return UsageRecord(at, "key_x", "palmyra-x5", "/v1/chat", 1, 0, 1, 1.0, 200, "stop")


def test_prune_deletes_only_older_records_in_chunks(tmp_path):
    store = open_store(str(tmp_path))
    log = UsageLog(store)
    days = [f"2026-01-{d:02d}T12:00:00.000+00:00" for d in range(1, 21)]
    for at in days:
        log.record(usage_at(at)).result()
    commits = store.writer.commits
    assert log.prune("2026-01-08T00:00:00.000+00:00", chunk=3) == 7
    assert store.writer.commits - commits == 3  # 3 + 3 + 1: other writes go in between
    assert [row["at"] for row in log.rows()] == days[7:]
    assert log.prune("2026-01-08T00:00:00.000+00:00") == 0
    store.close()


def test_retention_cutoff_counts_days_back_and_zero_keeps_everything():
    now = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)
    assert retention_cutoff(90, now) == "2026-03-02T12:00:00.000+00:00"
    assert retention_cutoff(0, now) is None
    with pytest.raises(ConfigError):
        retention_cutoff(-1, now)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_data_dir_is_private_and_so_are_its_database_files(tmp_path):
    data = tmp_path / "new" / "data"
    store = open_store(str(data))
    KeyStore(store).create("k")  # a write: the WAL and its index exist now
    files = [data / (DB_NAME + suffix) for suffix in DB_SUFFIXES]
    assert all(f.exists() for f in files)
    assert mode(data) == 0o700
    assert [mode(f) for f in files] == [0o600] * 3
    store.close()


def test_an_older_data_dir_is_tightened_when_opened(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    conn = connect(str(data / DB_NAME))  # as an older release left it: 0644 files
    migrate(conn)
    conn.execute("INSERT INTO usage (at, endpoint, latency_ms, status) VALUES ('x', '/', 1, 200)")
    for suffix in DB_SUFFIXES:
        os.chmod(data / (DB_NAME + suffix), 0o644)
    store = open_store(str(data))
    conn.close()
    assert mode(data) == 0o700
    assert [mode(data / (DB_NAME + s)) for s in DB_SUFFIXES] == [0o600] * 3
    store.close()


def test_a_shared_sticky_dir_is_left_alone(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    open_store(str(shared)).close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert mode(shared / DB_NAME) == 0o600


def test_a_new_store_has_never_held_a_key_and_revoking_does_not_make_it_new(tmp_path):
    store = open_store(str(tmp_path))
    keys = KeyStore(store)
    assert not keys.ever_stored() and not keys.has_usable()
    made = keys.create("k")
    assert keys.ever_stored() and keys.has_usable()
    keys.revoke(made.id)
    assert keys.ever_stored() and not keys.has_usable()
    keys.create("old", expires_at="2001-01-01T00:00:00.000+00:00")
    assert not keys.has_usable()
    assert KeyStore(store, ("cli-key",)).has_usable()
    store.close()

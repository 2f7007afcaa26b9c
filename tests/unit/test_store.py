"""The SQLite store: migrations upgrade in place; keys are verified, never stored."""

import sqlite3

import pytest

from inkstand.config import ConfigError
from inkstand.store import KeyStore, open_store
from inkstand.store.db import migrate, migrations


def test_migrations_are_numbered_and_applied_once():
    numbers = [n for n, _ in migrations()]
    assert numbers == sorted(set(numbers)) and numbers[0] == 1
    store = open_store(None)
    assert store.version == numbers[-1]
    assert migrate(store.conn) == numbers[-1]  # a second run changes nothing


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
    keys = KeyStore(open_store(None), ("script-key",))
    assert keys.has_any()
    assert keys.verify("script-key") == "configured"
    assert keys.verify("other") is None

"""API keys: create (the secret is shown once), look up in constant time, never store secrets.

A key may be limited to some model ids (`models`), carry its own rate limits (`rpm`, `tpm`:
None means the server's default, 0 means none) and an expiry. Revoking keeps the row, so
usage stays attributable. The server reads a key's row on every request (one indexed read),
so `inkstand keys create | revoke`, run against the same data dir, take effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from inkstand.store.db import Store

SECRET_PREFIX = "ink_"
PREFIX_LEN = 12
CONFIGURED_ID = "configured"

_COLUMNS = "id, name, prefix, models, rpm, tpm, created_at, expires_at, revoked_at"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class NewKey:
    id: str
    name: str
    secret: str


@dataclass(frozen=True)
class KeyRecord:
    """What the gateway knows about a key; never its secret or hash."""

    id: str
    name: str
    prefix: str = ""
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None  # None: the server's default; 0: unlimited
    tpm: int | None = None
    created_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None

    def expired(self, now: str | None = None) -> bool:
        return self.expires_at is not None and (now or utc_now()) >= self.expires_at

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": list(self.models) if self.models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


def _record(row: tuple, last_used: str | None = None) -> KeyRecord:
    key_id, name, prefix, models, rpm, tpm, created, expires, revoked = row
    scope = tuple(json.loads(models)) if models is not None else None
    return KeyRecord(key_id, name, prefix, scope, rpm, tpm, created, expires, revoked, last_used)


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


class KeyStore:
    """Keys kept in the store plus keys given on the command line (held in memory only)."""

    def __init__(self, store: Store, configured: tuple[str, ...] = ()) -> None:
        self._store = store
        self._conn = store.conn
        self._configured = [hashlib.sha256(k.encode()).digest() for k in configured]

    def count(self) -> int:
        return self._conn.execute(
            "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL"
        ).fetchone()[0]

    def has_any(self) -> bool:
        return bool(self._configured) or self.count() > 0

    def has_usable(self) -> bool:
        """A key given on the command line, or a stored one neither revoked nor expired."""
        if self._configured:
            return True
        return bool(
            self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?))",
                (utc_now(),),
            ).fetchone()[0]
        )

    def ever_stored(self) -> bool:
        """Whether this store has ever held a key (revoking keeps the row, so this lasts)."""
        return bool(self._conn.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0])

    def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_at: str | None = None,
    ) -> NewKey:
        secret = SECRET_PREFIX + secrets.token_urlsafe(30)
        salt = secrets.token_bytes(16)
        key_id = "key_" + uuid.uuid4().hex[:16]
        scope = json.dumps(list(models)) if models is not None else None
        row = (key_id, name, secret[:PREFIX_LEN], salt, _digest(salt, secret), utc_now())

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, name, prefix, salt, hash, created_at, models, rpm, "
                "tpm, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, scope, rpm, tpm, expires_at),
            )

        self._store.writer.submit(insert).result()
        return NewKey(key_id, name, secret)

    def revoke(self, key_id: str) -> bool:
        """Revoke `key_id`; False if there is no such key or it was revoked already."""

        def update(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (utc_now(), key_id),
            ).rowcount

        return self._store.writer.submit(update).result() == 1

    def list(self) -> list[KeyRecord]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS}, (SELECT MAX(at) FROM usage WHERE usage.key_id = api_keys.id) "
            "FROM api_keys ORDER BY created_at, id"
        ).fetchall()
        return [_record(row[:-1], row[-1]) for row in rows]

    def lookup(self, secret: str) -> KeyRecord | None:
        """The key `secret` belongs to, revoked or expired ones included; None if unknown."""
        if self._configured:
            probe = hashlib.sha256(secret.encode()).digest()
            matches = [hmac.compare_digest(probe, digest) for digest in self._configured]
            if any(matches):  # each key its own id ("configured", "configured-2" ...)
                n = matches.index(True) + 1
                return KeyRecord(CONFIGURED_ID if n == 1 else f"{CONFIGURED_ID}-{n}", "--api-key")
        rows = self._conn.execute(
            f"SELECT salt, hash, {_COLUMNS} FROM api_keys WHERE prefix = ?",
            (secret[:PREFIX_LEN],),
        ).fetchall()
        for salt, digest, *row in rows:
            if hmac.compare_digest(_digest(salt, secret), digest):
                return _record(tuple(row))
        return None

    def verify(self, secret: str) -> str | None:
        """The id of the usable (not revoked, not expired) key `secret` belongs to, or None."""
        record = self.lookup(secret)
        if record is None or record.revoked_at is not None or record.expired():
            return None
        return record.id

"""API keys: create (the secret is shown once), verify in constant time, never store secrets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from inkstand.store.db import Store

SECRET_PREFIX = "ink_"
PREFIX_LEN = 12


@dataclass(frozen=True)
class NewKey:
    id: str
    name: str
    secret: str


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


class KeyStore:
    """Keys kept in the store plus keys given on the command line (held in memory only)."""

    def __init__(self, store: Store, configured: tuple[str, ...] = ()) -> None:
        self._conn = store.conn
        self._configured = {hashlib.sha256(k.encode()).digest(): k for k in configured}

    def count(self) -> int:
        return self._conn.execute(
            "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL"
        ).fetchone()[0]

    def has_any(self) -> bool:
        return bool(self._configured) or self.count() > 0

    def create(self, name: str) -> NewKey:
        secret = SECRET_PREFIX + secrets.token_urlsafe(30)
        salt = secrets.token_bytes(16)
        key_id = "key_" + uuid.uuid4().hex[:16]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._conn.execute(
            "INSERT INTO api_keys (id, name, prefix, salt, hash, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, name, secret[:PREFIX_LEN], salt, _digest(salt, secret), now),
        )
        return NewKey(key_id, name, secret)

    def verify(self, secret: str) -> str | None:
        """The id of the key `secret` belongs to, or None."""
        if self._configured:
            probe = hashlib.sha256(secret.encode()).digest()
            for digest in self._configured:
                if hmac.compare_digest(probe, digest):
                    return "configured"
        rows = self._conn.execute(
            "SELECT id, salt, hash FROM api_keys WHERE prefix = ? AND revoked_at IS NULL",
            (secret[:PREFIX_LEN],),
        ).fetchall()
        for key_id, salt, digest in rows:
            if hmac.compare_digest(_digest(salt, secret), digest):
                return key_id
        return None

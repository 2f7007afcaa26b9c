"""`inkstand keys ...` and `inkstand usage [prune]`: manage keys, read and prune usage in a
data dir.

They open the same SQLite store as the server (`--data-dir`, `INKSTAND_DATA_DIR` or the
config file's `data_dir`); a running server sees a new or revoked key on its next request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from inkstand.config import ConfigError, load_settings
from inkstand.store import KeyStore, Store, UsageLog, open_store


def parse_when(text: str) -> str:
    """A date (`2026-12-31`, midnight UTC) or ISO 8601 time, as the store's UTC timestamp."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"`{text}` is not a date (YYYY-MM-DD) or an ISO 8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


@contextmanager
def opened(data_dir: str | None, config: str | None) -> Iterator[Store]:
    settings = load_settings({"data_dir": data_dir, "config": config}, models=False)
    store = open_store(settings.data_dir)
    try:
        yield store
    finally:
        store.close()


def create_key(store: Store, args) -> int:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    for name, value in (("--rpm", args.rpm), ("--tpm", args.tpm)):
        if value is not None and value < 0:
            raise ConfigError(f"{name} must be 0 (no limit) or more, got {value}")
    expires = parse_when(args.expires) if args.expires else None
    key = KeyStore(store).create(
        args.name, models=models, rpm=args.rpm, tpm=args.tpm, expires_at=expires
    )
    if args.json:
        print(json.dumps({"id": key.id, "name": key.name, "secret": key.secret}))
    else:
        print(f"Created key {key.id} ({key.name}). The secret is shown only now:\n")
        print(f"    export WRITER_API_KEY={key.secret}\n")
    if expires is not None and expires <= datetime.now(UTC).isoformat():
        print(f"inkstand: note: the key has already expired ({expires})", file=sys.stderr)
    return 0


def list_keys(store: Store, args) -> int:
    records = [k.public() for k in KeyStore(store).list()]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    columns = ("id", "name", "prefix", "models", "rpm", "tpm", "created_at", "expires_at")
    rows = [[_cell(r[c]) for c in columns] + [_state(r)] for r in records]
    _table([*columns, "state"], rows)
    return 0


def _state(record: dict) -> str:
    if record["revoked_at"]:
        return "revoked " + record["revoked_at"]
    if record["expires_at"] and record["expires_at"] <= datetime.now(UTC).isoformat():
        return "expired"
    return "last used " + (record["last_used_at"] or "never")


def revoke_key(store: Store, args) -> int:
    if KeyStore(store).revoke(args.id):
        print(f"Revoked {args.id}.")
        return 0
    print(f"inkstand: no active key with id {args.id}", file=sys.stderr)
    return 1


def report_usage(store: Store, args) -> int:
    since = parse_when(args.since) if args.since else None
    log = UsageLog(store)
    rows = log.summary(args.by or "all", key_id=args.key, since=since)
    if not args.by:
        rows = [{k: v for k, v in row.items() if k != "all"} for row in rows]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _table(list(rows[0]), [[_cell(v) for v in row.values()] for row in rows])
    else:
        print("No usage recorded" + (" for that selection." if args.key or since else "."))
    return 0


def prune_usage(store: Store, args) -> int:
    before = parse_when(args.before)
    deleted = UsageLog(store).prune(before)
    print(f"Deleted {deleted} usage records from before {before}.")
    return 0


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

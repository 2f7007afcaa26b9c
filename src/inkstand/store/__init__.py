"""The SQLite store: API keys and usage records; schema by numbered migrations."""

from inkstand.store.db import Store, open_store
from inkstand.store.keys import KeyRecord, KeyStore, NewKey
from inkstand.store.usage import UsageLog, UsageRecord

__all__ = ["KeyRecord", "KeyStore", "NewKey", "Store", "UsageLog", "UsageRecord", "open_store"]

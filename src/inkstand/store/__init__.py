"""The SQLite store: API keys now, usage and more later; schema by numbered migrations."""

from inkstand.store.db import Store, open_store
from inkstand.store.keys import KeyStore, NewKey

__all__ = ["KeyStore", "NewKey", "Store", "open_store"]

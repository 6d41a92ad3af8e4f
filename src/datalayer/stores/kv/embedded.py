"""``embedded-kv``: the key-value contract on an SQLite table with an expiry column."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from datalayer.categories.kv import KeyValuePattern, KVBackend, KVNamespace
from datalayer.query import INT64_MAX, INT64_MIN
from datalayer.stores.base import Store, StoreConfig
from datalayer.stores.shared.paths import resolve_path
from datalayer.stores.shared.sqlite_file import SQLiteFile

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID
"""
_PURGE_EVERY = 60.0


class EmbeddedKVConfig(StoreConfig):
    """An SQLite file holding every key-value pattern, each under its own key prefix."""

    type: Literal["embedded-kv"]
    path: str = ".datalayer/kv.db"
    busy_timeout: float = Field(default=30.0, gt=0, le=3600)

    def target(self) -> str:
        return self.path

    def connect(self, name: str, base_dir: Path) -> EmbeddedKVStore:
        return EmbeddedKVStore(name, self, resolve_path(self.path, base_dir))


class EmbeddedKVStore(Store[KeyValuePattern, KVNamespace]):
    def __init__(self, name: str, config: EmbeddedKVConfig, path: Path) -> None:
        super().__init__(name, config)
        self.db = SQLiteFile(path, self.label, config.busy_timeout)
        with self.db.write() as conn:
            conn.execute(_SCHEMA)
        self._last_purge = time.monotonic()

    def handle(self, pattern: KeyValuePattern) -> KVNamespace:
        return KVNamespace(pattern, EmbeddedKV(self))

    def apply(self, patterns: list[KeyValuePattern]) -> list[str]:
        return [f"key prefix '{p.key_prefix}' ready" for p in patterns]

    def ping(self) -> None:
        self.db.ping()

    def close(self) -> None:
        self.db.close()

    def purge_expired(self) -> None:
        """Drop expired keys now and then; reads already treat them as missing."""
        if time.monotonic() - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = time.monotonic()
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
            )


class EmbeddedKV(KVBackend):
    def __init__(self, store: EmbeddedKVStore) -> None:
        self.store = store

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        expires = time.time() + ttl_seconds if ttl_seconds is not None else None
        with self.store.db.write() as conn:
            conn.execute(
                "INSERT INTO kv(key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires),
            )
        self.store.purge_expired()

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        marks = ",".join("?" * len(set(keys)))
        with self.store.db.read() as conn:
            rows = conn.execute(
                f"SELECT key, value, expires_at FROM kv WHERE key IN ({marks})", list(set(keys))
            ).fetchall()
        now = time.time()
        found = {k: v for k, v, exp in rows if exp is None or exp > now}
        return [found.get(k) for k in keys]

    def delete(self, key: str) -> bool:
        with self.store.db.write() as conn:
            cursor = conn.execute(
                "DELETE FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            )
        return cursor.rowcount > 0

    def ttl(self, key: str) -> float | None:
        with self.store.db.read() as conn:
            row = conn.execute("SELECT expires_at FROM kv WHERE key = ?", (key,)).fetchone()
        now = time.time()
        if row is None or (row[0] is not None and row[0] <= now):
            raise KeyError(key)
        return None if row[0] is None else row[0] - now

    def incr(self, key: str, by: int, ttl_seconds: float | None) -> int:
        """Read, add and write under the file's write lock: one atomic step across processes."""
        now = time.time()
        with self.store.db.write() as conn:
            row = conn.execute("SELECT value, expires_at FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or (row[1] is not None and row[1] <= now):
                current, expires = 0, None if ttl_seconds is None else now + ttl_seconds
            else:
                current, expires = _integer(row[0]), row[1]
            total = current + by
            if not INT64_MIN <= total <= INT64_MAX:
                raise ValueError("the sum would be past the 64-bit integer range")
            conn.execute(
                "INSERT INTO kv(key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, str(total).encode(), expires),
            )
        return total

    def scan(self, prefix: str, cursor: str, count: int) -> tuple[list[str], str]:
        """Keys in order after ``cursor`` (the last key returned)."""
        now = time.time()
        with self.store.db.read() as conn:
            rows = conn.execute(
                "SELECT key FROM kv WHERE key > ? AND substr(key, 1, ?) = ? "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
                (cursor or prefix, len(prefix), prefix, now, count),
            ).fetchall()
        keys = [row[0] for row in rows]
        return keys, keys[-1] if len(keys) == count else ""

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        now = time.time()
        expires = now + ttl_seconds if ttl_seconds is not None else None
        with self.store.db.write() as conn:
            cursor = conn.execute(
                "INSERT INTO kv(key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at "
                "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
                (key, value, expires, now),
            )
        return cursor.rowcount > 0

    def delete_if(self, key: str, value: bytes) -> bool:
        with self.store.db.write() as conn:
            cursor = conn.execute("DELETE FROM kv WHERE key = ? AND value = ?", (key, value))
        return cursor.rowcount > 0


def _integer(raw: bytes) -> int:
    """A stored value that ``incr`` can add to: a JSON integer (as Redis's INCRBY requires)."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("the value is not an integer")
    return value

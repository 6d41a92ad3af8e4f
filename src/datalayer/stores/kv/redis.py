"""``redis``: the key-value contract on Redis (redis-py with hiredis).

Each pattern's keys live under its own prefix; TTLs are set with ``PX`` in the same command as
the value, so a key never exists without its expiry.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datalayer.categories.kv import KeyValuePattern, KVBackend, KVNamespace
from datalayer.errors import redact
from datalayer.stores.base import Store, StoreConfig, classified, require_driver
from datalayer.stores.shared.deadlines import release, watch_socket


class RedisConfig(StoreConfig):
    """A Redis URL (``redis://[:password@]host:port/db``); a reply is awaited for at most
    ``resilience.timeout``."""

    type: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://")
    connect_timeout: float = Field(default=2.0, gt=0, le=3600)
    max_connections: int = Field(default=50, ge=1, le=100_000)

    def target(self) -> str:
        return redact(self.url)

    def connect(self, name: str, base_dir: Path) -> RedisStore:
        redis = require_driver("redis", "redis", self.type)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        pool_class, connection_class = bounded_classes(self.url.startswith("rediss:"))
        pool = pool_class.from_url(
            self.url,
            connection_class=connection_class,
            socket_timeout=self.resilience.timeout.total_seconds(),
            socket_connect_timeout=self.connect_timeout,
            max_connections=self.max_connections,
            health_check_interval=30,
        )
        # The resilience policy retries, and counts: none of redis-py's own.
        client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        return RedisStore(name, self, client)


@cache
def bounded_classes(tls: bool) -> tuple[Any, Any]:
    """A pool and connection class whose commands the calling attempt bounds as a whole:
    redis-py's socket timeout is per read, so a server trickling a reply never times out."""
    import redis

    base = redis.SSLConnection if tls else redis.Connection

    class BoundedConnection(base):  # type: ignore[valid-type, misc]
        def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
            watch_socket(id(self), lambda: None if self._sock is None else self._sock.fileno())
            super().send_packed_command(*args, **kwargs)

    class BoundedPool(redis.ConnectionPool):
        def release(self, connection: Any) -> None:
            release(id(connection))
            super().release(connection)

    return BoundedPool, BoundedConnection


class RedisStore(Store[KeyValuePattern, KVNamespace]):
    def __init__(self, name: str, config: RedisConfig, client: Any) -> None:
        super().__init__(name, config)
        self.client = client

    def errors(self) -> AbstractContextManager[None]:
        """redis-py's errors as datalayer's, naming this store."""
        import redis

        return classified(
            self.label, (redis.ConnectionError,), (redis.RedisError,), (redis.TimeoutError,)
        )

    def handle(self, pattern: KeyValuePattern) -> KVNamespace:
        return KVNamespace(pattern, RedisKV(self))

    def apply(self, patterns: list[KeyValuePattern]) -> list[str]:
        self.ping()
        return [f"key prefix '{p.key_prefix}' ready" for p in patterns]

    def ping(self) -> None:
        with self.errors():
            self.client.ping()

    def close(self) -> None:
        self.client.close()


#: Delete a key while it holds a value, atomically (a script runs alone on the server).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisKV(KVBackend):
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client = store.client

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        px = max(1, round(ttl_seconds * 1000)) if ttl_seconds is not None else None
        with self.store.errors():
            self.client.set(key, value, px=px)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        with self.store.errors():
            return list(self.client.mget(keys))

    def delete(self, key: str) -> bool:
        with self.store.errors():
            return bool(self.client.delete(key))

    def ttl(self, key: str) -> float | None:
        with self.store.errors():
            millis = self.client.pttl(key)
        if millis == -2:
            raise KeyError(key)
        return None if millis == -1 else millis / 1000

    def scan(self, prefix: str, cursor: str, count: int) -> tuple[list[str], str]:
        """``SCAN`` with a ``MATCH`` of the prefix (its glob characters escaped)."""
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"
        with self.store.errors():
            after, keys = self.client.scan(int(cursor or 0), match=pattern, count=count)
        names = [k.decode() if isinstance(k, bytes) else k for k in keys]
        return names, "" if int(after) == 0 else str(after)

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        px = max(1, round(ttl_seconds * 1000)) if ttl_seconds is not None else None
        with self.store.errors():
            return bool(self.client.set(key, value, px=px, nx=True))

    def delete_if(self, key: str, value: bytes) -> bool:
        with self.store.errors():
            return bool(self.client.eval(_DELETE_IF, 1, key, value))

    def incr(self, key: str, by: int, ttl_seconds: float | None) -> int:
        """``INCRBY``; with a TTL, ``SET key 0 NX PX`` first in the same MULTI, so a key this
        creates never exists without its expiry and an existing one keeps its own."""
        import redis

        with self.store.errors():
            try:
                if ttl_seconds is None:
                    return int(self.client.incrby(key, by))
                pipe = self.client.pipeline(transaction=True)
                pipe.set(key, 0, px=max(1, round(ttl_seconds * 1000)), nx=True)
                pipe.incrby(key, by)
                return int(pipe.execute()[1])
            except redis.ResponseError as exc:  # not an integer, or past 64 bits
                raise ValueError(str(exc)) from exc

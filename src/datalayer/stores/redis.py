"""``redis``: the key-value contract on Redis (redis-py with hiredis).

The registry accepts and checks this store type now; connecting arrives with the Redis issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from datalayer.errors import NotImplementedYet, redact
from datalayer.stores.base import Store, StoreConfig


class RedisConfig(StoreConfig):
    """A Redis URL (``redis://[:pass@]host:port/db``)."""

    serves: ClassVar[frozenset[str]] = frozenset({"key-value"})
    extra: ClassVar[str | None] = "redis"

    type: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://")
    socket_timeout: float = Field(default=2.0, gt=0)

    def target(self) -> str:
        return redact(self.url)

    def connect(self, name: str, base_dir: Path) -> Store:
        raise NotImplementedYet(
            f"store '{name}': type 'redis' is accepted by the registry but not connected yet; "
            "use the embedded-kv store type (profile 'local') for now"
        )

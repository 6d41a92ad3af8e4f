"""``kafka``: the streaming contract on Apache Kafka (confluent-kafka).

The registry accepts and checks this store type now; connecting arrives with the Kafka issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from datalayer.errors import NotImplementedYet
from datalayer.stores.base import Store, StoreConfig


class KafkaConfig(StoreConfig):
    """Bootstrap servers (``host:port[,host:port]``) and client settings."""

    serves: ClassVar[frozenset[str]] = frozenset({"streaming"})
    extra: ClassVar[str | None] = "kafka"

    type: Literal["kafka"]
    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "datalayer"
    delivery_timeout_ms: int = Field(default=30_000, ge=1000)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def target(self) -> str:
        return self.bootstrap_servers

    def connect(self, name: str, base_dir: Path) -> Store:
        raise NotImplementedYet(
            f"store '{name}': type 'kafka' is accepted by the registry but not connected yet; "
            "use the embedded-log store type (profile 'local') for now"
        )

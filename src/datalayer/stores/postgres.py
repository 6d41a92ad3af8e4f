"""``postgres``: the transactional contract on PostgreSQL through SQLAlchemy 2 and psycopg 3."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import sqlalchemy as sa
from pydantic import Field

from datalayer.errors import redact
from datalayer.stores.base import StoreConfig, require_driver
from datalayer.stores.sql import SQLStore, ping_when_idle
from datalayer.stores.sqlite import migrations_folder


class PostgresConfig(StoreConfig):
    """A PostgreSQL URL (``postgresql://user:pass@host:port/db``) and its pool."""

    serves: ClassVar[frozenset[str]] = frozenset({"transactional"})
    extra: ClassVar[str | None] = "postgres"

    type: Literal["postgres"]
    url: str = Field(pattern=r"^postgres(ql)?(\+psycopg)?://")
    pool_size: int = Field(default=5, ge=1, le=200)
    max_overflow: int = Field(default=5, ge=0, le=200)
    connect_timeout: float = Field(default=5.0, gt=0)
    ping_after_idle: float = Field(default=1.0, ge=0)
    migrations: str | None = "migrations"

    def target(self) -> str:
        return redact(self.url)

    def connect(self, name: str, base_dir: Path) -> SQLStore:
        require_driver("psycopg", "postgres", self.type)
        url = self.url.split("://", 1)[1]
        engine = sa.create_engine(
            f"postgresql+psycopg://{url}",
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            connect_args={"connect_timeout": max(1, int(self.connect_timeout))},
        )
        ping_when_idle(engine, self.ping_after_idle)
        return SQLStore(name, self, engine, migrations_folder(self.migrations, base_dir))

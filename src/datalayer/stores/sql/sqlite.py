"""``sqlite``: the transactional contract on an embedded SQLite file, through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field

from datalayer.stores.base import StoreConfig
from datalayer.stores.shared.paths import migrations_folder, resolve_path
from datalayer.stores.sql.engine import SQLStore


class SQLiteConfig(StoreConfig):
    """An SQLite file; a relative ``path`` is relative to the registry's folder."""

    type: Literal["sqlite"]
    path: str = ".datalayer/local.db"
    busy_timeout: float = Field(default=30.0, gt=0, le=3600)
    migrations: str | None = "migrations"

    def target(self) -> str:
        return self.path

    def connect(self, name: str, base_dir: Path) -> SQLStore:
        file = resolve_path(self.path, base_dir)
        engine = sa.create_engine(
            f"sqlite+pysqlite:///{file}", connect_args={"timeout": self.busy_timeout}
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return SQLStore(name, self, engine, migrations_folder(self.migrations, base_dir))

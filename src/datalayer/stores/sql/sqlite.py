"""``sqlite``: the transactional contract on an embedded SQLite file, through SQLAlchemy.

Every transaction begins ``IMMEDIATE``: it holds the file's write lock from its first statement,
so transactions run one at a time (SQLite allows one writer anyway) and a read inside one sees
the latest rows and keeps them until it ends. pysqlite's own BEGIN came only before a write, so
a read before it ran outside the transaction and a read-modify-write could lose another; as
SQLAlchemy documents for pysqlite, we turn that off and emit BEGIN ourselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

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
            dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN: "_begin" does
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                return  # a single read outside any transaction (SQLStore.reading)
            # Returning an AUTOCOMMIT connection to the pool set pysqlite's mode back.
            conn.connection.dbapi_connection.isolation_level = None  # type: ignore[union-attr]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return SQLiteStore(name, self, engine, migrations_folder(self.migrations, base_dir))


class SQLiteStore(SQLStore):
    """SQLStore whose ping is a read outside any transaction: it must not wait for the write
    lock a long transaction holds."""

    def ping(self) -> None:
        with self.reading() as conn:
            conn.execute(sa.text("SELECT 1"))

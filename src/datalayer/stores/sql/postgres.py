"""``postgres``: the transactional contract on PostgreSQL through SQLAlchemy 2 and psycopg 3."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from datalayer.errors import redact
from datalayer.resilience import current_attempt
from datalayer.stores.base import StoreConfig, require_driver
from datalayer.stores.shared.deadlines import release, watch_socket
from datalayer.stores.shared.paths import migrations_folder
from datalayer.stores.shared.postgres_urls import libpq_url, sqlalchemy_url
from datalayer.stores.sql.engine import SQLStore, SQLTable, classify, ping_when_idle

log = logging.getLogger(__name__)


class PostgresConfig(StoreConfig):
    """A PostgreSQL URL (``postgresql://user:pass@host:port/db``) and its pool."""

    type: Literal["postgres"]
    url: str = Field(pattern=r"^postgres(ql)?(\+psycopg)?://")
    pool_size: int = Field(default=5, ge=1, le=200)
    max_overflow: int = Field(default=5, ge=0, le=200)
    connect_timeout: float = Field(default=5.0, gt=0, le=3600)
    ping_after_idle: float = Field(default=1.0, ge=0, le=86_400)
    migrations: str | None = "migrations"
    #: Streaming replicas of this server: reads of patterns with ``reads: replica`` go there.
    replicas: list[Annotated[str, Field(pattern=r"^postgres(ql)?(\+psycopg)?://")]] = Field(
        default_factory=list, max_length=32
    )

    def target(self) -> str:
        if not self.replicas:
            return redact(self.url)
        return f"{redact(self.url)} (+{len(self.replicas)} read replica(s))"

    def connect(self, name: str, base_dir: Path) -> SQLStore:
        require_driver("psycopg", "postgres", self.type)
        engines = [self._engine(url) for url in [self.url, *self.replicas]]
        folder = migrations_folder(self.migrations, base_dir)
        return PostgresStore(name, self, engines[0], folder, engines[1:])

    def _engine(self, url: str) -> sa.Engine:
        engine = sa.create_engine(
            sqlalchemy_url(url),
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            pool_timeout=self.resilience.timeout.total_seconds(),
            connect_args={"connect_timeout": max(1, int(self.connect_timeout))},
        )
        bound_by_attempts(engine)
        ping_when_idle(engine, self.ping_after_idle)
        return engine


def watch(conn: Any) -> None:
    """Bound the calling attempt's wait on this psycopg connection: libpq waits on a frozen
    server forever (the kernel still acknowledges), so the watchdog shuts its socket."""
    watch_socket(id(conn), lambda: None if conn.closed else conn.pgconn.socket)


def connect_timeout(configured: int) -> int:
    """Seconds a new connection may take: the store's, cut to what the calling attempt has
    left; libpq's floor is 2 s, so a frozen server may hold a connect that long."""
    attempt = current_attempt()
    if attempt is None:
        return configured
    left = attempt.left()
    if left <= 0:
        import psycopg

        raise psycopg.OperationalError("no time left to open a connection")
    return max(2, min(configured, math.ceil(left)))


def bound_by_attempts(engine: sa.Engine) -> None:
    """Watch every pooled connection while an attempt uses it (checked out, or running a
    statement, COMMIT or ROLLBACK of an open transaction), and never after it is handed back
    to the pool."""

    @sa.event.listens_for(engine, "do_connect")
    def _connecting(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["connect_timeout"] = connect_timeout(cparams["connect_timeout"])

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        watch(dbapi_connection)

    @sa.event.listens_for(engine, "before_cursor_execute")
    @sa.event.listens_for(engine, "commit")
    @sa.event.listens_for(engine, "rollback")
    def _executing(conn: sa.Connection, *_args: Any) -> None:
        if not conn.invalidated:  # a dead connection has nothing left to wait on
            watch(conn.connection.dbapi_connection)

    @sa.event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, _record: Any) -> None:
        release(id(dbapi_connection))


#: No answer yet (a row may be None: no row).
_NONE = object()


class PostgresStore(SQLStore):
    """SQLStore with a direct read by key: the model-service hot path.

    Outside a transaction, ``get`` runs a server-side prepared statement on a connection held
    per thread, in autocommit: one round trip, no pool checkout, no SQLAlchemy statement
    building. Inside a transaction it reads through the transaction like every other call.
    """

    config: PostgresConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._direct: list[Any] = []
        self._statements: dict[str, tuple[str, list[str]]] = {}
        self._lock = threading.Lock()

    def aborted(self, conn: Connection) -> bool:
        from psycopg.pq import TransactionStatus

        raw = conn.connection.dbapi_connection
        return raw is not None and raw.info.transaction_status == TransactionStatus.INERROR

    def _connection(self, url: str) -> Any:
        """This thread's direct connection to ``url`` (the primary, or a read replica)."""
        held: dict[str, Any] = self._local.__dict__.setdefault("conns", {})
        conn = held.get(url)
        if conn is None or conn.closed:
            import psycopg

            conn = psycopg.connect(
                libpq_url(url),
                autocommit=True,
                connect_timeout=connect_timeout(max(1, int(self.config.connect_timeout))),
                prepare_threshold=0,
            )
            held[url] = conn
            with self._lock:
                self._direct.append(conn)
        return conn

    def _forget(self, url: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(url, None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._direct.remove(conn)

    def _statement(self, table: SQLTable) -> tuple[str, list[str]]:
        if table.table.name not in self._statements:
            compiled = table.key_select().compile(self.engine)
            self._statements[table.table.name] = (
                str(compiled),
                [c.name for c in table.table.columns],
            )
        return self._statements[table.table.name]

    def get_row(
        self, table: SQLTable, key: dict[str, Any], *, for_update: bool = False
    ) -> dict[str, Any] | None:
        if for_update or self._current.get() is not None:
            return super().get_row(table, key, for_update=for_update)
        import psycopg

        sql, columns = self._statement(table)
        params = {f"key_{c}": v for c, v in key.items()}
        row: Any = _NONE
        if table.replica and self.replicas:
            row = self._replica_row(sql, params)
        for tries_left in (1, 0):
            if row is not _NONE:
                break
            try:
                conn = self._connection(self.config.url)
                watch(conn)
                row = conn.execute(sql, params).fetchone()
            except psycopg.OperationalError as exc:
                self._forget(self.config.url)  # a dead connection (a restart?): once more, anew
                attempt = current_attempt()
                if not tries_left or (attempt is not None and attempt.expired):
                    raise classify(self.label, exc) from exc
            except psycopg.Error as exc:
                raise classify(self.label, exc) from exc
        if row is None:
            return None
        return {
            name: value.astimezone(UTC) if isinstance(value, datetime) else value
            for name, value in zip(columns, row, strict=True)
        }

    def _replica_row(self, sql: str, params: dict[str, Any]) -> Any:
        """The row from the next read replica; ``_NONE`` when it cannot be reached (logged:
        the primary answers instead)."""
        import psycopg

        self._turn = (self._turn + 1) % len(self.config.replicas)
        url = self.config.replicas[self._turn]
        try:
            conn = self._connection(url)
            watch(conn)
            return conn.execute(sql, params).fetchone()
        except psycopg.OperationalError as exc:
            self._forget(url)
            log.warning(
                "%s: a read replica is unreachable, reading the primary: %s", self.label, exc
            )
            return _NONE
        except psycopg.Error as exc:
            raise classify(self.label, exc) from exc

    def lock_missing(self, conn: Connection, table: SQLTable, key: dict[str, Any]) -> bool:
        """``FOR UPDATE`` has no row to lock: take a transaction-scoped advisory lock on a
        64-bit hash of the table and key instead (a collision only makes one wait longer)."""
        text = json.dumps([table.table.name, [str(key[c]) for c in table.key]])
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest, "big", signed=True)))
        )
        return True

    def close(self) -> None:
        with self._lock:
            for conn in self._direct:
                conn.close()
            self._direct.clear()
        super().close()

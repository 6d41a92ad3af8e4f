"""The transactional contract on SQLAlchemy 2, shared by the ``sqlite`` and ``postgres`` types.

Columns come from the pattern's pydantic schema; every value travels as a bound parameter and
every identifier is checked against the registry's safe-identifier rule before it gets here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError

from datalayer.categories.transactional import (
    TransactionalBackend,
    TransactionalPattern,
    TransactionalTable,
)
from datalayer.errors import (
    Conflict,
    DataLayerError,
    NotApplied,
    QueryError,
    StoreLabel,
    StoreUnavailable,
)
from datalayer.migrations import Migrations, has_environment
from datalayer.query import Condition, SortKey
from datalayer.stores.base import Store, StoreConfig
from datalayer.stores.sql.types import column_type

log = logging.getLogger(__name__)


def build_table(pattern: TransactionalPattern, metadata: sa.MetaData) -> sa.Table:
    """The SQLAlchemy table for a pattern, from its schema's fields."""
    schema = pattern.schema_cls
    assert schema is not None, "the loader resolves transactional schemas"
    columns = []
    for name, field in schema.model_fields.items():
        sql_type, nullable = column_type(field.annotation, field.metadata)
        is_key = name in pattern.key
        columns.append(
            sa.Column(
                name,
                sql_type,
                primary_key=is_key,
                nullable=(nullable or not field.is_required()) and not is_key,
                index=name in pattern.indexes,
            )
        )
    return sa.Table(pattern.table, metadata, *columns)


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a round trip only if it sat unused for ``idle_seconds``.

    A dead connection (the server restarted) is then replaced before use, as ``pool_pre_ping``
    would, without paying a ping on every checkout of a busy pool.
    """

    @sa.event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()  # leave no transaction open behind the ping
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc


#: PostgreSQL SQLSTATEs (and their classes) by what they mean to a caller.
_CONFLICT = {"40001", "40P01"}  # serialization failure, deadlock
_NOT_APPLIED = {"42P01"}  # undefined table
_UNAVAILABLE_CLASSES = ("08", "53", "57P")  # connection, resources, shutdown or restart
_DATA_EXCEPTION = "22"  # invalid text for a type, numeric out of range, division by zero


def classify(
    label: StoreLabel, orig: BaseException, *, invalidated: bool = False
) -> DataLayerError:
    """One driver error (psycopg or sqlite3) as the datalayer error that says what to do.

    The message is the driver's own primary text: never the statement, never its values."""
    state = getattr(orig, "sqlstate", None) or ""
    message = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig)
    if state in _CONFLICT:
        return Conflict(
            f"{label}: the transaction was rolled back, run it again: {message}", store=label.name
        )
    if state in _NOT_APPLIED or message.startswith("no such table"):
        return NotApplied(f"{label}: {message}; run 'datalayer apply'", store=label.name)
    if state.startswith(_DATA_EXCEPTION):  # PostgreSQL's text quotes the offending value
        return QueryError(
            f"{label}: the database refused a value (SQLSTATE {state}: "
            f"{type(orig).__name__}); check each filter value against its column's type",
            store=label.name,
        )
    if (
        invalidated
        or state.startswith(_UNAVAILABLE_CLASSES)
        or (not state and isinstance(orig, _operational_errors()))
    ):
        return StoreUnavailable(f"{label} is unavailable: {message}", store=label.name)
    return DataLayerError(f"{label}: {message}", store=label.name)


def _operational_errors() -> tuple[type[BaseException], ...]:
    """The drivers' "could not talk to the database" classes (psycopg's when installed)."""
    import sqlite3

    try:
        import psycopg
    except ImportError:
        return (sqlite3.OperationalError,)
    return (sqlite3.OperationalError, psycopg.OperationalError)


class SQLStore(Store[TransactionalPattern, TransactionalTable]):
    """A SQLAlchemy engine serving transactional patterns."""

    def __init__(
        self,
        name: str,
        config: StoreConfig,
        engine: Engine,
        migrations_dir: Path | None = None,
        replicas: Sequence[Engine] = (),
    ) -> None:
        super().__init__(name, config)
        self.engine = engine
        self.migrations_dir = migrations_dir
        #: Read replicas: ``get``, ``query`` and ``count`` of patterns with ``reads: replica``
        #: outside a transaction, in turn.
        self.replicas = list(replicas)
        self._turn = 0
        self.metadata = sa.MetaData()
        self._current: ContextVar[Connection | None] = ContextVar(f"tx-{name}", default=None)

    def handle(self, pattern: TransactionalPattern) -> TransactionalTable:
        return TransactionalTable(pattern, self.backend(pattern))

    def backend(self, pattern: TransactionalPattern) -> SQLTable:
        table = self.metadata.tables.get(pattern.table)
        if table is None:
            table = build_table(pattern, self.metadata)
        return SQLTable(self, table, pattern.key, replica=pattern.reads == "replica")

    def migrations(self, patterns: Sequence[TransactionalPattern]) -> Migrations:
        """Alembic on this store, with the given patterns' tables as target metadata."""
        for pattern in patterns:
            self.backend(pattern)
        folder = self.migrations_dir or Path("migrations")
        return Migrations(folder, self.engine, self.metadata, self.label)

    def apply(self, patterns: list[TransactionalPattern]) -> list[str]:
        """Upgrade to the newest revision; without a migrations environment, create the
        tables that do not exist yet.

        With one, every table comes from a revision: a table no revision has is reported with
        the command that makes its revision, as is a table that lacks a column of its schema
        (it is never altered outside a revision).
        """
        tables = [self.backend(p).table for p in patterns]
        done = []
        migrated = has_environment(self.migrations_dir)
        with self.errors():
            if migrated:
                migrations = self.migrations(patterns)
                before = migrations.current()
                migrations.upgrade("head")
                after = migrations.current()
                moved = f" (was {before or 'base'})" if before != after else ""
                done.append(f"migrations at revision {after or 'base'}{moved}")
            with self.engine.begin() as conn:
                inspector = sa.inspect(conn)
                for table in tables:
                    if not inspector.has_table(table.name):
                        if migrated:
                            done.append(
                                f"warning: table '{table.name}' is in no revision yet: run "
                                f"'datalayer migrations new -m \"add {table.name}\"' then "
                                "'datalayer apply'"
                            )
                        else:
                            table.create(conn)
                            done.append(f"table '{table.name}' created")
                        continue
                    present = {column["name"] for column in inspector.get_columns(table.name)}
                    missing = [c.name for c in table.columns if c.name not in present]
                    if missing:
                        done.append(
                            f"warning: table '{table.name}' lacks columns {missing}: "
                            "run 'datalayer migrations new -m ...' then 'datalayer apply'"
                        )
                    else:
                        done.append(f"table '{table.name}' exists")
        return done

    def ping(self) -> None:
        """A round trip to the primary and to each read replica (a replica that does not
        answer is a failure here, though reads fall back to the primary meanwhile)."""
        for number, engine in enumerate([self.engine, *self.replicas]):
            try:
                with self.guard.bounded(), self.errors(), engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
            except StoreUnavailable as exc:
                if not number:
                    raise
                raise StoreUnavailable(
                    f"read replica {number} of {len(self.replicas)}: {exc.message}",
                    store=self.name,
                ) from exc

    def close(self) -> None:
        for engine in [self.engine, *self.replicas]:
            engine.dispose()

    def get_row(
        self, table: SQLTable, key: dict[str, Any], *, for_update: bool = False
    ) -> dict[str, Any] | None:
        """One row by key; a store type may serve this hot path more directly. ``for_update``
        locks the key until the open transaction ends, row or no row (``lock_missing``)."""
        params = {f"key_{c}": v for c, v in key.items()}
        if not for_update:
            with self.reading(table.replica) as conn:
                row = conn.execute(table.key_select(), params).mappings().first()
            return dict(row) if row is not None else None
        if self._current.get() is None:
            raise QueryError(
                f"{self.label}: get(..., for_update=True) on table '{table.table.name}' locks "
                "the row until its transaction ends: call it inside transaction()"
            )
        locking = table.key_select().with_for_update()
        with self.reading() as conn:
            row = conn.execute(locking, params).mappings().first()
            if row is None and self.lock_missing(conn, table, key):
                row = conn.execute(locking, params).mappings().first()
        return dict(row) if row is not None else None

    def lock_missing(self, conn: Connection, table: SQLTable, key: dict[str, Any]) -> bool:
        """Lock a key no row has, until the transaction ends, so two transactions that both
        find it missing cannot both create it; True if it took a lock (the caller reads again).
        None is needed by default: SQLite's transactions hold the whole file's write lock."""
        return False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for every table of this store until the block ends; nests by joining."""
        if self._current.get() is not None:
            yield
            return
        with self.guard.attempt(), self.errors():  # BEGIN and COMMIT are bounded calls too
            conn = self.engine.connect()
            transaction = conn.begin()
        token = self._current.set(conn)
        try:
            yield
        except BaseException:
            with suppress(DataLayerError), self.guard.bounded(), self.errors():
                transaction.rollback()  # a dead connection must not hide the block's error
            raise
        else:
            if self.aborted(conn):
                with suppress(DataLayerError), self.guard.bounded(), self.errors():
                    transaction.rollback()
                raise DataLayerError(
                    f"{self.label}: a statement of the transaction failed and its error was "
                    "caught inside the block; the database aborted the transaction, so nothing "
                    "of the block was committed",
                    store=self.name,
                )
            try:
                with self.guard.attempt(), self.errors():
                    transaction.commit()
            except StoreUnavailable as exc:
                raise type(exc)(
                    f"{exc.message}; the COMMIT was sent but never confirmed, so the "
                    "transaction may or may not have been applied",
                    store=exc.store,
                ) from exc.__cause__
        finally:
            self._current.reset(token)
            conn.close()

    def aborted(self, conn: Connection) -> bool:
        """Whether the database aborted the open transaction after a failed statement (it
        would answer COMMIT with a rollback); SQLite does not abort on one."""
        return False

    def in_transaction(self) -> bool:
        return self._current.get() is not None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The open transaction's connection, or a fresh one committed on exit."""
        current = self._current.get()
        if current is not None:
            with self.errors():
                yield current
            return
        with self.errors(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def reading(self, replica: bool = False) -> Iterator[Connection]:
        """A connection for a read: the open transaction's, else one in autocommit mode, which
        spares the BEGIN and COMMIT round trips of a transaction around one SELECT. With
        ``replica``, outside a transaction, the next read replica's (the primary's when it
        has none, or when the replica cannot be reached: logged)."""
        current = self._current.get()
        if current is not None:
            with self.errors():
                yield current
            return
        engine = self.engine
        if replica and self.replicas:
            engine = self.next_replica()
            try:
                conn = engine.connect()
            except SQLAlchemyError as exc:
                log.warning(
                    "%s: a read replica is unreachable, reading the primary: %s", self.label, exc
                )
                engine = self.engine
            else:
                with self.errors(), conn:
                    yield conn.execution_options(isolation_level="AUTOCOMMIT")
                return
        with self.errors(), engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def next_replica(self) -> Engine:
        """The next read replica, in turn."""
        self._turn = (self._turn + 1) % len(self.replicas)
        return self.replicas[self._turn]

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Driver errors as datalayer errors naming this store; the driver's kept as cause."""
        try:
            yield
        except DataLayerError:
            raise
        except DBAPIError as exc:
            orig = exc.orig if exc.orig is not None else exc
            raise classify(self.label, orig, invalidated=exc.connection_invalidated) from exc
        except SQLAlchemyError as exc:
            refused = getattr(exc, "orig", None)
            if isinstance(refused, DataLayerError):  # a column type refused a value to bind
                raise refused from refused.__cause__
            # str(exc) appends the statement and its bound values: name only what failed
            detail = (
                refused if isinstance(refused, BaseException) else exc.args[0] if exc.args else ""
            )
            raise DataLayerError(
                f"{self.label}: {type(refused or exc).__name__}: {detail}", store=self.name
            ) from exc


class SQLTable(TransactionalBackend):
    """One table of a SQL store: validated rows in, rows as dicts out, values always bound."""

    def retry_safe_now(self) -> bool:
        """Not inside a transaction: its earlier statements died with the connection."""
        return not self.store.in_transaction()

    def __init__(
        self, store: SQLStore, table: sa.Table, key: Sequence[str], *, replica: bool = False
    ) -> None:
        self.store = store
        self.table = table
        self.key = list(key)
        #: Reads (outside a transaction) go to the store's read replicas.
        self.replica = replica
        self._json_columns = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        self._value_columns = [c.name for c in table.columns if c.name not in self.key]

    def row_values(self, model: BaseModel) -> dict[str, Any]:
        python = model.model_dump()
        if not self._json_columns:
            return python
        as_json = model.model_dump(mode="json")
        return {k: as_json[k] if k in self._json_columns else v for k, v in python.items()}

    def upsert(self, rows: list[BaseModel]) -> None:
        values = [self.row_values(row) for row in rows]
        with self.store.connection() as conn:
            stmt = self._insert(conn)
            if self._value_columns:
                stmt = stmt.on_conflict_do_update(
                    index_elements=self.key,
                    set_={c: stmt.excluded[c] for c in self._value_columns},
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=self.key)
            conn.execute(stmt, values)

    def add(self, row: BaseModel) -> bool:
        with self.store.connection() as conn:
            stmt = self._insert(conn).on_conflict_do_nothing(index_elements=self.key)
            # RETURNING says whether it inserted (psycopg's rowcount here is -1)
            stmt = stmt.returning(self.table.c[self.key[0]])
            return conn.execute(stmt, self.row_values(row)).first() is not None

    def _insert(self, conn: Connection) -> Any:
        """The dialect's INSERT, which has ON CONFLICT."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise DataLayerError(
                f"{self.store.label}: upsert is not implemented for {dialect}",
                store=self.store.name,
            )
        return insert(self.table)

    def scan(self, after: dict[str, Any] | None, count: int) -> list[dict[str, Any]]:
        columns = [self.table.c[c] for c in self.key]
        stmt = sa.select(*columns).order_by(*columns).limit(count)
        if after is not None:  # a row comparison: the next keys in the order, composite too
            bound = [sa.bindparam(None, after[c.name], type_=c.type) for c in columns]
            stmt = stmt.where(sa.tuple_(*columns) > sa.tuple_(*bound))
        with self.store.reading() as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def key_select(self) -> sa.Select[Any]:
        """SELECT of one row by its key, with one bound parameter per key column."""
        return sa.select(self.table).where(
            *(self.table.c[c] == sa.bindparam(f"key_{c}") for c in self.key)
        )

    def get(self, key: dict[str, Any], *, for_update: bool = False) -> dict[str, Any] | None:
        return self.store.get_row(self, key, for_update=for_update)

    def delete(self, key: dict[str, Any]) -> bool:
        where = sa.and_(*(self.table.c[c] == v for c, v in key.items()))
        with self.store.connection() as conn:
            result = conn.execute(sa.delete(self.table).where(where))
        return bool(result.rowcount)

    def _condition(self, cond: Condition) -> sa.ColumnElement[bool]:
        column = self.table.c[cond.field]
        if cond.op == "$eq":
            return column.is_(None) if cond.value is None else column == cond.value
        if cond.op == "$in":  # None in the list matches NULL, as equality with None does
            values = [v for v in cond.value if v is not None]
            within = column.in_(values) if values else sa.false()  # an empty IN on a JSON
            if len(values) < len(cond.value):  # column fails on PostgreSQL
                return sa.or_(within, column.is_(None))
            return within
        if cond.op == "$exists":
            return column.is_not(None) if cond.value else column.is_(None)
        compare = {
            "$gt": column.__gt__,
            "$gte": column.__ge__,
            "$lt": column.__lt__,
            "$lte": column.__le__,
        }
        return compare[cond.op](cond.value)

    def _select(self, conditions: list[Condition]) -> sa.Select[Any]:
        return sa.select(self.table).where(*(self._condition(c) for c in conditions))

    def select(
        self, conditions: list[Condition], order: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        stmt = self._select(conditions)
        for key in order:
            column = self.table.c[key.field]
            stmt = stmt.order_by(
                column.desc().nulls_last() if key.descending else column.asc().nulls_first()
            )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.store.reading(self.replica) as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def count(self, conditions: list[Condition]) -> int:
        stmt = sa.select(sa.func.count()).select_from(self._select(conditions).subquery())
        with self.store.reading(self.replica) as conn:
            return int(conn.execute(stmt).scalar_one())

    def transaction(self) -> AbstractContextManager[None]:
        return self.store.transaction()

    def doomed(self) -> bool:
        current = self.store._current.get()
        return current is not None and self.store.aborted(current)

"""The transactional contract: rows that must stay consistent (services, accounts).

Guarantees every implementation keeps:
- ``put`` is an upsert by primary key; ``put_many`` writes all rows or none.
- Every row is validated against the pattern's schema before anything is written; a row that
  fails raises ``PayloadValidationError`` naming the field, and nothing of the call is written.
  So does a value some store would not keep exactly: an integer past 64 bits, NaN, infinity,
  text with NUL (PostgreSQL refuses it) or a lone surrogate (no UTF-8 form), in any field.
- A ``Decimal`` field keeps every digit, never through a float: the digits its schema declares
  (``max_digits``, ``decimal_places``; more are refused by validation, naming the field), or
  any number of them when it declares none. Filters and sorts on it compare numbers.
- Inside ``transaction()`` every operation on any pattern of the same store shares one database
  transaction: it commits when the block ends and rolls back entirely if the block raises.
  A statement the database refused, its error caught inside the block, makes the block's end
  raise on a database that aborts the transaction then (PostgreSQL; nothing is kept), where
  it would otherwise end as if it had committed; SQLite commits the rest.
- Read-modify-write is safe with ``get(key, for_update=True)`` inside ``transaction()``: no
  other transaction can change or create that key until this one ends, whether or not a row
  was there (PostgreSQL: ``SELECT ... FOR UPDATE``, plus a transaction-scoped lock on a key no
  row has yet; SQLite: every transaction holds the file's write lock from its start, ``BEGIN
  IMMEDIATE``). Outside ``transaction()`` it raises ``QueryError``: the lock would end with the
  read. A deadlock between such transactions raises ``Conflict``; nothing of the loser is kept.
- ``query`` takes the shared filter language (equality, ``$in``, ``$gt/$gte/$lt/$lte``,
  ``$exists``) on columns, an order (``"-col"`` descends) and a limit, all as bound parameters.
  A filter or key value compares only with a column of its kind (text, numbers, true/false,
  datetimes, dates; a JSON column with None and ``$exists`` only), else ``QueryError`` on every
  store (SQLite used to convert ``0`` to ``'0'``, PostgreSQL to fail).
- Reads return plain dicts of column values; a missing key reads as ``None``.
- ``scan`` lists keys in key order after a given key, and ``add`` inserts a row only where its
  key has none, in one statement: a rollout's backfill copies rows with them, never over a
  row written meanwhile.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import enum
import types
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, field_validator

from datalayer.errors import QueryError, shown
from datalayer.patterns import (
    PatternConfig,
    RolloutConfig,
    Target,
    check_storable,
    validate_model,
)
from datalayer.query import (
    Condition,
    SortKey,
    check_limit,
    check_value,
    parse_filter,
    parse_sort,
)
from datalayer.resilience import GuardedOperations
from datalayer.validators import SqlIdentifier, TableName

if TYPE_CHECKING:
    from datalayer.migrations import Migrations


class TransactionalPattern(PatternConfig):
    """A table of rows with a primary key; the schema defines the columns."""

    accessor: ClassVar[str] = "transactional"

    category: Literal["transactional"]
    table: TableName
    key: list[SqlIdentifier] = Field(min_length=1)
    schema_: str = Field(alias="schema")
    indexes: list[SqlIdentifier] = Field(default_factory=list)
    rollout: RolloutConfig | None = None
    #: ``replica``: ``get``, ``query`` and ``count`` outside a transaction read the store's
    #: read replicas (which may lag the primary); the primary when it has none.
    reads: Literal["primary", "replica"] = "primary"

    @field_validator("key", mode="before")
    @classmethod
    def _key_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        for column in self.key:
            yield "key", column
        for column in self.indexes:
            yield "indexes", column

    def targets(self) -> list[Target]:
        return [Target("table", "table", self.table)]


Key = Any  # a scalar for single-column keys, a tuple or mapping for composite keys


class TransactionalBackend(GuardedOperations, ABC):
    """What a store provides for one table: validated rows, keys as ``{column: value}`` and
    parsed filters on known columns; it returns plain dicts of column values."""

    operations: ClassVar[Mapping[str, bool]] = {
        "get": True,
        "upsert": True,
        "delete": True,
        "select": True,
        "count": True,
    }

    @abstractmethod
    def get(self, key: dict[str, Any], *, for_update: bool = False) -> dict[str, Any] | None:
        """One row; ``for_update`` also locks its key until the open transaction ends (and
        raises ``QueryError`` when none is open)."""

    @abstractmethod
    def upsert(self, rows: list[BaseModel]) -> None:
        """Insert or replace every row by its key, all or none."""

    @abstractmethod
    def delete(self, key: dict[str, Any]) -> bool: ...

    @abstractmethod
    def select(
        self, conditions: list[Condition], order: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def count(self, conditions: list[Condition]) -> int: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A transaction spanning every pattern of this store until the block ends."""

    def doomed(self) -> bool:
        """Whether the open transaction can no longer commit (the database aborted it after
        a failed statement); False outside one."""
        return False

    @abstractmethod
    def scan(self, after: dict[str, Any] | None, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` keys (``{column: value}``) in key order, after ``after`` (None to
        begin): a rollout's backfill goes through a table by them, resuming where it stopped."""

    @abstractmethod
    def add(self, row: BaseModel) -> bool:
        """Insert ``row`` only when no row has its key, in one step; whether it was."""


@runtime_checkable
class Migratable(Protocol):
    """A transactional store whose schema Alembic migrates."""

    def migrations(self, patterns: Sequence[TransactionalPattern]) -> Migrations: ...


class TransactionalTable:
    """One transactional pattern bound to its store."""

    def __init__(self, pattern: TransactionalPattern, backend: TransactionalBackend) -> None:
        self.pattern = pattern
        self.backend = backend
        schema = pattern.schema_cls
        assert schema is not None, "the loader resolves transactional schemas"
        self.schema: type[BaseModel] = schema
        self.columns = list(schema.model_fields)
        self.kinds = {name: filter_kind(f.annotation) for name, f in schema.model_fields.items()}

    def get(self, key: Key, *, for_update: bool = False) -> dict[str, Any] | None:
        """One row by key, ``None`` if missing. ``for_update=True``, inside ``transaction()``
        only, locks the key until the transaction ends: the safe read of a read-modify-write."""
        if for_update:
            return self.backend.get(self.key_values(key), for_update=True)
        return self.backend.get(self.key_values(key))

    def put(self, row: Any) -> None:
        self.backend.upsert([self.validated(row)])

    def put_many(self, rows: Iterable[Any]) -> int:
        """Upsert every row, all or none. Rows are written in key order, so two calls that
        share keys lock them in the same order and never deadlock each other."""
        models = [self.validated(row) for row in rows]
        if models:
            with contextlib.suppress(TypeError):  # keys of a type without an order
                models.sort(key=attrgetter(*self.pattern.key))
            self.backend.upsert(models)
        return len(models)

    def validated(self, row: Any) -> BaseModel:
        """The row as its schema's model, checked to hold only values every store keeps."""
        model = validate_model(self.pattern.name, self.schema, row)
        check_storable(self.pattern.name, model)
        return model

    def delete(self, key: Key) -> bool:
        return self.backend.delete(self.key_values(key))

    def query(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        order = parse_sort(order_by)
        for key in order:
            self.check_column(key.field)
        return self.backend.select(self.conditions(where), order, check_limit(limit))

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        return self.backend.count(self.conditions(where))

    def transaction(self) -> AbstractContextManager[None]:
        """A transaction spanning every pattern of this store until the block ends."""
        return self.backend.transaction()

    def conditions(self, where: Mapping[str, Any] | None) -> list[Condition]:
        conditions = parse_filter(where)
        for condition in conditions:
            self.check_column(condition.field)
            if condition.op != "$exists":
                values = condition.value if condition.op == "$in" else [condition.value]
                for value in values:
                    self.check_kind(condition.field, value)
        return conditions

    def check_kind(self, column: str, value: Any) -> None:
        """Refuse a filter or key value its column never holds (text for a number, a number
        for text...): the stores disagreed on them (SQLite converts, PostgreSQL fails), and
        a JSON column compares only with None and ``$exists``."""
        kind = self.kinds.get(column)
        if value is None or kind is None or _is_kind(value, kind):
            return
        if isinstance(value, datetime.datetime) and not _in_utc_range(value):
            raise QueryError(
                f"pattern '{self.pattern.name}': column '{column}': {value.isoformat()} has no "
                "UTC instant Python can hold"
            )
        holds = _KIND_TEXT[kind]
        raise QueryError(
            f"pattern '{self.pattern.name}': column '{column}' holds {holds}; "
            f"a filter or key cannot compare it with a {type(value).__name__}"
        )

    def check_column(self, name: str) -> None:
        if name not in self.columns:
            raise QueryError(
                f"pattern '{self.pattern.name}': no column {shown(name)}; "
                f"columns: {', '.join(self.columns)}"
            )

    def key_values(self, key: Key) -> dict[str, Any]:
        """Normalise a key argument to ``{column: value}``; a value no row can hold (an integer
        past 64 bits, text with NUL or a lone surrogate) is a ``QueryError``."""
        columns = self.pattern.key
        if isinstance(key, Mapping):
            missing = [c for c in columns if c not in key]
            if missing:
                raise QueryError(f"pattern '{self.pattern.name}': key is missing {missing}")
            values = tuple(key[c] for c in columns)
        else:
            values = tuple(key) if isinstance(key, tuple | list) else (key,)
        if len(values) != len(columns):
            raise QueryError(
                f"pattern '{self.pattern.name}': key needs {len(columns)} value(s) "
                f"for {columns}, got {len(values)}"
            )
        for column, value in zip(columns, values, strict=True):
            check_value(column, value)
            if value is None:
                raise QueryError(f"pattern '{self.pattern.name}': key column '{column}' is None")
            self.check_kind(column, value)
        return dict(zip(columns, values, strict=True))


#: What a column of each filter kind holds, as errors say it.
_KIND_TEXT = {
    "text": "text",
    "number": "numbers",
    "bool": "true or false",
    "datetime": "datetimes",
    "date": "dates",
    "json": "objects or lists (filter it with None or $exists only)",
}


def filter_kind(annotation: Any) -> str | None:
    """What a column of this annotation compares with in a filter (a key of ``_KIND_TEXT``),
    as ``stores/sql/types.column_type`` stores it; None for types not checked (UUIDs, enums)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return filter_kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return filter_kind(args[0]) if len(args) == 1 else "json"
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return "text"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "number"
        return None
    if not isinstance(annotation, type):
        return "json" if origin in (dict, list, tuple, set, frozenset) else None
    if issubclass(annotation, enum.Enum | uuid.UUID):
        return None
    for python_type, kind in _SIMPLE_KINDS:
        if issubclass(annotation, python_type):
            return kind
    return "json"


_SIMPLE_KINDS: list[tuple[type, str]] = [
    (bool, "bool"),
    (int, "number"),
    (float, "number"),
    (decimal.Decimal, "number"),
    (datetime.datetime, "datetime"),
    (datetime.date, "date"),
    (str, "text"),
]


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "datetime":
        return isinstance(value, datetime.datetime) and _in_utc_range(value)
    if kind == "date":
        return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
    return False  # json: only None


def _in_utc_range(value: datetime.datetime) -> bool:
    """Whether an aware datetime has a UTC instant Python can hold (year 1 at +05:30 has not)."""
    if value.tzinfo is None:
        return True
    try:
        value.astimezone(datetime.UTC)
    except OverflowError:
        return False
    return True

"""The transactional contract: rows that must stay consistent (services, accounts).

Guarantees every implementation keeps:
- ``put`` is an upsert by primary key; ``put_many`` writes all rows or none.
- Every row is validated against the pattern's schema before anything is written; a row that
  fails raises ``PayloadValidationError`` naming the field, and nothing of the call is written.
  So does a value some store would not keep exactly: an integer past 64 bits, NaN, infinity.
- A ``Decimal`` field keeps every digit, never through a float: the digits its schema declares
  (``max_digits``, ``decimal_places``; more are refused by validation, naming the field), or
  any number of them when it declares none. Filters and sorts on it compare numbers.
- Inside ``transaction()`` every operation on any pattern of the same store shares one database
  transaction: it commits when the block ends and rolls back entirely if the block raises.
- Read-modify-write is safe with ``get(key, for_update=True)`` inside ``transaction()``: no
  other transaction can change or create that key until this one ends, whether or not a row
  was there (PostgreSQL: ``SELECT ... FOR UPDATE``, plus a transaction-scoped lock on a key no
  row has yet; SQLite: every transaction holds the file's write lock from its start, ``BEGIN
  IMMEDIATE``). Outside ``transaction()`` it raises ``QueryError``: the lock would end with the
  read. A deadlock between such transactions raises ``Conflict``; nothing of the loser is kept.
- ``query`` takes the shared filter language (equality, ``$in``, ``$gt/$gte/$lt/$lte``,
  ``$exists``) on columns, an order (``"-col"`` descends) and a limit, all as bound parameters.
- Reads return plain dicts of column values; a missing key reads as ``None``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Protocol, runtime_checkable

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator

from datalayer.errors import QueryError
from datalayer.patterns import PatternConfig, Target, check_storable, validate_model
from datalayer.query import Condition, SortKey, check_limit, parse_filter, parse_sort
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
        self._adapters: dict[str, TypeAdapter[Any]] = {}

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
        """Parsed filter conditions, each value checked against (and coerced to) its column's
        type, so every store compares the same values (SQLite would compare ``"abc"`` with a
        number and match nothing; PostgreSQL would fail with the value in its message)."""
        typed = []
        for condition in parse_filter(where):
            self.check_column(condition.field)
            typed.append(self.typed(condition))
        return typed

    def typed(self, condition: Condition) -> Condition:
        if condition.op == "$exists":
            return condition
        adapter = self._adapters.get(condition.field)
        if adapter is None:
            annotation = self.schema.model_fields[condition.field].annotation
            adapter = TypeAdapter(Optional[annotation])  # noqa: UP045 - a runtime type
            self._adapters[condition.field] = adapter
        try:
            if condition.op == "$in":
                value: Any = [adapter.validate_python(v) for v in condition.value]
            else:
                value = adapter.validate_python(condition.value)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise QueryError(
                f"pattern '{self.pattern.name}': filter on '{condition.field}' "
                f"({condition.op}): {problem}"
            ) from None
        return Condition(condition.field, condition.op, value)

    def check_column(self, name: str) -> None:
        if name not in self.columns:
            raise QueryError(
                f"pattern '{self.pattern.name}': no column '{name}'; "
                f"columns: {', '.join(self.columns)}"
            )

    def key_values(self, key: Key) -> dict[str, Any]:
        """Normalise a key argument to ``{column: value}``."""
        columns = self.pattern.key
        if isinstance(key, Mapping):
            missing = [c for c in columns if c not in key]
            if missing:
                raise QueryError(f"pattern '{self.pattern.name}': key is missing {missing}")
            return {c: key[c] for c in columns}
        values = tuple(key) if isinstance(key, tuple | list) else (key,)
        if len(values) != len(columns):
            raise QueryError(
                f"pattern '{self.pattern.name}': key needs {len(columns)} value(s) "
                f"for {columns}, got {len(values)}"
            )
        return dict(zip(columns, values, strict=True))

"""The transactional contract: rows that must stay consistent (services, accounts).

Guarantees every implementation keeps:
- ``put`` is an upsert by primary key; ``put_many`` writes all rows or none.
- Every row is validated against the pattern's schema before anything is written; a row that
  fails raises ``PayloadValidationError`` naming the field, and nothing of the call is written.
- Inside ``transaction()`` every operation on any pattern of the same store shares one database
  transaction: it commits when the block ends and rolls back entirely if the block raises.
- ``query`` takes the shared filter language (equality, ``$in``, ``$gt/$gte/$lt/$lte``,
  ``$exists``) on columns, an order (``"-col"`` descends) and a limit, all as bound parameters.
- Reads return plain dicts of column values; a missing key reads as ``None``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from pydantic import Field, field_validator

from datalayer.errors import QueryError
from datalayer.patterns import PatternConfig
from datalayer.validators import SqlIdentifier


class TransactionalPattern(PatternConfig):
    """A table of rows with a primary key; the schema defines the columns."""

    category: Literal["transactional"]
    table: SqlIdentifier
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


Key = Any  # a scalar for single-column keys, a tuple or mapping for composite keys


class TransactionalTable(ABC):
    """One transactional pattern bound to its store."""

    def __init__(self, pattern: TransactionalPattern) -> None:
        self.pattern = pattern

    @abstractmethod
    def get(self, key: Key) -> dict[str, Any] | None: ...

    @abstractmethod
    def put(self, row: Any) -> None: ...

    @abstractmethod
    def put_many(self, rows: Iterable[Any]) -> int: ...

    @abstractmethod
    def delete(self, key: Key) -> bool: ...

    @abstractmethod
    def query(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def count(self, where: Mapping[str, Any] | None = None) -> int: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """A transaction spanning every pattern of this store until the block ends."""

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

"""The document contract: flexible nested records (incidents with their timelines).

Guarantees every implementation keeps:
- ``put`` upserts the whole document by its key field; with a schema it is validated first and
  nothing is written when it fails.
- ``update`` applies ``set`` (dotted paths), ``unset`` and ``push`` (append to a list)
  atomically; with a schema the updated document is validated before it is written.
- ``find`` takes the same filter language everywhere: equality, ``$in``, ``$gt/$gte/$lt/$lte``
  and ``$exists`` on dotted paths, ANDed; any other operator is rejected with ``QueryError``
  (filters are translated, never evaluated). ``sort`` takes ``"field"``/``"-field"``; a missing
  field sorts before any value. Field names may not start with ``$`` or contain ``.``/NUL.
- Indexes declared in the registry are created by ``apply``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, TypeAdapter, field_validator

from datalayer.errors import PayloadValidationError, QueryError
from datalayer.patterns import PatternConfig
from datalayer.query import (
    Condition,
    SortKey,
    apply_update,
    check_limit,
    check_update,
    parse_filter,
    parse_sort,
)
from datalayer.validators import SqlIdentifier


class DocumentPattern(PatternConfig):
    """A collection keyed by one top-level field; ``indexes`` like ``service_id`` or ``-opened_at``."""

    category: Literal["document"]
    collection: SqlIdentifier
    key: SqlIdentifier
    indexes: list[str] = Field(default_factory=list)

    @field_validator("indexes")
    @classmethod
    def _valid_indexes(cls, value: list[str]) -> list[str]:
        from datalayer.validators import _FIELD_PATH

        for spec in value:
            if not _FIELD_PATH.match(spec.lstrip("-")):
                raise ValueError(f"'{spec}' is not a field path, optionally prefixed with '-'")
        return value

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        yield "key", self.key
        for spec in self.indexes:
            yield "indexes", spec.lstrip("-")


class DocumentCollection(ABC):
    """One document pattern bound to its store."""

    def __init__(self, pattern: DocumentPattern) -> None:
        self.pattern = pattern

    @abstractmethod
    def _write(self, key: str, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def get(self, key: Any) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete(self, key: Any) -> bool: ...

    @abstractmethod
    def _update(self, key: str, changes: Mapping[str, Any]) -> bool:
        """Apply ``changes`` (set/unset/push) atomically with validation; False if missing."""

    @abstractmethod
    def _find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def count(self, where: Mapping[str, Any] | None = None) -> int: ...

    def put(self, doc: Any) -> str:
        """Insert or replace a document; returns its key."""
        body = self.prepare(doc)
        key = str(body[self.pattern.key])
        self._write(key, body)
        return key

    def update(
        self,
        key: Any,
        *,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] | None = None,
        push: Mapping[str, Any] | None = None,
    ) -> bool:
        """Partially update one document; False when no document has that key."""
        check_update(set, unset, push)
        for path in [*(set or {}), *(unset or []), *(push or {})]:
            if path.split(".")[0] == self.pattern.key:
                raise PayloadValidationError(
                    self.pattern.name, [(path, "the key cannot be updated")]
                )
        return self._update(
            str(key), {"set": set or {}, "unset": list(unset or []), "push": push or {}}
        )

    def find(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._find(parse_filter(where), parse_sort(sort), check_limit(limit))

    def prepare(self, doc: Any) -> dict[str, Any]:
        """Validate a whole document and check its key and field names."""
        body = self.pattern.validate_payload(doc)
        if body.get(self.pattern.key) in (None, ""):
            raise PayloadValidationError(
                self.pattern.name, [(self.pattern.key, "the key field is required")]
            )
        check_field_names(self.pattern.name, body)
        return body

    def merged(self, current: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        """The document after ``changes``, validated as a whole."""
        return self.prepare(apply_update(current, **changes))


_JSON_VALUE: TypeAdapter[Any] = TypeAdapter(Any)


def stored_form(value: Any) -> Any:
    """A filter value as documents store it (their schema's JSON form: dates as strings)."""
    if isinstance(value, datetime | date):
        return _JSON_VALUE.dump_python(value, mode="json")
    if isinstance(value, dict | list):
        raise QueryError("filters compare scalar values only; match nested fields by dotted path")
    return value


def check_field_names(pattern: str, value: Any, path: str = "") -> None:
    """Reject field names MongoDB forbids: a leading ``$``, a ``.`` or a NUL, at any depth."""
    if isinstance(value, Mapping):
        for name, child in value.items():
            here = f"{path}.{name}" if path else str(name)
            if not isinstance(name, str) or name.startswith("$") or "." in name or "\x00" in name:
                raise PayloadValidationError(
                    pattern, [(here, "field names may not start with '$' or contain '.' or NUL")]
                )
            check_field_names(pattern, child, here)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            check_field_names(pattern, child, f"{path}.{i}")

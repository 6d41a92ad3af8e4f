"""The document contract: flexible nested records (incidents with their timelines).

Guarantees every implementation keeps:
- ``put`` upserts the whole document by its key field; with a schema it is validated first and
  nothing is written when it fails. An integer past 64 bits, NaN or infinity anywhere in it is
  refused the same way, so every store keeps what it was given; so is a document nesting
  objects and lists deeper than 100 levels (MongoDB's limit).
- ``update`` applies ``set`` (dotted paths), ``unset``, ``push`` (append to a list) and ``inc``
  (add to a number) atomically; with a schema the updated document is validated before it is
  written. ``inc`` is the safe read-modify-write of a counter: the store adds to the value it
  holds at that moment (MongoDB's ``$inc``; the embedded store reads and writes under its write
  lock), so concurrent increments all count. It takes only ``int`` fields (by an integer) and
  ``float`` fields of the schema, and finite amounts; anything else is a ``QueryError``. The
  schema check of the result (a bound such as ``ge=0``) sees the document as read just before;
  on MongoDB a change another writer makes in between is added to, not checked again.
- Values are stored in one form on every store: JSON values, with datetimes as the UTC instant
  to the microsecond (``2026-03-01T06:30:00.000000Z``; a naive one is read as UTC), so filters
  and sorts compare instants whatever offset or precision a datetime was written with. On
  MongoDB a BSON date another program wrote reads, filters and sorts as that text too.
- Text is kept as it is, but for what some store cannot hold: NUL (SQLite's JSON functions end
  a text there) and lone surrogates (no UTF-8 form), refused in values, keys, field names and
  filters.
- Decimals are kept exactly as their text (``"12.50"``, pydantic's JSON form); as text would
  not compare as numbers, a filter on a decimal value is refused with ``QueryError``.
- ``find`` takes the same filter language everywhere: equality, ``$in``, ``$gt/$gte/$lt/$lte``
  and ``$exists`` on dotted paths, ANDed; a value compares only with values of its type (as
  MongoDB does: a bool is no number, an object no text; None matches null or missing, in
  ``$in`` too); any other operator is rejected with ``QueryError``
  (filters are translated, never evaluated). ``sort`` takes ``"field"``/``"-field"``; a missing
  field sorts before any value. Field names may not start with ``$`` or contain ``.``, a
  backslash, a double quote or a control character (FerretDB writes those unescaped and can
  then read no document of the collection);
  ``_id`` is MongoDB's own key: no document field, filter, sort or update may name it.
- A document's key is the text of its key field's stored form; an object, a list or None is
  refused as a key.
- Indexes declared in the registry are created by ``apply``.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

from datalayer.errors import PayloadValidationError, QueryError, shown
from datalayer.patterns import (
    PatternConfig,
    RolloutConfig,
    Target,
    check_storable,
    schema_has_field,
    validate_model,
)
from datalayer.query import (
    Condition,
    SortKey,
    apply_update,
    check_increments,
    check_limit,
    check_update,
    parse_filter,
    parse_sort,
)
from datalayer.resilience import GuardedOperations
from datalayer.validators import CollectionName, SqlIdentifier, is_utf8, text_problem

#: The largest document, as JSON text, every store takes (MongoDB refuses BSON past 16 MiB).
MAX_DOCUMENT_BYTES = 15 * 2**20
#: The deepest nesting of objects and lists, the document itself included (MongoDB's limit).
MAX_DOCUMENT_DEPTH = 100


class DocumentPattern(PatternConfig):
    """A collection keyed by one top-level field; ``indexes`` like ``service_id`` or ``-opened_at``."""

    accessor: ClassVar[str] = "documents"

    category: Literal["document"]
    collection: CollectionName
    key: SqlIdentifier
    indexes: list[str] = Field(default_factory=list)
    rollout: RolloutConfig | None = None

    @field_validator("key")
    @classmethod
    def _not_mongo_id(cls, value: str) -> str:
        if value == "_id":
            raise ValueError("'_id' is MongoDB's own key; name the key field something else")
        return value

    @field_validator("indexes")
    @classmethod
    def _valid_indexes(cls, value: list[str]) -> list[str]:
        from datalayer.validators import _FIELD_PATH

        for spec in value:
            if not _FIELD_PATH.fullmatch(spec.removeprefix("-")):
                raise ValueError(f"'{spec}' is not a field path, optionally prefixed with '-'")
        return value

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        yield "key", self.key
        for spec in self.indexes:
            yield "indexes", spec.lstrip("-")

    def targets(self) -> list[Target]:
        return [Target("collection", "collection", self.collection)]


@dataclass(frozen=True)
class DocumentUpdate:
    """A checked partial update: dotted paths to set, to remove, lists to append to and
    numbers to add to (the store adds them atomically, to the value it holds)."""

    set: dict[str, Any]
    unset: list[str]
    push: dict[str, Any]
    inc: dict[str, int | float] = field(default_factory=dict)


class DocumentBackend(GuardedOperations, ABC):
    """What a store provides for one collection: checked documents and parsed filters whose
    values are already in stored form."""

    operations: ClassVar[Mapping[str, bool]] = {
        "write": True,
        "get": True,
        "delete": True,
        "update": False,  # a read-modify-write: run twice, it may apply twice
        "find": True,
        "count": True,
    }

    @abstractmethod
    def write(self, key: str, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def get(self, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete(self, key: str) -> bool: ...

    @abstractmethod
    def update(
        self, key: str, update: DocumentUpdate, merged: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        """Apply ``update`` atomically; ``merged(current)`` is the whole validated document
        after it (it raises if the result fails the schema). False if no document has ``key``."""

    @abstractmethod
    def find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def count(self, conditions: list[Condition]) -> int: ...

    @abstractmethod
    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        """Up to ``count`` keys after ``cursor`` ('' to begin) in the order of their text,
        and the cursor to go on from ('' once done); a rollout's backfill resumes from it."""

    @abstractmethod
    def add(self, key: str, doc: dict[str, Any]) -> bool:
        """Write ``doc`` only when no document has ``key``; whether it was written."""

    @abstractmethod
    def delete_if(self, key: str, doc: dict[str, Any]) -> bool:
        """Delete the document of ``key`` only while it is ``doc``; whether it was."""


class DocumentCollection:
    """One document pattern bound to its store."""

    def __init__(self, pattern: DocumentPattern, backend: DocumentBackend) -> None:
        self.pattern = pattern
        self.backend = backend

    def put(self, doc: Any) -> str:
        """Insert or replace a document; returns its key."""
        body = self.prepare(doc)
        key = self.key_text(body[self.pattern.key], refuse=PayloadValidationError)
        self.backend.write(key, body)
        return key

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.backend.get(self.key_text(key))

    def delete(self, key: Any) -> bool:
        return self.backend.delete(self.key_text(key))

    def key_text(self, key: Any, refuse: type[Exception] = QueryError) -> str:
        """A key as documents are stored under it: the text of its stored form (so a datetime
        or bytes key finds the document it named). One no document can have (an object or a
        list, text with NUL or a lone surrogate) is refused (``QueryError``, or
        ``PayloadValidationError`` when ``put`` finds it in a document)."""
        problem = None
        if isinstance(key, Mapping | list | tuple | set | frozenset) or key is None:
            problem = f"a key is text or a number, not {type(key).__name__}"
        else:
            try:
                stored = stored_value(key)
            except (ValueError, OverflowError) as exc:
                stored, problem = None, str(exc)
            text = stored if isinstance(stored, str) else str(stored)
            problem = problem or text_problem(text)
        if problem is None:
            return text
        if refuse is PayloadValidationError:
            raise PayloadValidationError(self.pattern.name, [(self.pattern.key, problem)])
        raise QueryError(f"pattern '{self.pattern.name}': key {shown(key)}: {problem}")

    def update(
        self,
        key: Any,
        *,
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] | None = None,
        push: Mapping[str, Any] | None = None,
        inc: Mapping[str, int | float] | None = None,
    ) -> bool:
        """Partially update one document; False when no document has that key. ``inc`` adds
        to numeric fields atomically on the store: concurrent increments all count."""
        check_update(set, unset, push, inc)
        schema = self.pattern.schema_cls
        check_increments(inc or {})
        for path, amount in (inc or {}).items():
            refused = None if schema is None else increment_refusal(schema, path, amount)
            if refused:
                raise QueryError(f"pattern '{self.pattern.name}': cannot inc '{path}': {refused}")
        for path in [*(set or {}), *(unset or []), *(push or {}), *(inc or {})]:
            if path.split(".")[0] in (self.pattern.key, "_id"):
                raise PayloadValidationError(
                    self.pattern.name, [(path, "the key (or MongoDB's _id) cannot be updated")]
                )
            if schema is not None and not schema_has_field(schema, path):
                raise PayloadValidationError(
                    self.pattern.name,
                    [(path, f"not a field of schema {schema.__name__}; nothing written")],
                )
        update = DocumentUpdate(
            dict(set or {}), list(unset or []), dict(push or {}), dict(inc or {})
        )
        return self.backend.update(self.key_text(key), update, partial(self.merged, update=update))

    def find(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        sort: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        order = parse_sort(sort)
        for key in order:
            _not_reserved(key.field)
        return self.backend.find(self.conditions(where), order, check_limit(limit))

    def count(self, where: Mapping[str, Any] | None = None) -> int:
        return self.backend.count(self.conditions(where))

    @staticmethod
    def conditions(where: Mapping[str, Any] | None) -> list[Condition]:
        """The filter parsed, each value in the form documents store it."""
        return [
            Condition(c.field, c.op, [stored_form(v) for v in c.value])
            if c.op == "$in"
            else Condition(c.field, c.op, stored_form(c.value))
            for c in parse_filter(where)
            if _not_reserved(c.field)
        ]

    def prepare(self, doc: Any) -> dict[str, Any]:
        """Validate a whole document, check its key, and put it in stored form
        (``stored_document``: field names and values checked on the way)."""
        schema = self.pattern.schema_cls
        if schema is not None:
            python: Any = validate_model(self.pattern.name, schema, doc).model_dump()
        elif isinstance(doc, BaseModel):
            python = doc.model_dump()
        elif isinstance(doc, Mapping):
            python = dict(doc)
        else:
            raise PayloadValidationError(
                self.pattern.name, [("", f"expected a mapping, got {type(doc).__name__}")]
            )
        if python.get(self.pattern.key) in (None, ""):
            raise PayloadValidationError(
                self.pattern.name, [(self.pattern.key, "the key field is required")]
            )
        body: dict[str, Any] = stored_document(self.pattern.name, python)
        size = len(json.dumps(body, ensure_ascii=False).encode())
        if size > MAX_DOCUMENT_BYTES:
            raise PayloadValidationError(
                self.pattern.name,
                [("", f"document of {size:,} bytes; at most {MAX_DOCUMENT_BYTES:,} as JSON")],
            )
        return body

    def merged(self, current: dict[str, Any], *, update: DocumentUpdate) -> dict[str, Any]:
        """The document after ``update``, validated as a whole."""
        return self.prepare(
            apply_update(
                current, set=update.set, unset=update.unset, push=update.push, inc=update.inc
            )
        )


def _not_reserved(path: str) -> bool:
    """Refuse a filter or sort on ``_id``: MongoDB's own key, which no document holds."""
    if path.split(".")[0] == "_id":
        raise QueryError(
            f"'{path}': '_id' is MongoDB's own key, not a document field; "
            "filter on the pattern's key field"
        )
    return True


def increment_refusal(schema: type[BaseModel], path: str, amount: int | float) -> str | None:
    """Why ``inc`` may not add ``amount`` at ``path`` of ``schema``; None when it may. Only an
    ``int`` field (by an integer) or a ``float`` field; inside a free-form dict the value found
    is checked when the update is applied."""
    current: Any = schema
    for part in path.split("."):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        declared = current.model_fields.get(part)
        if declared is None:
            return f"not a field of schema {schema.__name__}; nothing written"
        current = declared.annotation
    if current is float or (current is int and isinstance(amount, int)):
        return None
    if current is int:
        return f"it holds integers: inc by an integer, not {shown(amount)}"
    kind = getattr(current, "__name__", None) or str(current)
    return f"only int and float fields can be incremented, it is {kind}"


_JSON_VALUE: TypeAdapter[Any] = TypeAdapter(Any)


def utc_text(value: datetime) -> str:
    """A datetime as documents store it: the UTC instant with microseconds, ending in ``Z``
    (a naive one is read as UTC). Every such text has one length, so comparing and sorting
    the texts compares the instants, whatever offset or precision they were written with."""
    at = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds") + "Z"  # strftime's %Y drops a year's zeros


def stored_value(value: Any) -> Any:
    """A value in stored form, the same on every store: JSON values as they are, datetimes as
    ``utc_text``, anything else (dates, decimals, UUIDs...) as pydantic writes it in JSON."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        return utc_text(value)
    return _JSON_VALUE.dump_python(value, mode="json")


_FORBIDDEN_NAME = (
    "field names may not start with '$' or contain '.', a backslash, a double quote, a "
    "control character or a lone surrogate ('_id' is MongoDB's own key)"
)
#: What a field name may not hold: MongoDB's '.', and what FerretDB writes unescaped in its
#: JSON (a backslash, a double quote, a control character), after which it can read no
#: document of the collection: one such name would stop every find and count.
_NAME_BREAKERS = re.compile(r'[.\\"\x00-\x1f]')


def stored_document(pattern: str, value: Any, path: str = "", depth: int = 1) -> Any:
    """A document in stored form, checked in the same walk: field names MongoDB accepts (no
    leading ``$``, no ``.`` or NUL), values every store keeps (``check_storable``) and at most
    ``MAX_DOCUMENT_DEPTH`` levels of objects and lists (``depth``: this value's level)."""
    if isinstance(value, Mapping | list | tuple) and depth > MAX_DOCUMENT_DEPTH:
        raise PayloadValidationError(
            pattern, [(path, f"nests deeper than {MAX_DOCUMENT_DEPTH} levels of objects and lists")]
        )
    if isinstance(value, Mapping):
        out = {}
        for name, child in value.items():
            here = f"{path}.{name}" if path else str(name)
            if (
                not isinstance(name, str)
                or name.startswith("$")
                or _NAME_BREAKERS.search(name) is not None
                or text_problem(name) is not None
                or (name == "_id" and not path)
            ):
                label = name if isinstance(name, str) and is_utf8(name) else repr(name)
                raise PayloadValidationError(
                    pattern,
                    [(f"{path}.{label}" if path else label, _FORBIDDEN_NAME)],
                )
            out[name] = stored_document(pattern, child, here, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [
            stored_document(pattern, child, f"{path}.{i}", depth + 1)
            for i, child in enumerate(value)
        ]
    if isinstance(value, Decimal) and not value.is_finite():  # pydantic would write "NaN"
        raise PayloadValidationError(pattern, [(path, f"{value} cannot be stored")])
    try:
        stored = stored_value(value)
    except (ValueError, OverflowError) as exc:  # year 1 in UTC-5; bytes that are not UTF-8
        raise PayloadValidationError(pattern, [(path, str(exc))]) from exc
    if isinstance(stored, Mapping | list):  # e.g. a dataclass, written as an object
        return stored_document(pattern, stored, path, depth)
    check_storable(pattern, stored, path)  # NUL and lone surrogates too
    return stored


def stored_form(value: Any) -> Any:
    """A filter value as documents store it (``stored_value``: datetimes as UTC text)."""
    if isinstance(value, dict | list):
        raise QueryError("filters compare scalar values only; match nested fields by dotted path")
    if isinstance(value, Decimal):
        raise QueryError(
            f"documents keep a decimal as its exact text ({str(value)!r}), which compares as "
            "text, not as a number: filter on that text if it is what you mean"
        )
    try:
        stored = stored_value(value)
    except (ValueError, OverflowError) as exc:  # PydanticSerializationError is a ValueError
        raise QueryError(f"a filter cannot compare {shown(value)}: {exc}") from exc
    if isinstance(stored, dict | list):  # a set, a dataclass...
        raise QueryError("filters compare scalar values only; match nested fields by dotted path")
    return stored

"""The key-value contract: fast lookups with expiry (grouping windows, caches).

Guarantees every implementation keeps:
- Keys live under the pattern's own prefix, so two patterns never see each other's keys.
- ``set`` validates the value against the schema first; nothing is written when it fails. Values
  are UTF-8 JSON: NaN, infinities, text with a lone surrogate and what JSON cannot hold (a
  ``Decimal`` with no schema) are refused;
  a schema's decimals are kept as their exact text. A value another program wrote that is not
  JSON (``NaN`` and ``Infinity`` included) reads as a ``DataLayerError`` naming the key.
- A value set with a TTL (the call's, else the pattern's) reads as missing once it expires; a
  pattern with ``require_ttl`` rejects a write that has neither.
- ``mget`` returns values in the order of the keys asked, ``None`` for missing ones.
- ``incr`` adds to an integer value atomically on the store (Redis ``INCRBY``; the embedded
  store reads and writes under its write lock), so concurrent increments all count. A missing
  or expired key starts at 0 and takes the TTL a ``set`` would; an existing one keeps its
  expiry. A pattern with a schema, a value that is not an integer and a sum past 64 bits are
  refused with ``QueryError``, and nothing changes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field

from datalayer.errors import DataLayerError, PayloadValidationError, QueryError, shown
from datalayer.patterns import PatternConfig, RolloutConfig, Target, loads_json
from datalayer.query import INT64_MAX, INT64_MIN
from datalayer.resilience import GuardedOperations
from datalayer.validators import Duration, is_utf8, parse_duration


class KeyValuePattern(PatternConfig):
    """A namespace of keys with an optional default TTL."""

    accessor: ClassVar[str] = "kv"

    category: Literal["key-value"]
    ttl: Duration | None = None
    require_ttl: bool = False
    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    rollout: RolloutConfig | None = None

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix or self.name}:"

    def targets(self) -> list[Target]:
        return [Target("prefix", "key prefix", self.key_prefix)]


class KVBackend(GuardedOperations, ABC):
    """What a store provides for one key-value pattern: full keys and encoded values in."""

    operations: ClassVar[Mapping[str, bool]] = {
        "set": True,
        "get_many": True,
        "delete": True,
        "ttl": True,
        "incr": False,  # run twice, it adds twice
    }

    @abstractmethod
    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None: ...

    @abstractmethod
    def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    def delete(self, key: str) -> bool: ...

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None for no expiry; raise KeyError if missing."""

    @abstractmethod
    def incr(self, key: str, by: int, ttl_seconds: float | None) -> int:
        """Add ``by`` to the integer at ``key`` atomically; return the sum. A missing or expired
        key counts as 0 and gets ``ttl_seconds``; an existing one keeps its expiry. Raise
        ``ValueError`` saying why when the value is not a JSON integer or the sum leaves 64 bits."""

    @abstractmethod
    def scan(self, prefix: str, cursor: str, count: int) -> tuple[list[str], str]:
        """About ``count`` live keys starting with ``prefix``, from ``cursor`` ('' to begin),
        and the cursor to go on from ('' once done): a key present for the whole scan is
        returned at least once, and a cursor stays valid in another process (a rollout's
        backfill resumes from it)."""

    @abstractmethod
    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        """Set ``key`` only when it is missing (or expired); whether it was set."""

    @abstractmethod
    def delete_if(self, key: str, value: bytes) -> bool:
        """Delete ``key`` only while it holds ``value``, in one step; whether it was."""


class KVNamespace:
    """One key-value pattern bound to its store: keys prefixed, values validated and encoded."""

    def __init__(self, pattern: KeyValuePattern, backend: KVBackend) -> None:
        self.pattern = pattern
        self.backend = backend

    def set(self, key: str, value: Any, *, ttl: Any = None) -> None:
        ttl_seconds = self.ttl_for(ttl)
        self.backend.set(self.full_key(key), self.encode(value), ttl_seconds)

    def get(self, key: str) -> Any:
        return self.mget([key])[0]

    def mget(self, keys: Iterable[str]) -> list[Any]:
        if isinstance(keys, str | bytes | Mapping) or not isinstance(keys, Iterable):
            raise QueryError(  # a str would be read as one key per character
                f"pattern '{self.pattern.name}': mget takes a list of keys, "
                f"got {type(keys).__name__}"
            )
        keys = list(keys)
        full = [self.full_key(k) for k in keys]
        raw = self.backend.get_many(full) if full else []
        return [
            None if item is None else self.decode(key, item)
            for key, item in zip(keys, raw, strict=True)
        ]

    def delete(self, key: str) -> bool:
        return self.backend.delete(self.full_key(key))

    def incr(self, key: str, by: int = 1, *, ttl: Any = None) -> int:
        """Add ``by`` to the integer at ``key`` and return the new value, atomically: the safe
        read-modify-write of a counter. A missing or expired key starts at 0 with the TTL a
        ``set`` would give it (the call's, else the pattern's); an existing key keeps its own."""
        if self.pattern.schema_cls is not None:
            raise QueryError(
                f"pattern '{self.pattern.name}': incr needs a pattern without a schema "
                f"(its values are {self.pattern.schema_cls.__name__} objects, not integers)"
            )
        if not isinstance(by, int) or isinstance(by, bool) or not INT64_MIN <= by <= INT64_MAX:
            raise QueryError(
                f"pattern '{self.pattern.name}': incr by a 64-bit integer, got {shown(by)}"
            )
        full = self.full_key(key)
        ttl_seconds = self.ttl_for(ttl)
        try:
            return self.backend.incr(full, by, ttl_seconds)
        except DataLayerError:
            raise
        except ValueError as exc:
            raise QueryError(
                f"pattern '{self.pattern.name}': cannot incr key {shown(key)}: {exc}; nothing changed"
            ) from exc

    def decode(self, key: str, raw: bytes) -> Any:
        """A stored value; one another program wrote that is not JSON is a clear error."""
        try:
            return loads_json(raw)
        except (ValueError, RecursionError) as exc:
            raise DataLayerError(
                f"pattern '{self.pattern.name}': the value at key {shown(key)} is not JSON "
                "(written by something other than datalayer?)"
            ) from exc

    def ttl(self, key: str) -> float | None:
        """Seconds left for ``key``: None when it never expires; KeyError when missing."""
        return self.backend.ttl(self.full_key(key))

    def full_key(self, key: str) -> str:
        if not isinstance(key, str) or not key or not is_utf8(key):
            raise QueryError(
                f"pattern '{self.pattern.name}': a key must be a non-empty string of valid "
                f"Unicode (no lone surrogate), got {shown(key)}"
            )
        return self.pattern.key_prefix + key

    def encode(self, value: Any) -> bytes:
        """The value as compact JSON (validated first when the pattern has a schema); NaN,
        infinities and what JSON cannot hold are refused."""
        if self.pattern.schema_cls is not None:
            value = self.pattern.validate_payload(value)
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            return text.encode()  # a lone surrogate has no UTF-8 form: UnicodeEncodeError
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: ~1,000 deep
            raise PayloadValidationError(self.pattern.name, [("", str(exc))]) from exc

    def ttl_for(self, ttl: Any) -> float | None:
        if ttl is not None:
            try:
                return parse_duration(ttl).total_seconds()
            except ValueError as exc:
                raise QueryError(f"pattern '{self.pattern.name}': {exc}") from exc
        default: timedelta | None = self.pattern.ttl
        if default is not None:
            return default.total_seconds()
        if self.pattern.require_ttl:
            raise PayloadValidationError(
                self.pattern.name, [("ttl", "this pattern requires a TTL and none was given")]
            )
        return None

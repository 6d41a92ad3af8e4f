"""Moving a pattern to another store by stages, with the old store as the safety net.

A pattern's ``rollout: {to, stage, percent, compare_sample}`` puts its backend behind a router
that writes and reads each store as the stage says:

- ``shadow``: writes go to the current store, then to the new one; a failure there is counted
  and logged, never raised. Reads come from the current store; a ``compare_sample`` share of
  them is compared with the new store, which counts (and logs) every value that differs. The
  sampled keys are compared 16 at a time, in one read of each store, so the comparison's
  round trip is paid once per 16 keys (the rest are compared when the counts are read and
  when the process closes).
- ``split``: writes go to both (a failure on either is raised). A key reads from the new store
  when its stable bucket (SHA-256 of the key, 0 to 9,999) is below ``percent`` x 100, so a key
  always reads from the same side, in every process.
- ``cutover``: reads from the new store, writes to both: the old store stays a rollback target.
- ``done``: only the new store.

A transactional pattern's ``transaction()`` opens one on each store written and commits the
old store's first. Writes go to the old store first and then to the new one at every stage
where both are written, so going back one stage finds the old store holding every write. Two writers of the
same key at once may leave the stores with different winners (each store keeps its own last
write); writers of distinct keys never do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, TypeAdapter

from datalayer.categories.document import DocumentBackend, DocumentUpdate
from datalayer.categories.kv import KVBackend
from datalayer.categories.transactional import TransactionalBackend
from datalayer.errors import DataLayerError, StoreUnavailable
from datalayer.patterns import RolloutConfig, Stage
from datalayer.query import Condition, SortKey

log = logging.getLogger(__name__)

#: Buckets of the split: a percent is a hundred of them.
BUCKETS = 10_000
#: Keys of sampled shadow reads compared together, in one read of each store: a comparison
#: costs a read of the new store, and one of 16 keys costs about what one of a key does.
COMPARE_BATCH = 16

T = TypeVar("T")
#: Reads values by key from one store of a rollout (a shadow comparison's two sides).
Reader = Callable[[list[Any]], list[Any]]


def bucket(key: str) -> int:
    """The key's stable bucket, 0 to 9,999: the same in every process and on every machine."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass
class RolloutStats:
    """What a rollout met in this process: shadow reads compared and how many differed, and
    writes the new store failed."""

    pattern: str
    compared: int = 0
    mismatches: int = 0
    compare_failures: int = 0
    write_failures: int = 0


class Rollout:
    """The stage, split and counters of one pattern's rollout (shared by its routers)."""

    def __init__(self, pattern: str, config: RolloutConfig) -> None:
        self.pattern = pattern
        self.config = config
        self.stats = RolloutStats(pattern)
        self._lock = threading.Lock()
        self._threshold = round(config.percent * BUCKETS / 100)
        self._pending: list[tuple[Any, Any]] = []
        self._readers: tuple[Reader, Reader] | None = None

    def sampled(self, keys: list[Any], old: list[Any], read_new: Reader, read_old: Reader) -> None:
        """Queue what a sampled shadow read returned; ``COMPARE_BATCH`` keys at a time are
        compared (``compare``), the rest when ``flush`` is called."""
        with self._lock:
            self._pending.extend(zip(keys, old, strict=True))
            self._readers = (read_new, read_old)
            if len(self._pending) < COMPARE_BATCH:
                return
            batch, self._pending = self._pending, []
        self.compare([k for k, _ in batch], [v for _, v in batch], read_new, read_old)

    def shadow_compare(
        self,
        key: Any,
        found: dict[str, Any] | None,
        get_new: Callable[[Any], dict[str, Any] | None],
        get_old: Callable[[Any], dict[str, Any] | None],
    ) -> None:
        """In ``shadow``, queue a sampled read of one row or document (``found``, read from
        the old store) for comparison; both stores' are compared as ``_row_text`` (their
        drivers may hand back one value as different types)."""
        if self.config.stage != "shadow" or random.random() >= self.config.compare_sample:
            return

        def form(row: dict[str, Any] | None) -> str | None:
            return None if row is None else _row_text(row)

        self.sampled(
            [key],
            [form(found)],
            lambda keys: [form(get_new(k)) for k in keys],
            lambda keys: [form(get_old(k)) for k in keys],
        )

    def flush(self) -> None:
        """Compare the sampled reads still queued (before counts are read or a store closes)."""
        with self._lock:
            batch, self._pending, readers = self._pending, [], self._readers
        if batch and readers is not None:
            self.compare([k for k, _ in batch], [v for _, v in batch], *readers)

    def compare(
        self,
        keys: list[Any],
        old: list[Any],
        read_new: Reader,
        read_old: Reader,
    ) -> None:
        """Compare what a shadow read returned with the new store's values (counted and
        logged, never raised). A value that differs may have been written since the read:
        it counts only when the current store's value now differs from the new one too."""
        try:
            new = read_new(keys)
            differing = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
            now = read_old([keys[i] for i in differing]) if differing else []
        except Exception as exc:
            self.failed_comparison(exc)
            return
        moved = {i for i, value in zip(differing, now, strict=True) if value == new[i]}
        self.compared(keys, [new[i] if i in moved else a for i, a in enumerate(old)], new)

    @property
    def stage(self) -> Stage:
        return self.config.stage

    def reads_new(self, key: str) -> bool:
        """Whether ``key`` reads from the new store at this stage."""
        stage = self.config.stage
        if stage == "split":
            return bucket(key) < self._threshold
        return self.reads_new_only()

    def writes_old(self) -> bool:
        return self.config.stage != "done"

    def reads_new_only(self) -> bool:
        """Whether reads that span keys (scans, queries) come from the new store."""
        return self.config.stage in ("cutover", "done")

    def write_both(
        self, what: str, old: Callable[[], T], new: Callable[[], T], *, new_answers: bool
    ) -> T | None:
        """A write as the stage says: on the old store first (but in ``done``), then on the
        new one (``shadow_write``); the answer of the new store when ``new_answers``, else
        the old one's."""
        on_old = old() if self.writes_old() else None
        on_new = self.shadow_write(what, new)
        return on_new if new_answers else on_old

    def shadow_write(self, what: str, write: Callable[[], T]) -> T | None:
        """Run a write on the new store: raised at every stage but ``shadow``, where a failure
        is counted and logged instead."""
        if self.config.stage != "shadow":
            return write()
        try:
            return write()
        except Exception as exc:
            self.failed_write(what, exc)
            return None

    def failed_write(self, what: str, exc: Exception) -> None:
        with self._lock:
            self.stats.write_failures += 1
        log.warning(
            "pattern '%s': %s on the new store '%s' failed (shadow stage, not raised): %s",
            self.pattern,
            what,
            self.config.to,
            exc,
        )

    def failed_comparison(self, exc: Exception) -> None:
        with self._lock:
            self.stats.compare_failures += 1
        log.warning(
            "pattern '%s': a shadow read of the new store '%s' failed: %s",
            self.pattern,
            self.config.to,
            exc,
        )

    def compared(self, keys: list[str], old: list[Any], new: list[Any]) -> None:
        """Count a shadow comparison; log each key whose values differ."""
        differing = [k for k, a, b in zip(keys, old, new, strict=True) if a != b]
        with self._lock:
            self.stats.compared += len(keys)
            self.stats.mismatches += len(differing)
        for key in differing[:10]:
            log.warning(
                "pattern '%s': key %r differs between the current store and '%s' (shadow read)",
                self.pattern,
                key,
                self.config.to,
            )


class RolloutKV(KVBackend):
    """A key-value pattern's backend during a rollout: ``old`` and ``new`` routed by stage."""

    def __init__(self, rollout: Rollout, old: KVBackend, new: KVBackend) -> None:
        self.rollout = rollout
        self.old = old
        self.new = new
        # A read's path is decided by the stage, fixed for this router: looked up once.
        self._stage = rollout.stage
        self._sample = rollout.config.compare_sample

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        self.rollout.write_both(
            "set",
            lambda: self.old.set(key, value, ttl_seconds),
            lambda: self.new.set(key, value, ttl_seconds),
            new_answers=False,
        )

    def delete(self, key: str) -> bool:
        return bool(
            self.rollout.write_both(
                "delete",
                lambda: self.old.delete(key),
                lambda: self.new.delete(key),
                new_answers=self.rollout.reads_new(key),
            )
        )

    def incr(self, key: str, by: int, ttl_seconds: float | None) -> int:
        """Added on the old store (written first at every stage but ``done``); the new store
        gets the resulting value and expiry (a store that missed a write would otherwise count
        from a different start)."""
        if not self.rollout.writes_old():
            return self.new.incr(key, by, ttl_seconds)
        value = self.old.incr(key, by, ttl_seconds)
        left = self.old.ttl(key)
        self.rollout.shadow_write("incr", lambda: self.new.set(key, str(value).encode(), left))
        return value

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        stage = self._stage
        if stage == "shadow":
            values = self.old.get_many(keys)
            if random.random() < self._sample:
                self.rollout.sampled(keys, values, self.new.get_many, self.old.get_many)
            return values
        if stage != "split":
            return self.new.get_many(keys)
        to_new = [self.rollout.reads_new(k) for k in keys]
        if not any(to_new):
            return self.old.get_many(keys)
        if all(to_new):
            return self.new.get_many(keys)
        olds = self.old.get_many([k for k, n in zip(keys, to_new, strict=True) if not n])
        news = self.new.get_many([k for k, n in zip(keys, to_new, strict=True) if n])
        old_values, new_values = iter(olds), iter(news)
        return [next(new_values) if n else next(old_values) for n in to_new]

    def ttl(self, key: str) -> float | None:
        return (self.new if self.rollout.reads_new(key) else self.old).ttl(key)

    def scan(self, prefix: str, cursor: str, count: int) -> tuple[list[str], str]:
        side = self.new if self.rollout.reads_new_only() else self.old
        return side.scan(prefix, cursor, count)

    def delete_if(self, key: str, value: bytes) -> bool:
        return bool(
            self.rollout.write_both(
                "delete",
                lambda: self.old.delete_if(key, value),
                lambda: self.new.delete_if(key, value),
                new_answers=self.rollout.reads_new_only(),
            )
        )

    def add(self, key: str, value: bytes, ttl_seconds: float | None) -> bool:
        return bool(
            self.rollout.write_both(
                "add",
                lambda: self.old.add(key, value, ttl_seconds),
                lambda: self.new.add(key, value, ttl_seconds),
                new_answers=self.rollout.reads_new_only(),
            )
        )


class RolloutDocuments(DocumentBackend):
    """A document pattern's backend during a rollout. ``get`` follows the key's side;
    ``find`` and ``count`` (queries across keys) read the old store until ``cutover``. An
    ``update`` is applied on the old store, and the document it left there is written whole
    to the new one (which may not have had it yet)."""

    def __init__(self, rollout: Rollout, old: DocumentBackend, new: DocumentBackend) -> None:
        self.rollout = rollout
        self.old = old
        self.new = new

    def _queried(self) -> DocumentBackend:
        """The store that reads spanning keys come from."""
        return self.new if self.rollout.reads_new_only() else self.old

    def write(self, key: str, doc: dict[str, Any]) -> None:
        self.rollout.write_both(
            "write",
            lambda: self.old.write(key, doc),
            lambda: self.new.write(key, doc),
            new_answers=False,
        )

    def get(self, key: str) -> dict[str, Any] | None:
        if self.rollout.reads_new(key):
            return self.new.get(key)
        doc = self.old.get(key)
        self.rollout.shadow_compare(key, doc, self.new.get, self.old.get)
        return doc

    def delete(self, key: str) -> bool:
        return bool(
            self.rollout.write_both(
                "delete",
                lambda: self.old.delete(key),
                lambda: self.new.delete(key),
                new_answers=self.rollout.reads_new(key),
            )
        )

    def update(
        self, key: str, update: DocumentUpdate, merged: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        if not self.rollout.writes_old():
            return self.new.update(key, update, merged)
        if not self.old.update(key, update, merged):
            return False
        after = self.old.get(key)
        if after is not None:
            self.rollout.shadow_write("update", lambda: self.new.write(key, after))
        return True

    def find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        return self._queried().find(conditions, sort, limit)

    def count(self, conditions: list[Condition]) -> int:
        return self._queried().count(conditions)

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        return self._queried().scan(cursor, count)

    def add(self, key: str, doc: dict[str, Any]) -> bool:
        return bool(
            self.rollout.write_both(
                "add",
                lambda: self.old.add(key, doc),
                lambda: self.new.add(key, doc),
                new_answers=self.rollout.reads_new_only(),
            )
        )

    def delete_if(self, key: str, doc: dict[str, Any]) -> bool:
        return bool(
            self.rollout.write_both(
                "delete",
                lambda: self.old.delete_if(key, doc),
                lambda: self.new.delete_if(key, doc),
                new_answers=self.rollout.reads_new_only(),
            )
        )


def key_text(key: Mapping[str, Any]) -> str:
    """A key's values as the text its bucket is taken of: one value as itself, several as a
    JSON list, each written one way however the caller spelled it (a time at any offset as
    UTC, ``2.0`` as ``2``, ``Decimal("1.50")`` as ``1.5``), as the stores compare them."""
    values = [_canonical(v) for v in key.values()]
    if len(values) == 1:
        return values[0]
    return json.dumps(values, ensure_ascii=False)


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        return str(int(value))
    if isinstance(value, Decimal):
        return str(value.normalize())
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return str(value)


def _normal(value: Any) -> Any:
    """A value as two stores' drivers agree on it, for comparisons: a decimal without its
    trailing zeros (SQLite drops them), a float zero without its sign (SQLite drops it), a
    time in UTC."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, Decimal) and value.is_finite():
        return str(value.normalize())
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    return value


def _row_text(row: Mapping[str, Any]) -> str:
    return json.dumps(_normal(row), default=str, sort_keys=True, ensure_ascii=False)


class RolloutTable(TransactionalBackend):
    """A transactional pattern's backend during a rollout. ``get`` follows the key's side;
    ``select`` and ``count`` read the old store until ``cutover``. ``transaction()`` opens one
    on each store written, and commits the old store's first."""

    def __init__(
        self, rollout: Rollout, old: TransactionalBackend, new: TransactionalBackend
    ) -> None:
        self.rollout = rollout
        self.old = old
        self.new = new
        #: Set in a ``shadow`` transaction whose new store's transaction could not begin.
        self._without_new: ContextVar[bool] = ContextVar(f"without-new-{id(self)}", default=False)

    def _on_new(self, write: Callable[[], T]) -> T:
        """A write on the new store, unless the open transaction could not begin there."""
        if self._without_new.get():
            raise StoreUnavailable(
                f"the new store '{self.rollout.config.to}' is left out of this transaction: "
                "its own could not begin"
            )
        return write()

    def _queried(self) -> TransactionalBackend:
        return self.new if self.rollout.reads_new_only() else self.old

    def get(self, key: dict[str, Any], *, for_update: bool = False) -> dict[str, Any] | None:
        """The row from the key's side. ``for_update`` locks the key on the old store first
        (every writer writes it first), then on the new store when the row is read there."""
        reads_new = self.rollout.reads_new(key_text(key))
        if for_update:
            if self.rollout.writes_old():
                row = self.old.get(key, for_update=True)
                if not reads_new:
                    return row
            return self.new.get(key, for_update=True)
        if reads_new:
            return self.new.get(key)
        row = self.old.get(key)
        self.rollout.shadow_compare(key, row, self.new.get, self.old.get)
        return row

    def upsert(self, rows: list[BaseModel]) -> None:
        self.rollout.write_both(
            "upsert",
            lambda: self.old.upsert(rows),
            lambda: self._on_new(lambda: self.new.upsert(rows)),
            new_answers=False,
        )

    def add(self, row: BaseModel) -> bool:
        return bool(
            self.rollout.write_both(
                "add",
                lambda: self.old.add(row),
                lambda: self._on_new(lambda: self.new.add(row)),
                new_answers=self.rollout.reads_new_only(),
            )
        )

    def delete(self, key: dict[str, Any]) -> bool:
        return bool(
            self.rollout.write_both(
                "delete",
                lambda: self.old.delete(key),
                lambda: self._on_new(lambda: self.new.delete(key)),
                new_answers=self.rollout.reads_new(key_text(key)),
            )
        )

    def select(
        self, conditions: list[Condition], order: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        return self._queried().select(conditions, order, limit)

    def count(self, conditions: list[Condition]) -> int:
        return self._queried().count(conditions)

    def scan(self, after: dict[str, Any] | None, count: int) -> list[dict[str, Any]]:
        return self._queried().scan(after, count)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction on each store written; the old store's commits first. In ``shadow``
        the new store's may fail to begin or commit: counted and logged, never raised."""
        if not self.rollout.writes_old():
            with self.new.transaction():
                yield
            return
        with self._new_transaction(), self.old.transaction():
            yield
            if self.rollout.stage != "shadow" and self.new.doomed():
                # raised before the old store commits: both roll back
                raise DataLayerError(
                    f"pattern '{self.rollout.pattern}': a statement on the new store "
                    f"'{self.rollout.config.to}' failed inside the transaction (its error was "
                    "caught in the block); it can no longer commit, so neither store keeps "
                    "the block"
                )

    @contextmanager
    def _new_transaction(self) -> Iterator[None]:
        if self.rollout.stage != "shadow":
            with self.new.transaction():
                yield
            return
        opened = self.new.transaction()
        try:
            opened.__enter__()
        except Exception as exc:
            self.rollout.failed_write("BEGIN", exc)
            # the block's writes skip the new store: outside a transaction, they would be
            # kept there even if the block raised
            token = self._without_new.set(True)
            try:
                yield
            finally:
                self._without_new.reset(token)
            return
        try:
            yield
        except BaseException as exc:
            with suppress(Exception):
                opened.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            opened.__exit__(None, None, None)
        except Exception as exc:
            self.rollout.failed_write("COMMIT", exc)


_ROUTERS: dict[str, Callable[[Rollout, Any, Any], Any]] = {
    "key-value": RolloutKV,
    "document": RolloutDocuments,
    "transactional": RolloutTable,
}


def router(category: str) -> Callable[[Rollout, Any, Any], Any]:
    """The router of a category's backends."""
    return _ROUTERS[category]


#: Keys a backfill or verify pass reads at a time (memory stays bounded by it).
BATCH = 500


@dataclass
class Progress:
    """A backfill's progress, kept in a checkpoint file so that it resumes where it stopped."""

    to: str
    cursor: str = ""
    copied: int = 0
    present: int = 0
    done: bool = False
    #: The batch being copied: each key (as JSON) with the digest of the value read for it.
    in_flight: list[list[Any]] = field(default_factory=list)


class Checkpoints:
    """Backfill checkpoints, one JSON file per pattern under ``folder`` (written aside, then
    renamed: an interrupted write leaves the previous one), and the counts processes met,
    added up under a file lock when each closes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add_counts(self, stats: RolloutStats) -> None:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{stats.pattern}.counts.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            total = self.counts(stats.pattern)
            for name, value in asdict(stats).items():
                if name != "pattern":
                    total[name] = total.get(name, 0) + value
            path = self.folder / f"{stats.pattern}.counts.json"
            aside = path.with_name(f".{path.name}.tmp")
            aside.write_text(json.dumps(total))
            aside.replace(path)

    def counts(self, pattern: str) -> dict[str, int]:
        """What every closed process of the pattern's rollout met, added up."""
        path = self.folder / f"{pattern}.counts.json"
        found: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        return found

    def load(self, pattern: str, to: str) -> Progress:
        path = self.folder / f"{pattern}.json"
        if not path.exists():
            return Progress(to)
        found = Progress(**json.loads(path.read_text()))
        return found if found.to == to else Progress(to)  # a new target starts over

    def save(self, pattern: str, progress: Progress) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        aside = self.folder / f".{pattern}.json.tmp"
        aside.write_text(json.dumps(asdict(progress)))
        aside.replace(self.folder / f"{pattern}.json")


class Side(Protocol):
    """One store of a rollout as backfill and verify see it: keys scanned in batches, values
    read by key (a key-value pattern's with its remaining TTL), added where missing and
    removed while unchanged."""

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]: ...

    def values(self, keys: list[str]) -> list[Any]: ...

    def add(self, key: str, value: Any) -> bool: ...

    def delete_if(self, key: str, value: Any) -> bool: ...

    def put(self, key: str, value: Any) -> None: ...

    def digest(self, value: Any) -> bytes: ...

    def label(self, key: Any) -> str:
        """The key as listings show it."""
        ...

    def encode_key(self, key: Any) -> Any:
        """The key as JSON can hold it (a checkpoint keeps it)."""
        ...

    def decode_key(self, encoded: Any) -> Any: ...


class TextKeys:
    """Keys that are text already: shown, and kept in a checkpoint, as they are."""

    def label(self, key: Any) -> str:
        return str(key)

    def encode_key(self, key: Any) -> Any:
        return key

    def decode_key(self, encoded: Any) -> Any:
        return encoded


@dataclass
class KVSide(TextKeys):
    """A key-value backend under a prefix; a value is (bytes, seconds left or None)."""

    backend: KVBackend
    prefix: str

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        return self.backend.scan(self.prefix, cursor, count)

    def values(self, keys: list[str]) -> list[Any]:
        out: list[Any] = []
        for key, value in zip(keys, self.backend.get_many(keys) if keys else [], strict=True):
            try:
                out.append(None if value is None else (value, self.backend.ttl(key)))
            except KeyError:  # expired or deleted since
                out.append(None)
        return out

    def add(self, key: str, value: Any) -> bool:
        return self.backend.add(key, value[0], value[1])

    def delete_if(self, key: str, value: Any) -> bool:
        return self.backend.delete_if(key, value[0])

    def put(self, key: str, value: Any) -> None:
        self.backend.set(key, value[0], value[1])

    def digest(self, value: Any) -> bytes:
        return _digest(value[0])


@dataclass
class DocumentSide(TextKeys):
    """A document backend; a value is the document."""

    backend: DocumentBackend

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        return self.backend.scan(cursor, count)

    def values(self, keys: list[str]) -> list[Any]:
        return [self.backend.get(key) for key in keys]

    def add(self, key: str, value: Any) -> bool:
        return self.backend.add(key, value)

    def delete_if(self, key: str, value: Any) -> bool:
        return self.backend.delete_if(key, value)

    def put(self, key: str, value: Any) -> None:
        self.backend.write(key, value)

    def digest(self, value: Any) -> bytes:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return _digest(text.encode())


@dataclass
class TableSide:
    """A transactional backend; a key is ``{column: value}``, a value the row. Rows are
    compared as their schema's JSON (two drivers may hand the same value back as different
    Python types), and the scan's cursor is the last key as that JSON too."""

    backend: TransactionalBackend
    schema: type[BaseModel]
    key: list[str]

    def __post_init__(self) -> None:
        self._key_types: dict[str, TypeAdapter[Any]] = {
            c: TypeAdapter(self.schema.model_fields[c].annotation) for c in self.key
        }

    def scan(self, cursor: str, count: int) -> tuple[list[Any], str]:
        after = self.decode_key(json.loads(cursor)) if cursor else None
        keys = self.backend.scan(after, count)
        if len(keys) < count:
            return keys, ""
        return keys, json.dumps(self.encode_key(keys[-1]))

    def encode_key(self, key: Any) -> Any:
        return {c: self._key_types[c].dump_python(key[c], mode="json") for c in self.key}

    def decode_key(self, encoded: Any) -> Any:
        return {c: self._key_types[c].validate_python(encoded[c]) for c in self.key}

    def values(self, keys: list[Any]) -> list[Any]:
        return [self.backend.get(key) for key in keys]

    def add(self, key: Any, value: Any) -> bool:
        return self.backend.add(self.schema.model_validate(value))

    def delete_if(self, key: Any, value: Any) -> bool:
        """Deleted under the row's lock, only while the row is still ``value``."""
        with self.backend.transaction():
            current = self.backend.get(key, for_update=True)
            if current is None or self.digest(current) != self.digest(value):
                return False
            return self.backend.delete(key)

    def put(self, key: Any, value: Any) -> None:
        self.backend.upsert([self.schema.model_validate(value)])

    def digest(self, value: Any) -> bytes:
        return _digest(_row_text(self.schema.model_validate(value).model_dump()).encode())

    def label(self, key: Any) -> str:
        values = list(key.values())
        shown = values[0] if len(values) == 1 else values
        return shown if isinstance(shown, str) else json.dumps(shown, default=str)


def sides(router: Any, pattern: Any) -> tuple[Side, Side]:
    """The old and the new store of a pattern's rollout router."""
    if isinstance(router, RolloutKV):
        return KVSide(router.old, pattern.key_prefix), KVSide(router.new, pattern.key_prefix)
    if isinstance(router, RolloutTable):
        schema, key = pattern.schema_cls, list(pattern.key)
        return TableSide(router.old, schema, key), TableSide(router.new, schema, key)
    return DocumentSide(router.old), DocumentSide(router.new)


def backfill(
    old: Side,
    new: Side,
    progress: Progress,
    save: Callable[[Progress], None],
    on_batch: Callable[[int], None] | None = None,
) -> Progress:
    """Copy the old store's keys to the new store from ``progress.cursor``, ``BATCH`` keys
    at a time, saving the progress after each batch. A key is added only where the new store
    lacks it, so a write made during the copy (which reached the new store too) is never
    overwritten by the older value the copy read; a key deleted while its value was being
    copied is deleted from the new store again, unless it was written again meanwhile (a
    compare-and-delete of the value the copy put there). Each batch's keys are saved with
    the progress before it is copied, so a run killed midway has that check made when the
    next run starts (``_settle``)."""
    _settle(old, new, progress, save)
    while not progress.done:
        keys, cursor = old.scan(progress.cursor, BATCH)
        values = old.values(keys)
        progress.in_flight = [
            [old.encode_key(k), old.digest(v).hex()]
            for k, v in zip(keys, values, strict=True)
            if v is not None
        ]
        save(progress)
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired or deleted since the scan
            if new.add(key, value):
                progress.copied += 1
                if old.values([key])[0] is None:  # deleted meanwhile: not resurrected,
                    new.delete_if(key, value)  # unless written again since
            else:
                progress.present += 1
        progress.in_flight = []
        progress.cursor, progress.done = cursor, cursor == ""
        save(progress)
        if on_batch is not None:
            on_batch(len(keys))
    return progress


def _settle(old: Side, new: Side, progress: Progress, save: Callable[[Progress], None]) -> None:
    """The keys of a batch an interrupted run was copying: one the current store no longer
    has while the new store holds the very value the copy read is removed from the new store
    (deleted while it was copied; a write since would have reached the current store too)."""
    if not progress.in_flight:
        return
    for encoded, digest in progress.in_flight:
        key = old.decode_key(encoded)
        if old.values([key])[0] is not None:
            continue
        held = new.values([key])[0]
        if held is not None and new.digest(held).hex() == digest:
            new.delete_if(key, held)
    progress.in_flight = []
    save(progress)


#: Keys a verify lists per kind of mismatch (all of them are counted).
LISTED = 100


@dataclass
class Verified:
    """A complete comparison of both stores: counts, and the first keys of each kind of
    mismatch."""

    old_keys: int = 0
    new_keys: int = 0
    #: Mismatches set right (``repair``): the new store given the current store's value.
    repaired: int = 0
    mismatches: dict[str, int] = field(
        default_factory=lambda: {"differing": 0, "only_old": 0, "only_new": 0}
    )
    keys: dict[str, list[str]] = field(
        default_factory=lambda: {"differing": [], "only_old": [], "only_new": []}
    )

    @property
    def clean(self) -> bool:
        return not any(self.mismatches.values())

    def found(self, kind: str, key: str) -> None:
        self.mismatches[kind] += 1
        if len(self.keys[kind]) < LISTED:
            self.keys[kind].append(key)


def verify(
    old: Side,
    new: Side,
    on_batch: Callable[[int], None] | None = None,
    *,
    repair: bool = False,
) -> Verified:
    """Count both stores' keys, and compare every key's value by its SHA-256 digest (each
    side scanned ``BATCH`` keys at a time; the other side read for the same keys). With
    ``repair``, each mismatch found is set right at once: the new store gets the value the
    current store holds then (read again), or loses a key the current store does not have."""
    found = Verified()

    def set_right(key: str, theirs: Any) -> None:
        current = old.values([key])[0]
        if current is not None:
            new.put(key, current)
        elif theirs is not None:
            new.delete_if(key, theirs)
        found.repaired += 1

    for side, other, is_old in ((old, new, True), (new, old, False)):
        cursor, first = "", True
        while first or cursor:
            first = False
            keys, cursor = side.scan(cursor, BATCH)
            for key, a, b in zip(keys, side.values(keys), other.values(keys), strict=True):
                if a is None:
                    continue  # expired or deleted since the scan
                if is_old:
                    found.old_keys += 1
                    kind = "only_old" if b is None else None
                    if kind is None and side.digest(a) != other.digest(b):
                        kind = "differing"
                    theirs = b
                else:
                    found.new_keys += 1
                    kind, theirs = ("only_new" if b is None else None), a
                if kind is not None:
                    found.found(kind, side.label(key))
                    if repair:
                        set_right(key, theirs)
            if on_batch is not None:
                on_batch(len(keys))
    return found


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()

"""The streaming contract: ordered event streams (alerts) read by consumer groups.

Guarantees every implementation keeps:
- ``publish`` validates the payload against the schema first (nothing is sent on failure) and
  returns only once the store has durably accepted the message; ``publish_many`` validates
  every event before sending any.
- ``publisher()`` trades the wait per call for throughput: each batch is still validated whole
  before any of it is sent, and ``flush()`` (or leaving its ``with`` block) waits for every
  message and raises if any was not delivered.
- Messages with the same key go to the same partition and are read in publish order.
- Consumers in one group share the topic's partitions; each message is handled by one member.
- Delivery is at-least-once: an offset is committed only once every earlier message of its
  partition was acknowledged, so a message not acknowledged (the consumer stopped or crashed)
  is delivered again to the group.
- ``nack`` redelivers a message; after ``max_attempts`` it goes to the dead-letter topic with
  the error and attempt count in its headers, and the partition goes on. A message that cannot
  be decoded or fails the schema on the consumer side goes there at once.
- Replay starts from ``"earliest"``, ``"latest"``, an offset, per-partition offsets or a
  timestamp; ``"committed"`` (the default) resumes the group, or starts at the earliest offset.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter, itemgetter
from types import TracebackType
from typing import Any, ClassVar, Literal, NamedTuple, Self

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from datalayer.errors import DataLayerError, PayloadValidationError
from datalayer.patterns import (
    DictCodec,
    PatternConfig,
    dict_codec,
    validate_model,
    validate_payload,
)
from datalayer.validators import Duration, FieldPath, TopicName

log = logging.getLogger(__name__)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
#: Events validated per pydantic call by ``Stream.encode_many``.
_SLICE = 64
_TO_JSON: TypeAdapter[Any] = TypeAdapter(Any)

#: Where a consumer starts: a named position, one offset for every partition, offsets per
#: partition, or the first message at or after a timestamp.
StartAt = Literal["committed", "earliest", "latest"] | int | Mapping[int, int] | datetime

#: Called with a consumer's partitions each time its share of the group changes.
AssignmentCallback = Callable[[set[int]], None]

HEADER_ERROR = "x-datalayer-error"
HEADER_ATTEMPTS = "x-datalayer-attempts"
HEADER_SOURCE = "x-datalayer-source"


class StreamingPattern(PatternConfig):
    """A topic with partitions; ``key`` names the payload field that picks the partition."""

    accessor: ClassVar[str] = "stream"

    category: Literal["streaming"]
    topic: TopicName
    partitions: int = Field(default=1, ge=1, le=10_000)
    key: FieldPath | None = None
    dead_letter: TopicName | None = None
    max_attempts: int = Field(default=3, ge=1, le=100)
    retention: Duration | None = None
    replication_factor: int = Field(default=1, ge=1, le=10)

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        if self.key:
            yield "key", self.key

    def targets(self) -> list[tuple[str, str]]:
        topics = [("topic", self.topic), ("dead_letter", self.dead_letter)]
        return [(attribute, f"topic '{topic}'") for attribute, topic in topics if topic]

    def summary(self) -> str:
        return f"{super().summary()}, {self.partitions} partitions"


@dataclass(frozen=True)
class OutgoingRecord:
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """A message as the store hands it back, before decoding."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str]
    timestamp: datetime


class Delivery(NamedTuple):
    """Where a published message landed (a tuple: ``publish_many`` makes one per message)."""

    topic: str
    partition: int
    offset: int


class ConsumerHandle(ABC):
    """The store-specific half of a consumer: fetch, commit, seek, membership."""

    @abstractmethod
    def poll(self, max_records: int, timeout: float) -> list[Record]: ...

    @abstractmethod
    def commit(self, partition: int, offset: int) -> None:
        """Record ``offset`` (the next one to read) as the group's position in ``partition``."""

    @abstractmethod
    def seek(self, partition: int, offset: int) -> None: ...

    @abstractmethod
    def assignment(self) -> set[int]: ...

    @abstractmethod
    def close(self) -> None: ...


class Message:
    """One delivered message: ``value`` is the decoded payload; ``ack``/``nack`` settle it."""

    def __init__(self, record: Record, value: Any, attempt: int, tracker: _Tracker) -> None:
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = value
        self.headers = record.headers
        self.timestamp = record.timestamp
        self.attempt = attempt
        self._record = record
        self._tracker = tracker
        self.settled = False

    def ack(self) -> None:
        """The message is handled: its offset may be committed."""
        if not self.settled:
            self.settled = True
            self._tracker.ack(self._record)

    def nack(self, error: BaseException | str) -> None:
        """Handling failed: deliver again, or dead-letter it once ``max_attempts`` is reached."""
        if not self.settled:
            self.settled = True
            self._tracker.nack(self._record, self.attempt, error)

    def __repr__(self) -> str:
        return f"Message({self.topic}/{self.partition}@{self.offset}, key={self.key!r})"


@dataclass
class ProcessStats:
    """What a ``process`` run did."""

    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class _Tracker:
    """Per-partition bookkeeping that turns acks into safe commits and nacks into seeks."""

    def __init__(self, stream: Stream, consumer: ConsumerHandle, commits: bool) -> None:
        self.stream = stream
        self.consumer = consumer
        self.commits = commits
        self.pending: dict[int, set[int]] = {}
        self.high: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.attempts: dict[tuple[int, int], int] = {}
        self.rewound: dict[int, int] = {}
        self.stats = ProcessStats()

    def delivered(self, record: Record) -> None:
        self.pending.setdefault(record.partition, set()).add(record.offset)
        self.high[record.partition] = max(self.high.get(record.partition, 0), record.offset + 1)

    def ack(self, record: Record) -> None:
        p = record.partition
        pending = self.pending.get(p, set())
        pending.discard(record.offset)
        self.attempts.pop((p, record.offset), None)
        target = min(pending) if pending else self.high.get(p, record.offset + 1)
        if self.commits and target > self.committed.get(p, -1) and p in self.consumer.assignment():
            self.consumer.commit(p, target)
            self.committed[p] = target

    def nack(self, record: Record, attempt: int, error: BaseException | str) -> None:
        if attempt >= self.stream.pattern.max_attempts:
            self.stream._dead_letter(record, error, attempt)
            self.stats.dead_lettered += 1
            self.ack(record)
            return
        p = record.partition
        self.attempts[(p, record.offset)] = attempt
        self.pending[p] = {o for o in self.pending.get(p, set()) if o < record.offset}
        self.high[p] = record.offset
        self.rewound[p] = record.offset
        self.consumer.seek(p, record.offset)
        self.stats.retried += 1

    def forget_revoked(self) -> None:
        assigned = self.consumer.assignment()
        for p in [p for p in self.pending if p not in assigned]:
            self.pending.pop(p, None)
            self.high.pop(p, None)
            self.committed.pop(p, None)


def refuse_oversized(label: str, topic: str, values: Sequence[bytes], limit: int) -> None:
    """Refuse the whole batch when one message is over ``limit`` bytes: nothing is sent."""
    if values and max(map(len, values)) > limit:
        size = max(map(len, values))
        raise DataLayerError(
            f"{label}: message of {size} bytes exceeds "
            f"max_message_bytes={limit} for topic '{topic}'; nothing was published"
        )


class Publisher:
    """Publishes for throughput: calls return once messages are queued, not acknowledged.

    Each call still validates its whole batch before queuing any of it. ``flush()``, and
    leaving the ``with`` block, wait until every queued message is acknowledged and raise if
    any was not; a failure reported earlier also stops the next call. Use one per thread.
    This base writes each call through the store's ``_produce`` (so its errors raise at once);
    stores with asynchronous delivery override ``_send`` and ``_wait``.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.topic = stream.pattern.topic
        self.pending = 0

    def publish(
        self, event: Any, *, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        record = self.stream.encode(event, key)
        self._send([record.key], [record.value], [dict(headers)] if headers else None)
        self.pending += 1

    def publish_many(self, events: Iterable[Any]) -> int:
        """Validate every event, then queue them all; returns how many were queued."""
        keys, values = self.stream.encode_many(events)
        if values:
            self._send(keys, values, None)
            self.pending += len(values)
        return len(values)

    def flush(self) -> int:
        """Wait for every queued message; returns how many were delivered since the last flush.

        Raises ``DataLayerError`` (``StoreUnavailable`` when the store could not be reached)
        if any was not delivered.
        """
        count, self.pending = self.pending, 0
        self._wait()
        return count

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Also after an error in the block: what was queued is sent anyway, so its failures
        # must be heard.
        self.flush()

    def _send(
        self, keys: list[str | None], values: list[bytes], headers: list[dict[str, str]] | None
    ) -> None:
        """Queue messages (``headers``: one mapping per message, or none at all)."""
        if headers is None:
            self.stream._produce_values(self.topic, keys, values)
        else:
            records = [OutgoingRecord(*r) for r in zip(keys, values, headers, strict=True)]
            self.stream._produce(self.topic, records)

    def _wait(self) -> None:
        """Wait for what ``_send`` queued; raise if any message was not delivered."""


class Stream(ABC):
    """One streaming pattern bound to its store. Stores implement the four primitives."""

    def __init__(self, pattern: StreamingPattern) -> None:
        self.pattern = pattern
        # Read once: the pattern's private attributes are slow to read on every event.
        self._name = pattern.name
        self._schema = pattern.schema_cls
        self._key_path = pattern.key.split(".") if pattern.key else None
        # One pydantic call validates a whole batch; the schema's serializer writes its bytes.
        # Batches of dicts skip building models when the schema's fields are all it checks.
        self._batch: TypeAdapter[list[BaseModel]] | None = None
        self._to_json: Callable[[BaseModel], bytes] | None = None
        self._dicts: DictCodec | None = None
        if self._schema is not None:
            self._batch = TypeAdapter(list[self._schema])  # type: ignore[name-defined]
            self._to_json = self._schema.__pydantic_serializer__.to_json
            self._dicts = dict_codec(self._schema)
        field = self._key_path[0] if self._key_path and len(self._key_path) == 1 else None
        self._key_field = attrgetter(field) if field and self._schema is not None else None
        self._key_item = itemgetter(field) if field and self._schema is not None else None
        # A key field declared ``str`` is text once validated: no per-event check is needed.
        declared = self._schema.model_fields.get(field) if field and self._schema else None
        self._key_is_text = declared is not None and declared.annotation is str

    # -- primitives a store provides ---------------------------------------------------------

    @abstractmethod
    def _produce(self, topic: str, records: list[OutgoingRecord]) -> list[Delivery]:
        """Append records and return once the store has accepted them all."""

    @abstractmethod
    def _open_consumer(
        self,
        topic: str,
        group: str | None,
        start: StartAt,
        on_assignment: AssignmentCallback | None,
    ) -> ConsumerHandle:
        """A consumer of ``topic``; ``on_assignment`` hears each change of its partitions."""

    @abstractmethod
    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        """The next offset of each partition: where a consumer starting at 'latest' begins."""

    def _partitions(self, topic: str) -> int:
        return self.pattern.partitions

    def _produce_values(
        self, topic: str, keys: list[str | None], values: list[bytes]
    ) -> list[Delivery]:
        """``_produce`` for messages without headers; a store may skip building records."""
        records = [OutgoingRecord(k, v) for k, v in zip(keys, values, strict=True)]
        return self._produce(topic, records)

    # -- the contract, written once ----------------------------------------------------------

    def encode(self, event: Any, key: str | None = None) -> OutgoingRecord:
        """Validate and serialize one event (compact UTF-8 JSON) and find its partition key."""
        if self._to_json is not None and self._schema is not None:
            value: Any = validate_model(self._name, self._schema, event)
            body = self._to_json(value)
        else:
            value = validate_payload(self._name, None, event)
            body = _JSON.encode(value).encode()
        if key is None and self._key_path:
            key = self._key_text(self._key_value(value))
        return OutgoingRecord(key=key, value=body)

    def encode_many(self, events: Iterable[Any]) -> tuple[list[str | None], list[bytes]]:
        """Partition keys and bodies of a batch; an invalid event raises before any is sent.

        With a schema, events are validated a slice at a time (one pydantic call each), and
        each slice's models are serialized and dropped before the next: a whole batch of live
        models would keep the cyclic garbage collector promoting and rescanning them, which
        costs more than validating. A slice of dicts is validated into dicts instead when the
        schema allows (``DictCodec``: same checks, same bytes). A slice that fails is checked
        one event at a time to name the first bad one (and to accept instances of other models).
        """
        batch = events if isinstance(events, list) else list(events)
        if self._batch is None or self._to_json is None:
            records = [self.encode(event) for event in batch]
            return [r.key for r in records], [r.value for r in records]
        keys: list[str | None] = []
        values: list[bytes] = []
        dicts = self._dicts
        for start in range(0, len(batch), _SLICE):
            part = batch[start : start + _SLICE]
            if dicts is not None and type(part[0]) is dict:
                try:
                    rows = dicts.validate_many(part)
                except ValidationError:
                    pass  # the model path below names the first bad event
                else:
                    values += map(dicts.to_json, rows)
                    keys += self._keys(rows, self._key_item)
                    continue
            try:
                models = self._batch.validate_python(part)
            except ValidationError:
                models = [self._validate_at(start + i, event) for i, event in enumerate(part)]
            values += map(self._to_json, models)
            keys += self._keys(models, self._key_field)
        return keys, values

    def _keys(self, found: list[Any], read_key: Callable[[Any], Any] | None) -> list[str | None]:
        """Partition keys of validated events (models or dicts; ``read_key`` reads one)."""
        if not self._key_path:
            return [None] * len(found)
        if read_key is not None:
            found = list(map(read_key, found))
            if self._key_is_text:
                return found
        else:
            found = [self._key_value(event) for event in found]
        if set(map(type, found)) == {str}:
            return found
        return [self._key_text(k) for k in found]

    def _validate_at(self, index: int, event: Any) -> BaseModel:
        assert self._schema is not None
        try:
            return validate_model(self._name, self._schema, event)
        except PayloadValidationError as exc:
            problems = [(f"[{index}].{f}" if f else f"[{index}]", m) for f, m in exc.problems]
            raise PayloadValidationError(self._name, problems) from exc

    def _key_value(self, value: Any) -> Any:
        for part in self._key_path or ():
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        return value

    def _key_text(self, value: Any) -> str:
        if value is None:
            raise PayloadValidationError(
                self._name, [(self.pattern.key or "", "the partition key field is missing")]
            )
        if isinstance(value, str):
            return value
        return _JSON.encode(_TO_JSON.dump_python(value, mode="json")).strip('"')

    def partition_for(self, key: str | None, topic: str | None = None) -> int:
        """A stable partition for a key (CRC32, as librdkafka's consistent partitioner)."""
        count = self._partitions(topic or self.pattern.topic)
        if key is None:
            return uuid.uuid4().int % count
        return zlib.crc32(key.encode()) % count

    def publish(
        self, event: Any, *, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        record = self.encode(event, key)
        if headers:
            record = OutgoingRecord(record.key, record.value, dict(headers))
        return self._produce(self.pattern.topic, [record])[0]

    def publish_many(self, events: Iterable[Any]) -> list[Delivery]:
        keys, values = self.encode_many(events)
        return self._produce_values(self.pattern.topic, keys, values) if values else []

    def publisher(self) -> Publisher:
        """A ``Publisher`` for this stream: no wait per call, one wait (and check) at the end."""
        return Publisher(self)

    def decode(self, record: Record) -> Any:
        try:
            payload = json.loads(record.value)
        except ValueError as exc:
            raise PayloadValidationError(self._name, [("", f"not JSON: {exc}")]) from exc
        return validate_payload(self._name, self._schema, payload)

    def consume(
        self,
        group: str | None,
        *,
        start: StartAt = "committed",
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        batch_size: int = 100,
        on_assignment: AssignmentCallback | None = None,
    ) -> Iterator[Message]:
        """Yield messages for ``group`` (``None``: read without committing, e.g. to replay).

        Stops after ``max_messages``, or once no message came for ``idle_timeout`` seconds
        while the consumer held partitions; with neither it runs until the caller stops.
        """
        return self._consume(
            self.pattern.topic,
            group,
            start,
            max_messages,
            idle_timeout,
            batch_size,
            None,
            True,
            on_assignment,
        )

    def dead_letters(
        self,
        group: str | None = None,
        *,
        start: StartAt = "earliest",
        max_messages: int | None = None,
        idle_timeout: float | None = 1.0,
    ) -> Iterator[Message]:
        """Read the dead-letter topic; values are decoded JSON when possible, else bytes."""
        if not self.pattern.dead_letter:
            raise DataLayerError(f"pattern '{self.pattern.name}' has no dead_letter topic")
        return self._consume(
            self.pattern.dead_letter, group, start, max_messages, idle_timeout, 100, None, False
        )

    def process(
        self,
        handler: Callable[[Message], object],
        group: str,
        *,
        start: StartAt = "committed",
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        retry_backoff: float = 0.0,
    ) -> ProcessStats:
        """Run ``handler`` on each message: retried up to ``max_attempts``, then dead-lettered."""
        stats = ProcessStats()
        for message in self._consume(
            self.pattern.topic, group, start, max_messages, idle_timeout, 100, stats, True
        ):
            while True:
                try:
                    handler(message)
                except Exception as exc:
                    if message.attempt >= self.pattern.max_attempts:
                        stats.errors.append(f"{message!r}: {type(exc).__name__}: {exc}")
                        message.nack(exc)
                        break
                    stats.retried += 1
                    message.attempt += 1
                    if retry_backoff:
                        time.sleep(retry_backoff * message.attempt)
                    continue
                message.ack()
                stats.handled += 1
                break
        return stats

    def _consume(
        self,
        topic: str,
        group: str | None,
        start: StartAt,
        max_messages: int | None,
        idle_timeout: float | None,
        batch_size: int,
        stats: ProcessStats | None,
        validate: bool,
        on_assignment: AssignmentCallback | None = None,
    ) -> Iterator[Message]:
        opened = time.monotonic()
        clock = {"last": opened, "assigned": False}

        def assignment_changed(partitions: set[int]) -> None:
            clock["last"], clock["assigned"] = time.monotonic(), True
            if on_assignment is not None:
                on_assignment(partitions)

        consumer = self._open_consumer(topic, group, start, assignment_changed)
        tracker = _Tracker(self, consumer, commits=group is not None)
        if stats is not None:
            tracker.stats = stats
        yielded = 0
        poll_timeout = 0.2 if idle_timeout is None else min(0.2, idle_timeout)
        try:
            while max_messages is None or yielded < max_messages:
                want = (
                    batch_size if max_messages is None else min(batch_size, max_messages - yielded)
                )
                records = consumer.poll(want, poll_timeout)
                tracker.forget_revoked()
                if not records:
                    if idle_timeout is not None and _idle(clock, opened, idle_timeout):
                        return
                    continue
                clock["last"] = time.monotonic()
                tracker.rewound.clear()
                for record in records:
                    if (
                        record.partition in tracker.rewound
                        or record.partition not in consumer.assignment()
                    ):
                        continue
                    tracker.delivered(record)
                    try:
                        value = self.decode(record) if validate else _loose_decode(record.value)
                    except PayloadValidationError as exc:
                        log.warning(
                            "undecodable message %s/%s@%s: %s",
                            topic,
                            record.partition,
                            record.offset,
                            exc,
                        )
                        if self.pattern.dead_letter:
                            self._dead_letter(record, exc, 1)
                        tracker.stats.dead_lettered += 1
                        tracker.ack(record)
                        continue
                    attempt = tracker.attempts.get((record.partition, record.offset), 0) + 1
                    yield Message(record, value, attempt, tracker)
                    yielded += 1
                    if max_messages is not None and yielded >= max_messages:
                        return
        finally:
            consumer.close()

    def _dead_letter(self, record: Record, error: BaseException | str, attempts: int) -> None:
        if not self.pattern.dead_letter:
            log.error(
                "dropping %s/%s@%s after %s attempts (pattern '%s' has no dead_letter): %s",
                record.topic,
                record.partition,
                record.offset,
                attempts,
                self.pattern.name,
                error,
            )
            return
        headers = {
            **record.headers,
            HEADER_ERROR: f"{type(error).__name__}: {error}"[:2000]
            if isinstance(error, BaseException)
            else str(error)[:2000],
            HEADER_ATTEMPTS: str(attempts),
            HEADER_SOURCE: f"{record.topic}/{record.partition}/{record.offset}",
        }
        self._produce(self.pattern.dead_letter, [OutgoingRecord(record.key, record.value, headers)])


#: How long a consumer may wait to be given partitions before ``idle_timeout`` starts to count.
JOIN_GRACE = 30.0


def _idle(clock: dict[str, Any], opened: float, idle_timeout: float) -> bool:
    """Idle once nothing came for ``idle_timeout`` while holding partitions (a group join,
    which takes seconds on Kafka, does not count), or when no partition came at all."""
    now = time.monotonic()
    if not clock["assigned"]:
        return now - opened >= max(idle_timeout, JOIN_GRACE)
    return bool(now - clock["last"] >= idle_timeout)


def _loose_decode(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value

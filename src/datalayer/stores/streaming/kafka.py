"""``kafka``: the streaming contract on Apache Kafka (confluent-kafka).

Publishing is idempotent (``enable.idempotence``, ``acks=all``) and returns once every message
of the batch is acknowledged by the broker; a ``KafkaPublisher`` instead leaves messages in
librdkafka's queue (bounded by ``queue.buffering.max.messages``: a full queue makes the caller
wait) and waits once, on flush. Partitions follow the embedded log's CRC32 rule, so a key lands
on the same partition number on both: chosen here, or for publishers by librdkafka's
``consistent_random`` partitioner, which is the same rule for every key but the empty one.
Consumers commit manually, only past acknowledged messages (the contract's tracker decides what
to commit).
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from datalayer.categories.streaming import (
    AssignmentCallback,
    ConsumerHandle,
    Delivery,
    OutgoingRecord,
    Publisher,
    Record,
    StartAt,
    Stream,
    StreamingPattern,
    refuse_oversized,
)
from datalayer.errors import DataLayerError, NotFound, StoreUnavailable
from datalayer.stores.base import Store, StoreConfig, require_driver
from datalayer.validators import Duration

#: Seconds between a publisher's polls for failed deliveries while it queues messages.
_POLL_INTERVAL = 0.1

#: librdkafka error codes that mean "the cluster cannot be reached right now".
_UNAVAILABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_MSG_TIMED_OUT", "_TIMED_OUT", "_RESOLVE"}


class KafkaConfig(StoreConfig):
    """Bootstrap servers (``host:port[,host:port]``) and client settings."""

    serves: ClassVar[frozenset[str]] = frozenset({"streaming"})
    extra: ClassVar[str | None] = "kafka"

    type: Literal["kafka"]
    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "datalayer"
    delivery_timeout_ms: int = Field(default=30_000, ge=1000)
    request_timeout_ms: int = Field(default=10_000, ge=500)
    session_timeout: Duration = timedelta(seconds=10)
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    linger_ms: int = Field(default=5, ge=0)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def target(self) -> str:
        return self.bootstrap_servers

    def connect(self, name: str, base_dir: Path) -> KafkaStore:
        require_driver("confluent_kafka", "kafka", self.type)
        return KafkaStore(name, self)


class KafkaStore(Store[StreamingPattern, Stream]):
    config: KafkaConfig

    def __init__(self, name: str, config: KafkaConfig) -> None:
        super().__init__(name, config)
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient(self.client_config())
        self._producer: Any = None
        self._publishing_producer: Any = None
        self._lock = threading.Lock()
        self._partitions: dict[str, int] = {}

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.config.bootstrap_servers,
            "client.id": self.config.client_id,
            "socket.timeout.ms": self.config.request_timeout_ms,
            "log_level": 3,
            **self.config.options,
            **extra,
        }

    @property
    def producer(self) -> Any:
        """One idempotent producer per store, shared by its patterns (thread-safe in librdkafka)."""
        with self._lock:
            if self._producer is None:
                self._producer = self._new_producer()
            return self._producer

    @property
    def publishing_producer(self) -> Any:
        """The producer every ``KafkaPublisher`` of this store shares.

        It reports failed deliveries only: a publisher never says where a message landed, and a
        report for each success would cost the calling thread one Python callback per message.
        """
        with self._lock:
            if self._publishing_producer is None:
                self._publishing_producer = self._new_producer(
                    **{"delivery.report.only.error": True, "partitioner": "consistent_random"}
                )
            return self._publishing_producer

    def _new_producer(self, **extra: Any) -> Any:
        from confluent_kafka import Producer

        return Producer(
            self.client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": self.config.linger_ms,
                    "delivery.timeout.ms": self.config.delivery_timeout_ms,
                    "request.timeout.ms": min(
                        self.config.request_timeout_ms, self.config.delivery_timeout_ms
                    ),
                    "message.max.bytes": self.config.max_message_bytes + 4096,
                    **extra,
                }
            )
        )

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Kafka errors as datalayer errors naming this store."""
        from confluent_kafka import KafkaError, KafkaException

        try:
            yield
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.name() if isinstance(error, KafkaError) else ""
            if code in _UNAVAILABLE:
                raise StoreUnavailable(f"{self.label} is unavailable: {error}") from exc
            raise DataLayerError(f"{self.label}: {error or exc}") from exc

    def handle(self, pattern: StreamingPattern) -> KafkaStream:
        return KafkaStream(pattern, self)

    def partitions(self, topic: str) -> int:
        """Partition count of a topic, from cluster metadata (cached)."""
        if topic not in self._partitions:
            timeout = self.config.request_timeout_ms / 1000
            with self.errors():
                metadata = self.admin.list_topics(topic=topic, timeout=timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise NotFound(
                    f"{self.label}: topic '{topic}' does not exist; run 'datalayer apply'"
                )
            self._partitions[topic] = len(described.partitions)
        return self._partitions[topic]

    def apply(self, patterns: list[StreamingPattern]) -> list[str]:
        """Create each topic and its dead-letter topic, grow partitions, set retention and size."""
        done = []
        for pattern in patterns:
            settings = {"max.message.bytes": str(self.config.max_message_bytes + 1024)}
            if pattern.retention:
                settings["retention.ms"] = str(int(pattern.retention.total_seconds() * 1000))
            for topic in filter(None, [pattern.topic, pattern.dead_letter]):
                with self.errors():
                    done.append(self._converge(topic, pattern, settings))
                self._partitions.pop(topic, None)
        return done

    def _converge(self, topic: str, pattern: StreamingPattern, settings: dict[str, str]) -> str:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            NewPartitions,
            NewTopic,
        )

        timeout = self.config.request_timeout_ms / 1000
        described = self.admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        if described is None or described.error is not None:
            new = NewTopic(topic, pattern.partitions, pattern.replication_factor, config=settings)
            try:
                self.admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
                self._await_partitions(topic, pattern.partitions)
                return f"topic '{topic}' created ({pattern.partitions} partitions)"
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            described = self.admin.list_topics(topic=topic, timeout=timeout).topics[topic]
        current = len(described.partitions)
        if current > pattern.partitions:
            raise DataLayerError(
                f"{self.label}: topic '{topic}' has {current} partitions; "
                f"it cannot shrink to {pattern.partitions}"
            )
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in settings.items()
            ],
        )
        self.admin.incremental_alter_configs([resource])[resource].result(timeout)
        if current < pattern.partitions:
            self.admin.create_partitions([NewPartitions(topic, pattern.partitions)])[topic].result(
                timeout
            )
            self._await_partitions(topic, pattern.partitions)
            return f"topic '{topic}' grown to {pattern.partitions} partitions"
        return f"topic '{topic}' exists ({pattern.partitions} partitions)"

    def _await_partitions(self, topic: str, count: int) -> None:
        """Wait until cluster metadata shows every partition with a leader (it lags creation)."""
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000
        while time.monotonic() < deadline:
            described = self.admin.list_topics(topic=topic, timeout=5).topics.get(topic)
            partitions = described.partitions if described is not None else {}
            if len(partitions) >= count and all(p.leader >= 0 for p in partitions.values()):
                return
            time.sleep(0.1)
        raise StoreUnavailable(
            f"{self.label}: topic '{topic}' did not get {count} partitions in time"
        )

    def ping(self) -> None:
        with self.errors():
            self.admin.list_topics(timeout=self.config.request_timeout_ms / 1000)

    def close(self) -> None:
        for producer in (self._producer, self._publishing_producer):
            if producer is not None:
                producer.flush(5)
        self._producer = self._publishing_producer = None


class KafkaStream(Stream):
    def __init__(self, pattern: StreamingPattern, store: KafkaStore) -> None:
        super().__init__(pattern)
        self.store = store

    def _partitions(self, topic: str) -> int:
        return self.store.partitions(topic)

    def publisher(self) -> KafkaPublisher:
        return KafkaPublisher(self)

    def _produce(self, topic: str, records: list[OutgoingRecord]) -> list[Delivery]:
        """Send every record, then wait until each one is acknowledged (or failed)."""
        acks = _Acks()
        placed = self._send(
            topic,
            [r.key for r in records],
            [r.value for r in records],
            [list(r.headers.items()) or None for r in records],
            acks.report,
        )
        return self._confirm(topic, acks, placed)

    def _produce_values(
        self, topic: str, keys: list[str | None], values: list[bytes]
    ) -> list[Delivery]:
        acks = _Acks()
        return self._confirm(topic, acks, self._send(topic, keys, values, None, acks.report))

    def _confirm(self, topic: str, acks: _Acks, placed: list[int]) -> list[Delivery]:
        """Wait for every report, then say where each message landed, in publish order."""
        unconfirmed = self._settle()
        if acks.failures or unconfirmed:
            raise self._failed(topic, acks.failures, unconfirmed)
        return acks.deliveries(topic, placed)

    def _send(
        self,
        topic: str,
        keys: list[str | None],
        values: list[bytes],
        headers: list[list[tuple[str, str]] | None] | None,
        report: Callable[[Any, Any], None],
        producer: Any = None,
    ) -> list[int]:
        """Queue messages without waiting; ``report`` hears each one's delivery.

        Returns each message's partition. A full librdkafka queue makes this wait for room.
        """
        raws = [None if key is None else key.encode() for key in keys]
        count = self._partitions(topic)
        placed = [
            self.partition_for(None, topic) if raw is None else zlib.crc32(raw) % count
            for raw in raws
        ]
        _queue(self.store, producer, topic, values, raws, placed, report, headers)
        return placed

    def _settle(self, producer: Any = None) -> int:
        """Wait for the delivery report of everything queued; returns how many never came."""
        producer = producer or self.store.producer
        with self.store.errors():
            return int(producer.flush(self.store.config.delivery_timeout_ms / 1000 + 5))

    def _failed(self, topic: str, failures: list[Any], unconfirmed: int) -> DataLayerError:
        error = failures[0] if failures else f"{unconfirmed} messages not confirmed in time"
        code = error.name() if hasattr(error, "name") else "_TIMED_OUT"
        kind = StoreUnavailable if code in _UNAVAILABLE else DataLayerError
        count = len(failures) + unconfirmed
        return kind(
            f"{self.store.label}: publishing to '{topic}' failed for {count} message(s): {error}"
        )

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        topic = topic or self.pattern.topic
        count = self._partitions(topic)
        consumer = Consumer(
            self.store.client_config(**{"group.id": f"datalayer-offsets-{uuid.uuid4().hex}"})
        )
        timeout = self.store.config.request_timeout_ms / 1000
        try:
            with self.store.errors():
                return {
                    p: int(
                        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                    )
                    for p in range(count)
                }
        finally:
            consumer.close()

    def _open_consumer(
        self,
        topic: str,
        group: str | None,
        start: StartAt,
        on_assignment: AssignmentCallback | None,
    ) -> KafkaConsumer:
        self._partitions(topic)
        return KafkaConsumer(self.store, topic, group, start, on_assignment)


def _queue(
    store: KafkaStore,
    producer: Any,
    topic: str,
    values: list[bytes],
    keys: Iterable[str | bytes | None],
    partitions: Iterable[int],
    report: Callable[[Any, Any], None],
    headers: list[list[tuple[str, str]] | None] | None = None,
) -> None:
    """``produce`` each message on ``producer`` (the store's own when None; partition -1: the
    producer's partitioner picks), waiting for room in a full queue. A batch with a message
    over the store's size limit is refused whole. Arguments go by position: parsing keywords
    costs more than the call.
    """
    refuse_oversized(store.label, topic, values, store.config.max_message_bytes)
    producer = producer or store.producer
    calls: Iterator[tuple[Any, ...]]  # one iterator: a full queue resumes it where it stopped
    if headers is None:
        calls = zip(repeat(topic), values, keys, partitions, repeat(report), strict=False)
        produce = producer.produce
    else:
        calls = zip(repeat(topic), values, keys, partitions, repeat(report), headers, strict=False)
        produce = partial(_produce_with_headers, producer)
    with store.errors():
        while True:
            try:
                for call in calls:
                    produce(*call)
                return
            except BufferError:
                while True:  # the queue is full: serve delivery reports until ``call`` fits
                    producer.poll(0.1)
                    try:
                        produce(*call)
                        break
                    except BufferError:
                        continue


def _produce_with_headers(producer: Any, *args: Any) -> None:
    *positional, head = args
    producer.produce(*positional, headers=head)


class _Acks:
    """Delivery reports of one ``_produce`` call, through one bound callback."""

    def __init__(self) -> None:
        self.failures: list[Any] = []
        self.offsets: defaultdict[int, list[int]] = defaultdict(list)

    def report(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(error)
        else:
            self.offsets[message.partition()].append(message.offset())

    def deliveries(self, topic: str, placed: list[int]) -> list[Delivery]:
        """Deliveries in publish order: an idempotent producer keeps each partition's order."""
        queues = {p: iter(sorted(offsets)).__next__ for p, offsets in self.offsets.items()}
        return [Delivery(topic, p, queues[p]()) for p in placed]


class KafkaPublisher(Publisher):
    """Queues into librdkafka and waits once, on flush; one bound callback hears failures.

    Publishers share the store's ``publishing_producer``, which reports failures only; each
    message still carries its own publisher's callback, so a failure reaches the right one.
    That producer partitions by itself, by the same CRC32 rule as ``partition_for``.
    """

    def __init__(self, stream: KafkaStream) -> None:
        super().__init__(stream)
        self.kafka = stream
        self.producer = stream.store.publishing_producer
        self.failures: list[Any] = []
        self.next_poll = 0.0

    def _report(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(error)

    def _send(
        self, keys: list[str | None], values: list[bytes], headers: list[dict[str, str]] | None
    ) -> None:
        self._raise_failures(0)
        if headers or "" in keys:
            # librdkafka's partitioner sends an empty key to a random partition, not CRC32's.
            heads = [list(h.items()) or None for h in headers] if headers else None
            self.kafka._send(self.topic, keys, values, heads, self._report, self.producer)
        else:
            _queue(
                self.kafka.store, self.producer, self.topic, values, keys, repeat(-1), self._report
            )
        now = time.monotonic()
        if now >= self.next_poll:  # hear failures that are ready, so they stop us early
            self.producer.poll(0)  # (not after every call: a poll costs ~0.1 ms)
            self.next_poll = now + _POLL_INTERVAL

    def _wait(self) -> None:
        self._raise_failures(self.kafka._settle(self.producer))

    def _raise_failures(self, unconfirmed: int) -> None:
        if self.failures or unconfirmed:
            failures, self.failures = self.failures, []
            raise self.kafka._failed(self.topic, failures, unconfirmed)


class KafkaConsumer(ConsumerHandle):
    """A confluent-kafka consumer in a group, committing only what the tracker asks."""

    def __init__(
        self,
        store: KafkaStore,
        topic: str,
        group: str | None,
        start: StartAt,
        on_assignment: AssignmentCallback | None,
    ) -> None:
        from confluent_kafka import Consumer

        self.store = store
        self.topic = topic
        self.group = group
        self.start = start
        self.on_assignment = on_assignment
        self.assigned: set[int] = set()
        self.started: set[int] = set()
        session_ms = int(store.config.session_timeout.total_seconds() * 1000)
        self.consumer = Consumer(
            store.client_config(
                **{
                    "group.id": group or f"datalayer-replay-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": max(100, session_ms // 4),
                    "enable.partition.eof": False,
                    "fetch.wait.max.ms": 100,
                }
            )
        )
        with store.errors():
            self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.partition not in self.started:
                tp.offset = self._start_offset(tp.partition)
                self.started.add(tp.partition)
        consumer.assign(partitions)
        self.assigned |= {tp.partition for tp in partitions}
        if self.on_assignment is not None:
            self.on_assignment(set(self.assigned))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned -= {tp.partition for tp in partitions}
        consumer.unassign()
        if self.on_assignment is not None:
            self.on_assignment(set(self.assigned))

    def _start_offset(self, partition: int) -> int:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED, TopicPartition

        start: Any = self.start
        if isinstance(start, Mapping):
            start = start.get(partition, "committed")
        if start == "committed":
            return int(OFFSET_STORED)
        if start == "earliest":
            return int(OFFSET_BEGINNING)
        if start == "latest":
            return int(OFFSET_END)
        if isinstance(start, datetime):
            stamp = start if start.tzinfo else start.replace(tzinfo=UTC)
            wanted = TopicPartition(self.topic, partition, int(stamp.timestamp() * 1000))
            [found] = self.consumer.offsets_for_times([wanted], timeout=10)
            return int(found.offset) if found.offset >= 0 else int(OFFSET_END)
        if isinstance(start, int) and not isinstance(start, bool):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10
            )
            return min(max(start, low), high)
        raise DataLayerError(f"cannot start a consumer at {start!r}")

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        with self.store.errors():
            messages = self.consumer.consume(num_messages=max_records, timeout=timeout)
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == error._PARTITION_EOF:
                    continue
                with self.store.errors():
                    from confluent_kafka import KafkaException

                    raise KafkaException(error)
            _, stamp = message.timestamp()
            records.append(
                Record(
                    str(message.topic()),
                    int(message.partition() or 0),
                    int(message.offset() or 0),
                    _text(message.key()),
                    _bytes(message.value()),
                    {str(k): _text(v) or "" for k, v in _headers(message)},
                    datetime.fromtimestamp(stamp / 1000, UTC),
                )
            )
        return records

    def commit(self, partition: int, offset: int) -> None:
        if self.group is None:
            return
        from confluent_kafka import TopicPartition

        with self.store.errors():
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, partition, offset)], asynchronous=False
            )

    def seek(self, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        if partition in self.assigned:
            with self.store.errors():
                self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def assignment(self) -> set[int]:
        return set(self.assigned)

    def close(self) -> None:
        self.consumer.close()


def _text(value: str | bytes | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _headers(message: Any) -> list[tuple[str, str | bytes | None]]:
    return list(message.headers() or [])

"""Sending to Kafka: the store's producers, the queue loop, delivery reports, the publisher."""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from itertools import repeat
from typing import Any

from datalayer.categories.streaming import Delivery, OutgoingRecord, PublishQueue
from datalayer.categories.streaming.backend import partition_of, refuse_oversized
from datalayer.errors import DataLayerError, StoreLabel, StoreUnavailable
from datalayer.stores.streaming.kafka.config import UNAVAILABLE, KafkaConfig, kafka_errors

#: Seconds between a publisher's polls for failed deliveries while it queues messages.
_POLL_INTERVAL = 0.1

#: Delivery report callback: ``(error, message)``, as librdkafka calls it.
Report = Callable[[Any, Any], None]


class KafkaProducer:
    """The store's librdkafka producers, shared by its patterns (thread-safe in librdkafka)."""

    def __init__(
        self, label: StoreLabel, config: KafkaConfig, partitions: Callable[[str], int]
    ) -> None:
        self.label = label
        self.config = config
        self.partitions = partitions
        self._lock = threading.Lock()
        self._confirming: Any = None
        self._publishing: Any = None

    @property
    def confirming(self) -> Any:
        """The producer of ``produce``: it reports every delivery, to say where each landed."""
        with self._lock:
            if self._confirming is None:
                self._confirming = self._new_producer()
            return self._confirming

    @property
    def publishing(self) -> Any:
        """The producer every ``KafkaQueue`` of this store shares.

        It reports failed deliveries only: a publisher never says where a message landed, and a
        report for each success would cost the calling thread one Python callback per message.
        """
        with self._lock:
            if self._publishing is None:
                self._publishing = self._new_producer(
                    **{"delivery.report.only.error": True, "partitioner": "consistent_random"}
                )
            return self._publishing

    def _new_producer(self, **extra: Any) -> Any:
        from confluent_kafka import Producer

        config = self.config
        return Producer(
            config.client_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": config.linger_ms,
                    "delivery.timeout.ms": config.delivery_timeout_ms,
                    "request.timeout.ms": min(
                        config.request_timeout_ms, config.delivery_timeout_ms
                    ),
                    "message.max.bytes": config.max_message_bytes + 4096,
                    **extra,
                }
            )
        )

    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Send every record, then wait until each one is acknowledged (or failed)."""
        acks = _Acks()
        placed = self.send(
            topic,
            [r.key for r in records],
            [r.value for r in records],
            [_header_list(r.headers) for r in records],
            acks.report,
        )
        return self._confirm(topic, acks, placed)

    def produce_values(
        self, topic: str, keys: list[str | None], values: list[bytes]
    ) -> list[Delivery]:
        acks = _Acks()
        return self._confirm(topic, acks, self.send(topic, keys, values, None, acks.report))

    def _confirm(self, topic: str, acks: _Acks, placed: list[int]) -> list[Delivery]:
        """Wait for every report, then say where each message landed, in publish order."""
        unconfirmed = self.settle(self.confirming)
        if acks.failures or unconfirmed:
            raise self.failed(topic, acks.failures, unconfirmed)
        return acks.deliveries(topic, placed)

    def send(
        self,
        topic: str,
        keys: list[str | None],
        values: list[bytes],
        headers: list[list[tuple[str, bytes]] | None] | None,
        report: Report,
        producer: Any = None,
    ) -> list[int]:
        """Queue messages on ``producer`` (the confirming one when None) without waiting;
        ``report`` hears each one's delivery. Returns each message's partition (the CRC32
        rule). A full librdkafka queue makes this wait for room.
        """
        raws = [None if key is None else key.encode() for key in keys]
        count = self.partitions(topic)
        placed = [
            partition_of(None, count) if raw is None else zlib.crc32(raw) % count for raw in raws
        ]
        self.queue(producer or self.confirming, topic, values, raws, placed, report, headers)
        return placed

    def queue(
        self,
        producer: Any,
        topic: str,
        values: list[bytes],
        keys: Iterable[str | bytes | None],
        partitions: Iterable[int],
        report: Report,
        headers: list[list[tuple[str, bytes]] | None] | None = None,
    ) -> None:
        """``produce`` each message on ``producer`` (partition -1: the producer's partitioner
        picks), waiting for room in a full queue. A batch with a message over the store's size
        limit is refused whole. Arguments go by position: parsing keywords costs more than the
        call.
        """
        refuse_oversized(self.label, topic, values, self.config.max_message_bytes)
        calls: Iterator[tuple[Any, ...]]  # one iterator: a full queue resumes it where it stopped
        if headers is None:
            calls = zip(repeat(topic), values, keys, partitions, repeat(report), strict=False)
            produce = producer.produce
        else:
            calls = zip(
                repeat(topic), values, keys, partitions, repeat(report), headers, strict=False
            )
            produce = partial(_produce_with_headers, producer)
        with kafka_errors(self.label):
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

    def settle(self, producer: Any) -> int:
        """Wait for the delivery report of everything queued; returns how many never came."""
        with kafka_errors(self.label):
            return int(producer.flush(self.config.delivery_timeout_ms / 1000 + 5))

    def failed(self, topic: str, failures: list[Any], unconfirmed: int) -> DataLayerError:
        """The error for messages that were not delivered (``StoreUnavailable`` if unreachable)."""
        error = failures[0] if failures else f"{unconfirmed} messages not confirmed in time"
        code = error.name() if hasattr(error, "name") else "_TIMED_OUT"
        kind = StoreUnavailable if code in UNAVAILABLE else DataLayerError
        count = len(failures) + unconfirmed
        return kind(
            f"{self.label}: publishing to '{topic}' failed for {count} message(s): {error}",
            store=self.label.name,
        )

    def close(self) -> None:
        for producer in (self._confirming, self._publishing):
            if producer is not None:
                producer.flush(5)
        self._confirming = self._publishing = None


def _header_list(headers: dict[str, str]) -> list[tuple[str, bytes]] | None:
    """Headers as confluent-kafka takes them, values as UTF-8 bytes: a ``str`` value goes to
    librdkafka as a C string, cut at its first NUL."""
    return [(name, text.encode()) for name, text in headers.items()] or None


def _produce_with_headers(producer: Any, *args: Any) -> None:
    *positional, head = args
    producer.produce(*positional, headers=head)


class _Acks:
    """Delivery reports of one ``produce`` call, through one bound callback."""

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


class KafkaQueue(PublishQueue):
    """A publisher's queue: into librdkafka, waiting once, on ``wait``; one bound callback
    hears failures.

    Queues share the store's ``publishing`` producer, which reports failures only; each message
    still carries its own queue's callback, so a failure reaches the right one. That producer
    partitions by itself, by the same CRC32 rule as ``Stream.partition_for``.
    """

    def __init__(self, kafka: KafkaProducer, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.producer = kafka.publishing
        self.failures: list[Any] = []
        self.next_poll = 0.0

    def _report(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(error)

    def send(
        self, keys: list[str | None], values: list[bytes], headers: list[dict[str, str]] | None
    ) -> None:
        self._raise_failures(0)
        if headers or "" in keys:
            # librdkafka's partitioner sends an empty key to a random partition, not CRC32's.
            heads = [_header_list(h) for h in headers] if headers else None
            self.kafka.send(self.topic, keys, values, heads, self._report, self.producer)
        else:
            self.kafka.queue(self.producer, self.topic, values, keys, repeat(-1), self._report)
        now = time.monotonic()
        if now >= self.next_poll:  # hear failures that are ready, so they stop us early
            self.producer.poll(0)  # (not after every call: a poll costs ~0.1 ms)
            self.next_poll = now + _POLL_INTERVAL

    def wait(self) -> None:
        self._raise_failures(self.kafka.settle(self.producer))

    def _raise_failures(self, unconfirmed: int) -> None:
        if self.failures or unconfirmed:
            failures, self.failures = self.failures, []
            raise self.kafka.failed(self.topic, failures, unconfirmed)

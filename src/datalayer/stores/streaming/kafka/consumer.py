"""Reading from Kafka: a group member that commits only what the contract's tracker asks."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from datalayer.categories.streaming import (
    AssignmentCallback,
    ConsumerHandle,
    Record,
    StartPositions,
)
from datalayer.errors import StoreLabel, StoreTimeout
from datalayer.stores.streaming.kafka.config import KafkaConfig, kafka_errors


class KafkaConsumer(ConsumerHandle):
    """A confluent-kafka consumer in a group (a throwaway one for ``group=None``)."""

    def __init__(
        self,
        label: StoreLabel,
        config: KafkaConfig,
        topic: str,
        group: str | None,
        start: StartPositions,
        on_assignment: AssignmentCallback,
    ) -> None:
        from confluent_kafka import Consumer

        self.label = label
        self.topic = topic
        self.group = group
        self.start = start
        self.on_assignment = on_assignment
        self.assigned: set[int] = set()
        self.started: set[int] = set()
        self.timeout = config.resilience.timeout.total_seconds()
        session_ms = int(config.session_timeout.total_seconds() * 1000)
        self.consumer = Consumer(
            config.client_config(
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
        with kafka_errors(label):
            self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.partition not in self.started:
                tp.offset = self._start_offset(tp.partition)
                self.started.add(tp.partition)
        consumer.assign(partitions)
        self.assigned |= {tp.partition for tp in partitions}
        self.on_assignment(set(self.assigned))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned -= {tp.partition for tp in partitions}
        consumer.unassign()
        self.on_assignment(set(self.assigned))

    def _start_offset(self, partition: int) -> int:
        """The contract's start position as an offset, or as one of librdkafka's logical ones."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED, TopicPartition

        position = self.start(partition)
        if position.kind == "committed":
            return int(OFFSET_STORED)
        if position.kind == "earliest":
            return int(OFFSET_BEGINNING)
        if position.kind == "latest":
            return int(OFFSET_END)
        if position.kind == "time":
            millis = int(position.time.timestamp() * 1000)
            wanted = TopicPartition(self.topic, partition, millis)
            [found] = self.consumer.offsets_for_times([wanted], timeout=10)
            return int(found.offset) if found.offset >= 0 else int(OFFSET_END)
        low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=10
        )
        return position.within(int(low), int(high))

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        with kafka_errors(self.label):
            messages = self.consumer.consume(num_messages=max_records, timeout=timeout)
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == error._PARTITION_EOF:
                    continue
                with kafka_errors(self.label):
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

        offsets = [TopicPartition(self.topic, partition, offset)]
        with kafka_errors(self.label):
            done = within(self.timeout, self.consumer.commit, offsets=offsets, asynchronous=False)
        if not done:
            raise StoreTimeout(
                f"{self.label} did not confirm the commit of {self.topic}[{partition}] up to "
                f"offset {offset} within {self.timeout:g}s: it may still land; until it does, "
                "those messages may be delivered again",
                store=self.label.name,
            )

    def seek(self, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        if partition in self.assigned:
            with kafka_errors(self.label):
                self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def assignment(self) -> set[int]:
        return set(self.assigned)

    def close(self) -> None:
        """Leave the group; on a broker that does not answer, give up after the timeout (the
        group then drops this member after its session timeout)."""
        within(self.timeout, self.consumer.close)


def within(timeout: float, call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run ``call`` for at most ``timeout`` seconds: librdkafka's synchronous commit and close
    wait on a broker that stopped answering forever. False when it did not finish in time
    (it goes on in a daemon thread); its exception, if it raised in time, is raised here."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call(*args, **kwargs)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="kafka-bounded", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return False
    if outcome[0] is not None:
        raise outcome[0]
    return True


def end_offsets(
    label: StoreLabel, config: KafkaConfig, topic: str, partitions: int
) -> dict[int, int]:
    """The high watermark of each partition of ``topic``, read by a throwaway consumer."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        config.client_config(**{"group.id": f"datalayer-offsets-{uuid.uuid4().hex}"})
    )
    deadline = time.monotonic() + config.request_timeout_ms / 1000
    try:
        with kafka_errors(label):
            return {p: _high_watermark(consumer, topic, p, deadline) for p in range(partitions)}
    finally:
        consumer.close()


#: Errors of a partition whose leadership is still moving (a topic created a moment ago, a
#: broker restarting): the question is asked again until the deadline rather than failed.
_LEADER_MOVING = {"NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PART"}


def _high_watermark(consumer: Any, topic: str, partition: int, deadline: float) -> int:
    from confluent_kafka import KafkaException, TopicPartition

    while True:
        try:
            wait = max(deadline - time.monotonic(), 0.1)
            high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=wait)
            return int(high[1])
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            moving = getattr(error, "name", lambda: "")() in _LEADER_MOVING
            if not moving or time.monotonic() + 0.1 > deadline:
                raise
            time.sleep(0.1)


def _text(value: str | bytes | None) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else value or b""


def _headers(message: Any) -> list[tuple[str, str | bytes | None]]:
    return list(message.headers() or [])

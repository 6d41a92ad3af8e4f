"""Reading from Kafka: a group member that commits only what the contract's tracker asks."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
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

log = logging.getLogger(__name__)


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
        on_release: AssignmentCallback,
    ) -> None:
        from confluent_kafka import Consumer

        self.label = label
        self.topic = topic
        self.group = group
        self.start = start
        self.on_assignment = on_assignment
        self.on_release = on_release
        self.releasing = False
        self.assigned: set[int] = set()
        self.committed: dict[int, int] = {}
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
                    "on_commit": self._confirmed,
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
        revoked = {tp.partition for tp in partitions}
        self.releasing = True
        try:
            self.on_release(revoked & self.assigned)  # still ours: the moment to commit them
        finally:
            self.releasing = False
        self.assigned -= revoked
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
        """What the client fetched already, up to ``max_records``; when it has nothing, wait
        up to ``timeout`` for the first record only (``consume`` would wait for them all)."""
        consume = self.consumer.consume
        message: Any  # librdkafka's Message: its stubs allow None where a record has none
        with kafka_errors(self.label):
            messages = consume(num_messages=max_records, timeout=0)
            if not messages:
                messages = consume(num_messages=1, timeout=timeout)
                if messages and max_records > 1:
                    messages += consume(num_messages=max_records - 1, timeout=0)
        topic, records = self.topic, list[Record]()
        append = records.append
        new = tuple.__new__  # Record(...) without NamedTuple's Python-level __new__
        stamp, when = None, None  # messages of one producer batch share their timestamp
        for message in messages:
            if message.error() is not None:
                self._raise(message.error())
                continue
            key, value, headers = message.key(), message.value(), message.headers()
            if (millis := message.timestamp()[1]) != stamp:
                stamp, when = millis, datetime.fromtimestamp(millis / 1000, UTC)
            append(
                new(
                    Record,
                    (
                        topic,
                        message.partition(),
                        message.offset(),
                        None if key is None else key.decode("utf-8", "replace"),
                        b"" if value is None else value,
                        None if not headers else {str(k): _text(v) or "" for k, v in headers},
                        when,
                    ),
                )
            )
        return records

    def _raise(self, error: Any) -> None:
        """A message that carries an error instead of a record (end of partition is none)."""
        from confluent_kafka import KafkaException

        if error.code() != error._PARTITION_EOF:
            with kafka_errors(self.label):
                raise KafkaException(error)

    def commit(self, offsets: Mapping[int, int], *, wait: bool) -> bool:
        if self.group is None:
            return True
        from confluent_kafka import TopicPartition

        positions = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        with kafka_errors(self.label):
            if not wait:
                self.consumer.commit(offsets=positions, asynchronous=True)
                return False
            if self.releasing:
                # Within the rebalance callback a commit from another thread never completes;
                # here librdkafka's request timeout bounds it.
                self.consumer.commit(offsets=positions, asynchronous=False)
                return True
            done = within(self.timeout, self.consumer.commit, offsets=positions, asynchronous=False)
        if not done:
            where = ", ".join(f"{self.topic}[{p}] up to offset {o}" for p, o in offsets.items())
            raise StoreTimeout(
                f"{self.label} did not confirm the commit of {where} within {self.timeout:g}s: "
                "it may still land; until it does, those messages may be delivered again",
                store=self.label.name,
            )
        return True

    def _confirmed(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's report of a commit sent without waiting (called within ``poll``)."""
        if error is not None:
            log.warning("%s: a commit of '%s' failed: %s", self.label, self.topic, error)
            return
        for tp in partitions:
            if tp.error is None and tp.topic == self.topic and tp.offset >= 0:
                self.committed[tp.partition] = max(self.committed.get(tp.partition, 0), tp.offset)

    def confirmed(self) -> Mapping[int, int]:
        return self.committed

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


def committed_offsets(
    label: StoreLabel, config: KafkaConfig, topic: str, group: str, partitions: int
) -> dict[int, int]:
    """``group``'s committed offsets, asked by a client that does not join the group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(config.client_config(**{"group.id": group}))
    timeout = config.request_timeout_ms / 1000
    try:
        with kafka_errors(label):
            found = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=timeout
            )
    finally:
        consumer.close()
    return {tp.partition: int(tp.offset) for tp in found if tp.offset >= 0}


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

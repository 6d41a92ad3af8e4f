"""The consumer loop: poll the store, decode, hand out messages, and stop when told."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from datalayer.categories.streaming.backend import AssignmentCallback, Record, StreamBackend
from datalayer.categories.streaming.dead_letters import DeadLetters
from datalayer.categories.streaming.offsets import OffsetTracker, ProcessStats
from datalayer.categories.streaming.start import StartAt, start_position
from datalayer.errors import PayloadValidationError

log = logging.getLogger(__name__)

#: How long a consumer may wait to be given partitions before ``idle_timeout`` starts to count.
JOIN_GRACE = 30.0


@dataclass(frozen=True, kw_only=True)
class ConsumeOptions:
    """How one consumer reads: where it starts, when it stops, how many records per poll."""

    start: StartAt = "committed"
    max_messages: int | None = None
    idle_timeout: float | None = None
    batch_size: int = 100
    on_assignment: AssignmentCallback | None = None


class Message:
    """One delivered message: ``value`` is the decoded payload; ``ack``/``nack`` settle it."""

    def __init__(self, record: Record, value: Any, attempt: int, tracker: OffsetTracker) -> None:
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


class ConsumerLoop:
    """Reads one topic for one group (``None``: without committing) until ``options`` say stop.

    ``decode`` turns a record into the message's value; a ``PayloadValidationError`` from it
    sends the record to the dead letters at once. ``stats`` counts retries and dead letters.
    """

    def __init__(
        self,
        backend: StreamBackend,
        topic: str,
        group: str | None,
        options: ConsumeOptions,
        *,
        decode: Callable[[Record], Any],
        dead_letters: DeadLetters,
        max_attempts: int,
        stats: ProcessStats | None = None,
    ) -> None:
        self.backend = backend
        self.topic = topic
        self.group = group
        self.options = options
        self.decode = decode
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.stats = stats if stats is not None else ProcessStats()
        self.opened = self.last = 0.0
        self.assigned = False
        self.tracker: OffsetTracker | None = None

    def __iter__(self) -> Iterator[Message]:
        self.opened = self.last = time.monotonic()
        self.assigned = False
        options = self.options
        limit = options.max_messages
        consumer = self.backend.open_consumer(
            self.topic, self.group, partial(start_position, options.start), self._assignment
        )
        self.tracker = tracker = OffsetTracker(
            consumer,
            commits=self.group is not None,
            max_attempts=self.max_attempts,
            dead_letters=self.dead_letters,
            stats=self.stats,
        )
        yielded = 0
        idle = options.idle_timeout
        poll_timeout = 0.2 if idle is None else min(0.2, idle)
        try:
            while limit is None or yielded < limit:
                want = (
                    options.batch_size
                    if limit is None
                    else min(options.batch_size, limit - yielded)
                )
                records = consumer.poll(want, poll_timeout)
                tracker.new_batch()
                if not records:
                    if idle is not None and self._idle(idle):
                        return
                    continue
                self.last = time.monotonic()
                for record in records:
                    if tracker.skips(record):
                        continue
                    attempt = tracker.delivered(record)
                    try:
                        value = self.decode(record)
                    except PayloadValidationError as exc:
                        log.warning(
                            "undecodable message %s/%s@%s: %s",
                            self.topic,
                            record.partition,
                            record.offset,
                            exc,
                        )
                        tracker.reject(record, exc)
                        continue
                    yield Message(record, value, attempt, tracker)
                    yielded += 1
                    if limit is not None and yielded >= limit:
                        return
        finally:
            consumer.close()

    def _assignment(self, partitions: set[int]) -> None:
        self.last, self.assigned = time.monotonic(), True
        if self.tracker is not None:
            # At once: a partition revoked and given back within one poll is a new start.
            self.tracker.forget_revoked(partitions)
        if self.options.on_assignment is not None:
            self.options.on_assignment(partitions)

    def _idle(self, idle_timeout: float) -> bool:
        """Idle once nothing came for ``idle_timeout`` while holding partitions (a group join,
        which takes seconds on Kafka, does not count), or when no partition came at all."""
        now = time.monotonic()
        if not self.assigned:
            return now - self.opened >= max(idle_timeout, JOIN_GRACE)
        return now - self.last >= idle_timeout


def handle_each(
    messages: Iterator[Message],
    handler: Callable[[Message], object],
    stats: ProcessStats,
    *,
    max_attempts: int,
    retry_backoff: float,
) -> ProcessStats:
    """Run ``handler`` on each message: retried up to ``max_attempts``, then dead-lettered."""
    for message in messages:
        while True:
            try:
                handler(message)
            except Exception as exc:
                if message.attempt >= max_attempts:
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

"""The consumer loop: poll the store, decode, hand out messages, and stop when told."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, overload

from datalayer.categories.streaming.backend import AssignmentCallback, Record, StreamBackend
from datalayer.categories.streaming.dead_letters import DeadLetters
from datalayer.categories.streaming.offsets import OffsetTracker, ProcessStats
from datalayer.categories.streaming.start import StartAt, start_position
from datalayer.errors import DataLayerError, PayloadValidationError

log = logging.getLogger(__name__)

#: How long a consumer may wait to be given partitions before ``idle_timeout`` starts to count.
JOIN_GRACE = 30.0
#: What decoding a record gives when the record went to the dead letters instead.
_UNDECODABLE = object()


@dataclass(frozen=True, kw_only=True)
class ConsumeOptions:
    """How one consumer reads: where it starts, when it stops, how many records per poll."""

    start: StartAt = "committed"
    max_messages: int | None = None
    idle_timeout: float | None = None
    batch_size: int = 100
    on_assignment: AssignmentCallback | None = None

    def __post_init__(self) -> None:
        """Refuse what would read forever or not at all by mistake (a negative timeout is
        librdkafka's "wait forever"), naming the argument."""
        problems = []
        if self.max_messages is not None and not is_count(self.max_messages, 0):
            problems.append(f"max_messages must be an integer >= 0, not {self.max_messages!r}")
        if self.idle_timeout is not None and not is_seconds(self.idle_timeout):
            problems.append(
                f"idle_timeout must be seconds between 0 and {MAX_SECONDS:g}, "
                f"not {self.idle_timeout!r}"
            )
        if not is_count(self.batch_size, 1, MAX_BATCH):
            problems.append(
                f"batch_size must be an integer from 1 to {MAX_BATCH:,}, not {self.batch_size!r}"
            )
        if problems:
            raise DataLayerError("; ".join(problems))


#: The most records one poll asks for, and the longest an idle or batch wait may be.
MAX_BATCH = 100_000
MAX_SECONDS = 86_400.0


def is_count(value: object, low: int, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def is_seconds(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_SECONDS  # NaN compares false
    )


class Message:
    """One delivered message: ``value`` is the decoded payload; ``ack``/``nack`` settle it."""

    __slots__ = (
        "_headers",
        "_raw",
        "_tracker",
        "attempt",
        "key",
        "offset",
        "partition",
        "settled",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(self, record: Record, value: Any, attempt: int, tracker: OffsetTracker) -> None:
        # The record's fields, not the record: a record is a tuple subclass the garbage
        # collector tracks forever, and a batch would keep hundreds of them alive.
        (
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self._raw,
            self._headers,
            self.timestamp,
        ) = record
        self.value = value
        self.attempt = attempt
        self._tracker = tracker
        self.settled = False

    @property
    def headers(self) -> dict[str, str]:
        return self._headers or {}

    @property
    def _record(self) -> Record:
        """The record again (for the dead letters, which keep its bytes)."""
        return Record(
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self._raw,
            self._headers,
            self.timestamp,
        )

    def ack(self) -> None:
        """The message is handled: its offset may be committed."""
        if not self.settled:
            self.settled = True
            self._tracker.ack(self)

    def nack(self, error: BaseException | str) -> None:
        """Handling failed: deliver again, or dead-letter it once ``max_attempts`` is reached."""
        if not self.settled:
            self.settled = True
            self._tracker.nack(self._record, self.attempt, error)

    def __repr__(self) -> str:
        return f"Message({self.topic}/{self.partition}@{self.offset}, key={self.key!r})"


class MessageBatch(Sequence[Message]):
    """What a ``process_batch`` handler gets: its messages in poll order, and ``values``, their
    decoded payloads (a tuple: a handler that changes it cannot change what its messages
    are, should the batch be handed out again one at a time). Message objects are made only
    when the handler first indexes or iterates the batch, so a sink that writes ``values`` in
    bulk never pays for them (nor makes the garbage collector rescan hundreds of them)."""

    __slots__ = ("_attempts", "_messages", "_records", "_tracker", "values")

    def __init__(
        self,
        records: list[Record],
        values: list[Any],
        attempts: list[int],
        tracker: OffsetTracker,
        messages: list[Message] | None = None,
    ) -> None:
        self._records = records
        self.values = tuple(values)
        self._attempts = attempts
        self._tracker = tracker
        self._messages = messages

    @classmethod
    def of(cls, message: Message) -> MessageBatch:
        """A batch of one message (a failed batch is handed out again one message at a
        time): acknowledging it settles that very message."""
        return cls(
            [message._record], [message.value], [message.attempt], message._tracker, [message]
        )

    @property
    def keys(self) -> list[str | None]:
        """The messages' keys, in the order of ``values``."""
        return [record.key for record in self._records]

    @property
    def messages(self) -> list[Message]:
        """The messages themselves (made once, on first use)."""
        if self._messages is None:
            tracker = self._tracker
            self._messages = [
                Message(record, value, attempt, tracker)
                for record, value, attempt in zip(
                    self._records, self.values, self._attempts, strict=True
                )
            ]
        return self._messages

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        return self.messages[index]

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def settle(self) -> None:
        """``ack`` every message not settled yet, moving the commit targets once."""
        if self._messages is not None:
            settle(self._messages)
        elif self._records:
            self._tracker.ack_all(self._records)

    def __repr__(self) -> str:
        return f"MessageBatch({len(self)} messages)"


class ConsumerLoop:
    """Reads one topic for one group (``None``: without committing) until ``options`` say stop.

    ``decode`` turns a record into the message's value; a ``PayloadValidationError`` from it
    sends the record to the dead letters at once. ``stats`` counts retries and dead letters.
    Iterating yields messages one by one; ``batches`` yields them in ``MessageBatch``es.
    """

    def __init__(
        self,
        backend: StreamBackend,
        topic: str,
        group: str | None,
        options: ConsumeOptions,
        *,
        decode: Callable[[Record], Any],
        decode_many: Callable[[list[Record]], list[Any] | None] | None = None,
        dead_letters: DeadLetters,
        max_attempts: int,
        stats: ProcessStats | None = None,
    ) -> None:
        self.backend = backend
        self.topic = topic
        self.group = group
        self.options = options
        self.decode = decode
        self.decode_many = decode_many
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.stats = stats if stats is not None else ProcessStats()
        self.opened = self.last = 0.0
        self.assigned = False
        self.tracker: OffsetTracker | None = None
        self.handed_out = 0

    def __iter__(self) -> Iterator[Message]:
        limit = self.options.max_messages
        message, decode_many = self._message, self.decode_many
        for tracker, records in self._polls(self.options.batch_size):
            # A record is stale once its partition was rewound or taken away (the heartbeat
            # first: it may find a partition lost). Inlined: this loop runs once per message.
            held, rewound, heartbeat = tracker.held, tracker.rewound, tracker.heartbeat
            values = decode_many(records) if decode_many is not None else None
            # Handed out as of the poll: one that is not yet when the loop stops (a limit, a
            # break) keeps its partition's commit before it, as an unacknowledged one does.
            attempts = tracker.delivered_all(records)
            # Taken off the lists as they go: a record (a tracked tuple) then dies with its
            # message instead of living through the batch, and the garbage collector has
            # far fewer survivors to promote and rescan.
            records.reverse()
            if values is not None:
                values.reverse()
            if attempts is not None:
                attempts.reverse()
            while records:
                record = records.pop()
                value = values.pop() if values is not None else None
                attempt = attempts.pop() if attempts is not None else 1
                heartbeat()
                if record.partition in rewound or record.partition not in held:
                    continue
                found: Message | None
                if values is not None:
                    found = Message(record, value, attempt, tracker)
                elif (found := message(tracker, record, attempt)) is None:
                    continue
                del record, value
                yield found
                self.handed_out += 1
                if limit is not None and self.handed_out >= limit:
                    return

    def batches(self, max_batch: int, max_wait: float) -> Iterator[MessageBatch]:
        """Batches of up to ``max_batch`` messages: a batch is handed out once it is full, once
        ``max_wait`` seconds passed since its first message came, or when nothing more came
        in a poll. Messages of partitions given up meanwhile are left out (the next owner
        gets them)."""
        limit = self.options.max_messages
        records: list[Record] = []
        values: list[Any] = []
        attempts: list[int] = []
        first, losses = 0.0, 0
        wait = max(max_wait, 0.01)
        polls = self._polls(max_batch, lambda: len(records), empty_too=True, longest=wait)
        for tracker, polled in polls:
            if polled and not records:
                first, losses = time.monotonic(), tracker.losses
            decoded = self.decode_many(polled) if self.decode_many is not None else None
            held, rewound, heartbeat = tracker.held, tracker.rewound, tracker.heartbeat
            delivered = tracker.delivered_all(polled)
            for i, record in enumerate(polled):
                heartbeat()
                if record.partition in rewound or record.partition not in held:
                    continue
                attempt = delivered[i] if delivered is not None else 1
                if decoded is not None:
                    value = decoded[i]
                elif (value := self._decoded(tracker, record)) is _UNDECODABLE:
                    continue
                records.append(record)
                values.append(value)
                attempts.append(attempt)
            came = bool(polled)
            del polled, decoded  # each record lives on in the batch only
            full = len(records) >= max_batch
            if limit is not None and self.handed_out + len(records) >= limit:
                full = True
            if records and (full or not came or time.monotonic() - first >= max_wait):
                if tracker.losses != losses:  # partitions went since the batch began
                    kept = [i for i, record in enumerate(records) if tracker.holds(record)]
                    records = [records[i] for i in kept]
                    values = [values[i] for i in kept]
                    attempts = [attempts[i] for i in kept]
                if records:
                    self.handed_out += len(records)
                    yield MessageBatch(records, values, attempts, tracker)
                records, values, attempts = [], [], []
                if limit is not None and self.handed_out >= limit:
                    return

    def _polls(
        self,
        size: int,
        waiting: Callable[[], int] = lambda: 0,
        *,
        empty_too: bool = False,
        longest: float = 0.2,
    ) -> Iterator[tuple[OffsetTracker, list[Record]]]:
        """Each poll's records (empty ones too with ``empty_too``), until the options say stop;
        before each poll, acknowledgements are committed as the store's commit policy says; on
        the way out, all of them.
        ``waiting``: how many messages the caller holds back, not counted as handed out;
        ``longest``: the longest a poll waits for records."""
        self.opened = self.last = time.monotonic()
        self.assigned = False
        self.handed_out = 0
        options = self.options
        limit = options.max_messages
        consumer = self.backend.open_consumer(
            self.topic,
            self.group,
            partial(start_position, options.start),
            self._assignment,
            self._release,
        )
        self.tracker = tracker = OffsetTracker(
            consumer,
            commits=self.group is not None,
            policy=self.backend.commit_policy,
            max_attempts=self.max_attempts,
            dead_letters=self.dead_letters,
            stats=self.stats,
        )
        idle = options.idle_timeout
        poll_timeout = min(0.2, longest) if idle is None else min(0.2, longest, idle)
        try:
            while limit is None or self.handed_out < limit:
                want = size - waiting()
                if limit is not None:
                    want = min(want, limit - self.handed_out - waiting())
                tracker.before_poll()
                records = consumer.poll(max(want, 1), poll_timeout)
                tracker.new_batch()
                if records:
                    self.last = time.monotonic()
                elif idle is not None and self._idle(idle) and not waiting():
                    return
                if records or empty_too:
                    yield tracker, records
        finally:
            try:
                tracker.close()
            finally:
                consumer.close()

    def _message(self, tracker: OffsetTracker, record: Record, attempt: int) -> Message | None:
        """The message of ``record`` (handed out already); None when it cannot be decoded (it
        went to the dead letters)."""
        value = self._decoded(tracker, record)
        return None if value is _UNDECODABLE else Message(record, value, attempt, tracker)

    def _decoded(self, tracker: OffsetTracker, record: Record) -> Any:
        """The payload of ``record`` (handed out already), or ``_UNDECODABLE`` once it went to
        the dead letters."""
        try:
            return self.decode(record)
        except PayloadValidationError as exc:
            log.warning(
                "undecodable message %s/%s@%s: %s",
                self.topic,
                record.partition,
                record.offset,
                exc,
            )
            tracker.reject(record, exc)
            return _UNDECODABLE

    def _assignment(self, partitions: set[int]) -> None:
        self.last, self.assigned = time.monotonic(), True
        if self.tracker is not None:
            # At once: a partition revoked and given back within one poll is a new start.
            self.tracker.forget_revoked(partitions)
        if self.options.on_assignment is not None:
            self.options.on_assignment(partitions)

    def _release(self, partitions: set[int]) -> None:
        if self.tracker is not None:
            self.tracker.release(partitions)

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
        try:
            handler(message)
        except Exception as exc:
            _retry(message, handler, exc, stats, max_attempts, retry_backoff)
            continue
        if not message.settled:  # message.ack(), inlined: this runs once per message
            message.settled = True
            message._tracker.ack(message)
        stats.handled += 1
    return stats


def handle_batches(
    batches: Iterator[MessageBatch],
    handler: Callable[[MessageBatch], object],
    stats: ProcessStats,
    *,
    max_attempts: int,
    retry_backoff: float,
) -> ProcessStats:
    """Run ``handler`` on each batch. A batch it fails on is handed to it again one message at
    a time, in order (as a batch of one), so one bad message is retried up to
    ``max_attempts`` and dead-lettered alone while the others of its batch go through."""
    for batch in batches:
        try:
            handler(batch)
        except Exception as exc:
            log.warning(
                "batch of %d messages failed (%s: %s); handling them one at a time",
                len(batch),
                type(exc).__name__,
                exc,
            )
            alone = partial(_one, handler)
            handle_each(
                iter(batch.messages),
                alone,
                stats,
                max_attempts=max_attempts,
                retry_backoff=retry_backoff,
            )
            continue
        batch.settle()
        stats.handled += len(batch)
    return stats


def settle(messages: list[Message]) -> None:
    """``ack`` each message, moving the commit targets once for the whole list."""
    settled = []
    for message in messages:
        if not message.settled:
            message.settled = True
            settled.append(message)
    if settled:
        messages[0]._tracker.ack_all(settled)


def _one(handler: Callable[[MessageBatch], object], message: Message) -> object:
    return handler(MessageBatch.of(message))


def _retry(
    message: Message,
    handler: Callable[[Message], object],
    error: Exception,
    stats: ProcessStats,
    max_attempts: int,
    retry_backoff: float,
) -> None:
    """Hand ``message`` to ``handler`` again after it failed with ``error``, until it goes
    through (acknowledged) or ``max_attempts`` is reached (dead-lettered)."""
    while True:
        if message.attempt >= max_attempts:
            stats.errors.append(f"{message!r}: {type(error).__name__}: {error}")
            message.nack(error)
            return
        stats.retried += 1
        message.attempt += 1
        if retry_backoff:
            time.sleep(retry_backoff * message.attempt)
        try:
            handler(message)
        except Exception as exc:
            error = exc
            continue
        message.ack()
        stats.handled += 1
        return

"""The streaming contract: ordered event streams (alerts) read by consumer groups.

Guarantees every implementation keeps:
- ``publish`` validates the payload against the schema first (nothing is sent on failure) and
  returns only once the store has durably accepted the message; ``publish_many`` validates
  every event before sending any. NaN and infinities, which JSON cannot hold, are refused
  (``PayloadValidationError`` naming the field), never published as null; so is text with a
  lone surrogate, which has no UTF-8 form.
- ``publisher()`` trades the wait per call for throughput: each batch is still validated whole
  before any of it is sent, and ``flush()`` (or leaving its ``with`` block) waits for every
  message and raises if any was not delivered.
- Messages with the same key go to the same partition and are read in publish order. A
  ``key`` and ``headers`` given to ``publish`` are text (names and values of valid Unicode,
  names without NUL) and read back exactly; anything else is refused like an invalid payload.
- Consumers in one group share the topic's partitions; each message is handled by one member.
  A group name is non-empty text without NUL (Kafka would cut it there, merging groups).
  A partition changes hands only once its owner has stopped reading it with every
  acknowledgement committed, so members joining and leaving never make a message be handled
  twice; a message handed out and not acknowledged by the owner's next poll (or by a member
  that died) is delivered again.
- Delivery is at-least-once: an offset is committed only once every earlier message of its
  partition was acknowledged, so a message not acknowledged (the consumer stopped or crashed)
  is delivered again to the group.
- An acknowledgement costs no round trip: acknowledged offsets are committed together, before
  each poll and at least every ``commit.interval`` without waiting, and with waiting when
  partitions are given up and when the consumer closes. A consumer never holds more than the
  store's ``commit.max_uncommitted`` acknowledged messages whose commit is not confirmed (the
  acknowledgement that would pass it waits for the commit): a consumer that crashes makes
  the group handle again at most that many messages it acknowledged; ``0`` commits each
  acknowledgement before it returns.
- ``process_batch`` hands its handler batches of messages (with their decoded ``values``); a
  batch it fails on is handed again one message at a time, so each is retried and
  dead-lettered as ``process`` does.
- ``nack`` redelivers a message; after ``max_attempts`` it goes to the dead-letter topic with
  the error and attempt count in its headers, and the partition goes on. A message that cannot
  be decoded (not JSON; ``NaN`` and ``Infinity`` are not JSON either) or fails the schema on
  the consumer side goes there at once.
- Replay starts from ``"earliest"``, ``"latest"``, an offset, per-partition offsets or a
  timestamp; ``"committed"`` (the default) resumes the group, or starts at the earliest offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from datalayer.categories.streaming.backend import (
    AssignmentCallback,
    Delivery,
    OutgoingRecord,
    Record,
    StreamBackend,
    partition_of,
)
from datalayer.categories.streaming.codec import EventCodec, loose_decode
from datalayer.categories.streaming.consumer import (
    MAX_BATCH,
    MAX_SECONDS,
    ConsumeOptions,
    ConsumerLoop,
    Message,
    MessageBatch,
    handle_batches,
    handle_each,
    is_count,
    is_seconds,
)
from datalayer.categories.streaming.dead_letters import DeadLetters
from datalayer.categories.streaming.offsets import ProcessStats
from datalayer.categories.streaming.pattern import StreamingPattern
from datalayer.categories.streaming.publisher import Publisher
from datalayer.categories.streaming.start import StartAt
from datalayer.errors import DataLayerError


class Stream:
    """One streaming pattern bound to the store serving it (``store``, its ``StreamBackend``)."""

    def __init__(self, pattern: StreamingPattern, store: StreamBackend) -> None:
        self.pattern = pattern
        self.store = store
        self.codec = EventCodec(pattern)
        self._dead_letters = DeadLetters(pattern, store)

    @property
    def backend(self) -> StreamBackend:
        return self.store

    def encode(self, event: Any, key: str | None = None) -> OutgoingRecord:
        """Validate and serialize one event (compact UTF-8 JSON) and find its partition key."""
        return self.codec.encode(event, key)

    def encode_many(self, events: Iterable[Any]) -> tuple[list[str | None], list[bytes]]:
        """Partition keys and bodies of a batch; an invalid event raises before any is sent."""
        return self.codec.encode_many(events)

    def decode(self, record: Record) -> Any:
        return self.codec.decode(record)

    def partition_for(self, key: str | None, topic: str | None = None) -> int:
        """A stable partition for a key (CRC32, as librdkafka's consistent partitioner)."""
        return partition_of(key, self.store.partitions(topic or self.pattern.topic))

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        """The next offset of each partition: where a consumer starting at 'latest' begins."""
        return self.store.end_offsets(topic or self.pattern.topic)

    def committed(self, group: str) -> dict[int, int]:
        """Where ``group`` resumes each partition (the next offset to read); a partition it
        never committed is left out."""
        return self.store.committed_offsets(self.pattern.topic, group)

    def lag(self, group: str) -> dict[int, int]:
        """How many messages of each partition ``group`` has not committed yet."""
        committed = self.committed(group)
        return {p: end - committed.get(p, 0) for p, end in self.end_offsets().items()}

    def publish(
        self, event: Any, *, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Delivery:
        record = self.codec.encode(event, key, headers)
        return self.store.produce(self.pattern.topic, [record])[0]

    def publish_many(self, events: Iterable[Any]) -> list[Delivery]:
        keys, values = self.codec.encode_many(events)
        return self.store.produce_values(self.pattern.topic, keys, values) if values else []

    def publisher(self) -> Publisher:
        """A ``Publisher`` for this stream: no wait per call, one wait (and check) at the end."""
        return Publisher(self.codec, self.store.publish_queue(self.pattern.topic))

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
        options = ConsumeOptions(
            start=start,
            max_messages=max_messages,
            idle_timeout=idle_timeout,
            batch_size=batch_size,
            on_assignment=on_assignment,
        )
        return iter(self._loop(self.pattern.topic, group, options, self.codec.decode))

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
        options = ConsumeOptions(start=start, max_messages=max_messages, idle_timeout=idle_timeout)
        return iter(self._loop(self.pattern.dead_letter, group, options, loose_decode))

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
        options = ConsumeOptions(
            start=start, max_messages=max_messages, idle_timeout=idle_timeout, batch_size=500
        )
        loop = self._loop(self.pattern.topic, group, options, self.codec.decode, stats)
        return handle_each(
            iter(loop),
            handler,
            stats,
            max_attempts=self.pattern.max_attempts,
            retry_backoff=retry_backoff,
        )

    def process_batch(
        self,
        handler: Callable[[MessageBatch], object],
        group: str,
        *,
        max_batch: int = 500,
        max_wait: float = 1.0,
        start: StartAt = "committed",
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        retry_backoff: float = 0.0,
    ) -> ProcessStats:
        """Run ``handler`` on batches of up to ``max_batch`` messages, for sinks that write in
        bulk (``batch.values`` holds the decoded payloads); a batch waits at most ``max_wait``
        seconds for more after its first message. A batch the handler fails on is handed to
        it again one message at a time, so each is retried up to ``max_attempts`` and
        dead-lettered alone, as ``process`` does."""
        if not is_count(max_batch, 1, MAX_BATCH):
            raise DataLayerError(
                f"process_batch: max_batch must be an integer from 1 to {MAX_BATCH:,}, "
                f"not {max_batch!r}"
            )
        if not is_seconds(max_wait):
            raise DataLayerError(
                f"process_batch: max_wait must be seconds between 0 and {MAX_SECONDS:g}, "
                f"not {max_wait!r}"
            )
        stats = ProcessStats()
        options = ConsumeOptions(start=start, max_messages=max_messages, idle_timeout=idle_timeout)
        loop = self._loop(self.pattern.topic, group, options, self.codec.decode, stats)
        return handle_batches(
            loop.batches(max_batch, float(max_wait)),
            handler,
            stats,
            max_attempts=self.pattern.max_attempts,
            retry_backoff=retry_backoff,
        )

    def _loop(
        self,
        topic: str,
        group: str | None,
        options: ConsumeOptions,
        decode: Callable[[Record], Any],
        stats: ProcessStats | None = None,
    ) -> ConsumerLoop:
        if group is not None and not _is_group_name(group):
            raise DataLayerError(
                f"pattern '{self.pattern.name}': group must be non-empty text without NUL "
                f"characters or lone surrogates (Kafka cuts a group id at NUL, so 'g\\x00a' "
                f"and 'g\\x00b' would share offsets), not {group!r}"
            )
        return ConsumerLoop(
            self.store,
            topic,
            group,
            options,
            decode=decode,
            decode_many=self.codec.decode_many if decode == self.codec.decode else None,
            dead_letters=self._dead_letters,
            max_attempts=self.pattern.max_attempts,
            stats=stats,
        )


def _is_group_name(group: object) -> bool:
    if not isinstance(group, str) or not group or "\x00" in group:
        return False
    try:
        group.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

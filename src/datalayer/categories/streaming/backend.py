"""What a store implements to serve streams: produce, consume, offsets, partitions.

The ``Stream`` contract validates, encodes and decodes; a backend moves bytes. It receives
encoded records and parsed start positions, and returns plain values.
"""

from __future__ import annotations

import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from datalayer.categories.streaming.start import StartPosition
from datalayer.errors import DataLayerError, StoreLabel
from datalayer.resilience import GuardedOperations
from datalayer.validators import Duration

#: Called with a consumer's partitions each time its share of the group changes.
AssignmentCallback = Callable[[set[int]], None]

#: Where each partition a consumer is given starts (``StartPosition`` per partition number).
StartPositions = Callable[[int], StartPosition]


class CommitPolicy(BaseModel):
    """How a streaming store's consumers commit what their handlers acknowledged (``commit:``).

    An acknowledgement costs no round trip: offsets are committed together at each poll and
    at least every ``interval``, without waiting, and synchronously when partitions are given
    up and when the consumer closes. A consumer never holds more than ``max_uncommitted``
    acknowledged messages whose commit the store has not confirmed: the acknowledgement that
    would pass it waits for the commit. That is the bound on duplicates: a consumer that
    crashes makes the group handle again at most ``max_uncommitted`` messages it acknowledged
    (besides those it had not acknowledged). ``max_uncommitted: 0`` commits every
    acknowledgement before it returns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_uncommitted: int = Field(default=5000, ge=0, le=1_000_000, strict=True)
    interval: Duration = timedelta(seconds=1)


@dataclass(frozen=True)
class OutgoingRecord:
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Record(NamedTuple):
    """A message as the store hands it back, before decoding (a tuple: consumers build one
    per message, tens of thousands a second). ``headers`` is ``None`` when there are none:
    a tuple of text and numbers only is one the garbage collector stops scanning."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] | None
    timestamp: datetime


class Position(Protocol):
    """Where a message sits: a record, or the message made of it."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


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
    def commit(self, offsets: Mapping[int, int], *, wait: bool) -> bool:
        """Record each offset (the next one to read) as the group's position in its partition.
        Without ``wait`` the store may return before it confirmed them (``confirmed`` tells
        later). True when the store confirmed them before returning."""

    def heartbeat(self) -> None:
        """Called between the messages of a batch: a store whose membership needs the
        consumer's own signs of life gives them here (and may find a partition lost)."""
        return None

    def confirmed(self) -> Mapping[int, int]:
        """The highest offset per partition the store confirmed committing, of commits that
        returned before it did (none for a store whose commits always wait)."""
        return {}

    @abstractmethod
    def seek(self, partition: int, offset: int) -> None: ...

    @abstractmethod
    def assignment(self) -> set[int]: ...

    @abstractmethod
    def close(self) -> None: ...


class PublishQueue(ABC):
    """Where a ``Publisher`` sends: ``send`` may return before delivery, ``wait`` may not."""

    @abstractmethod
    def send(
        self, keys: list[str | None], values: list[bytes], headers: list[dict[str, str]] | None
    ) -> None:
        """Queue messages (``headers``: one mapping per message, or none at all)."""

    @abstractmethod
    def wait(self) -> None:
        """Wait for what ``send`` queued; raise if any message was not delivered."""


class StreamBackend(GuardedOperations, ABC):
    """The primitives a streaming store provides; topics are named on every call."""

    operations: ClassVar[Mapping[str, bool]] = {
        "produce": False,  # the producer retries by itself, idempotently
        "produce_values": False,
        "end_offsets": True,
        "committed_offsets": True,
        "partitions": True,
    }
    #: How this store's consumers commit (its ``commit:`` setting).
    commit_policy: CommitPolicy = CommitPolicy()

    @abstractmethod
    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        """Append records and return once the store has accepted them all."""

    def produce_values(
        self, topic: str, keys: list[str | None], values: list[bytes]
    ) -> list[Delivery]:
        """``produce`` for messages without headers; a store may skip building records."""
        return self.produce(
            topic, [OutgoingRecord(k, v) for k, v in zip(keys, values, strict=True)]
        )

    @abstractmethod
    def open_consumer(
        self,
        topic: str,
        group: str | None,
        start: StartPositions,
        on_assignment: AssignmentCallback,
        on_release: AssignmentCallback,
    ) -> ConsumerHandle:
        """A consumer of ``topic``; ``on_assignment`` hears each change of its partitions, and
        ``on_release`` hears partitions about to be given up while they are still held (the
        last moment to commit them)."""

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition: where a consumer starting at 'latest' begins."""

    @abstractmethod
    def committed_offsets(self, topic: str, group: str) -> dict[int, int]:
        """The offset ``group`` resumes each partition of ``topic`` from (the next one to
        read); a partition the group never committed is left out."""

    @abstractmethod
    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has; ``NotFound`` when it does not exist."""

    def publish_queue(self, topic: str) -> PublishQueue:
        """Where a ``Publisher`` of ``topic`` sends; by default each call is produced at once."""
        return ProduceNow(self, topic)


class ProduceNow(PublishQueue):
    """Produces each ``send`` before returning, so its errors raise at once."""

    def __init__(self, backend: StreamBackend, topic: str) -> None:
        self.backend = backend
        self.topic = topic

    def send(
        self, keys: list[str | None], values: list[bytes], headers: list[dict[str, str]] | None
    ) -> None:
        if headers is None:
            self.backend.produce_values(self.topic, keys, values)
        else:
            records = [OutgoingRecord(*r) for r in zip(keys, values, headers, strict=True)]
            self.backend.produce(self.topic, records)

    def wait(self) -> None:
        """Nothing is left to wait for: ``send`` already did."""


def partition_of(key: str | None, count: int) -> int:
    """A stable partition for a key (CRC32, as librdkafka's consistent partitioner); a
    message without a key goes to a random one."""
    if key is None:
        return uuid.uuid4().int % count
    return zlib.crc32(key.encode()) % count


def refuse_oversized(label: StoreLabel, topic: str, values: Sequence[bytes], limit: int) -> None:
    """Refuse the whole batch when one message is over ``limit`` bytes: nothing is sent."""
    if values and max(map(len, values)) > limit:
        size = max(map(len, values))
        raise DataLayerError(
            f"{label}: message of {size} bytes exceeds "
            f"max_message_bytes={limit} for topic '{topic}'; nothing was published",
            store=label.name,
        )

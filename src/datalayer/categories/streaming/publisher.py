"""Publishing for throughput: validate each batch whole, queue it, wait once at the end."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

from datalayer.categories.streaming.backend import PublishQueue
from datalayer.categories.streaming.codec import EventCodec


class Publisher:
    """Publishes for throughput: calls return once messages are queued, not acknowledged.

    Each call still validates its whole batch before queuing any of it. ``flush()``, and
    leaving the ``with`` block, wait until every queued message is acknowledged and raise if
    any was not; a failure reported earlier also stops the next call. Use one per thread.
    How messages are queued is the store's (``StreamBackend.publish_queue``).
    """

    def __init__(self, codec: EventCodec, queue: PublishQueue) -> None:
        self.codec = codec
        self.queue = queue
        self.pending = 0

    def publish(
        self, event: Any, *, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        record = self.codec.encode(event, key, headers)
        self.queue.send([record.key], [record.value], [record.headers] if record.headers else None)
        self.pending += 1

    def publish_many(self, events: Iterable[Any]) -> int:
        """Validate every event, then queue them all; returns how many were queued."""
        keys, values = self.codec.encode_many(events)
        if values:
            self.queue.send(keys, values, None)
            self.pending += len(values)
        return len(values)

    def flush(self) -> int:
        """Wait for every queued message; returns how many were delivered since the last flush.

        Raises ``DataLayerError`` (``StoreUnavailable`` when the store could not be reached)
        if any was not delivered.
        """
        count, self.pending = self.pending, 0
        self.queue.wait()
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

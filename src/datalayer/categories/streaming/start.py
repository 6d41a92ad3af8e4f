"""Where a consumer starts, read once: each store applies the result with its own primitives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from datalayer.errors import DataLayerError

#: Where a consumer starts: a named position, one offset for every partition, offsets per
#: partition, or the first message at or after a timestamp.
StartAt = Literal["committed", "earliest", "latest"] | int | Mapping[int, int] | datetime

_NO_TIME = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StartPosition:
    """Where one partition starts.

    ``committed``: the group's committed offset, else the earliest; ``earliest``/``latest``:
    the partition's first offset, or the next one to be written; ``offset``: ``offset``, kept
    within those two; ``time``: the first message at or after ``time``, else the latest.
    """

    kind: Literal["committed", "earliest", "latest", "offset", "time"]
    offset: int = 0
    time: datetime = _NO_TIME

    def within(self, earliest: int, latest: int) -> int:
        """The ``offset`` asked for, moved inside the partition's range ``[earliest, latest]``."""
        return min(max(self.offset, earliest), latest)


def start_position(start: StartAt, partition: int) -> StartPosition:
    """What ``start`` means for ``partition`` (a mapping without it: ``committed``)."""
    if isinstance(start, Mapping):
        start = start.get(partition, "committed")
    if start in ("committed", "earliest", "latest"):
        return StartPosition(start)  # type: ignore[arg-type]
    if isinstance(start, datetime):
        return StartPosition("time", time=start if start.tzinfo else start.replace(tzinfo=UTC))
    if isinstance(start, int) and not isinstance(start, bool):
        return StartPosition("offset", offset=start)
    raise DataLayerError(f"cannot start a consumer at {start!r}")

"""Offset tracking: acknowledgements become safe commits, failures become seeks."""

from __future__ import annotations

from dataclasses import dataclass, field

from datalayer.categories.streaming.backend import ConsumerHandle, Record
from datalayer.categories.streaming.dead_letters import DeadLetters


@dataclass
class ProcessStats:
    """What a ``process`` run did."""

    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class OffsetTracker:
    """Per-partition bookkeeping of one consumer.

    A partition's offset is committed only past messages that are all acknowledged (at-least-
    once); a failed message rewinds its partition to it, until ``max_attempts`` sends it to the
    dead letters. Records of a rewound partition still in the current batch are skipped.
    """

    def __init__(
        self,
        consumer: ConsumerHandle,
        *,
        commits: bool,
        max_attempts: int,
        dead_letters: DeadLetters,
        stats: ProcessStats,
    ) -> None:
        self.consumer = consumer
        self.commits = commits
        self.max_attempts = max_attempts
        self.dead_letters = dead_letters
        self.stats = stats
        self.pending: dict[int, set[int]] = {}
        self.high: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.attempts: dict[tuple[int, int], int] = {}
        self.rewound: dict[int, int] = {}

    def new_batch(self) -> None:
        """A new poll's records: partitions rewound during the last batch are read again."""
        self.rewound.clear()
        self.forget_revoked()

    def forget_revoked(self, assigned: set[int] | None = None) -> None:
        """Drop what is known of partitions no longer held (``assigned``: the ones held now):
        a late ack of one of their messages then commits nothing."""
        if assigned is None:
            assigned = self.consumer.assignment()
        for p in [p for p in self.pending if p not in assigned]:
            self.pending.pop(p, None)
            self.high.pop(p, None)
            self.committed.pop(p, None)

    def skips(self, record: Record) -> bool:
        """Whether ``record`` is stale: its partition was rewound or taken away."""
        return (
            record.partition in self.rewound or record.partition not in self.consumer.assignment()
        )

    def delivered(self, record: Record) -> int:
        """Track ``record`` as handed out; returns its attempt number."""
        self.pending.setdefault(record.partition, set()).add(record.offset)
        self.high[record.partition] = max(self.high.get(record.partition, 0), record.offset + 1)
        return self.attempts.get((record.partition, record.offset), 0) + 1

    def ack(self, record: Record) -> None:
        """Commit up to the first unacknowledged message of the partition. A message handed
        out before its partition was revoked commits nothing: the partition's new owner reads
        from the last commit, and a late commit must not move it (Kafka would move it back)."""
        p = record.partition
        pending = self.pending.get(p)
        if pending is None or record.offset not in pending:
            return
        pending.discard(record.offset)
        self.attempts.pop((p, record.offset), None)
        target = min(pending) if pending else self.high.get(p, record.offset + 1)
        if self.commits and target > self.committed.get(p, -1) and p in self.consumer.assignment():
            self.consumer.commit(p, target)
            if p in self.consumer.assignment():  # not lost while committing
                self.committed[p] = target

    def nack(self, record: Record, attempt: int, error: BaseException | str) -> None:
        if attempt >= self.max_attempts:
            self.dead_letters.send(record, error, attempt)
            self.stats.dead_lettered += 1
            self.ack(record)
            return
        p = record.partition
        self.attempts[(p, record.offset)] = attempt
        self.pending[p] = {o for o in self.pending.get(p, set()) if o < record.offset}
        self.high[p] = record.offset
        self.rewound[p] = record.offset
        self.consumer.seek(p, record.offset)
        self.stats.retried += 1

    def reject(self, record: Record, error: BaseException) -> None:
        """A message that cannot be decoded: dead-lettered at once, and passed."""
        if self.dead_letters.topic:
            self.dead_letters.send(record, error, 1)
        self.stats.dead_lettered += 1
        self.ack(record)

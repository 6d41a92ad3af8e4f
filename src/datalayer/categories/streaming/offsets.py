"""Offset tracking: acknowledgements become coalesced commits, failures become seeks."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from datalayer.categories.streaming.backend import CommitPolicy, ConsumerHandle, Position, Record
from datalayer.categories.streaming.dead_letters import DeadLetters
from datalayer.errors import DataLayerError

log = logging.getLogger(__name__)


@dataclass
class ProcessStats:
    """What a ``process`` run did."""

    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    errors: list[str] = field(default_factory=list)


class Partition:
    """What one consumer knows of one partition it holds.

    ``order`` holds the offsets handed out, oldest first, and ``pending`` those not settled
    yet, so the commit target (the oldest unsettled offset) is found in constant time per
    acknowledgement. ``acked`` is that target; ``sent`` the last one committed; ``floor``
    where the group would resume if this consumer died now (its last confirmed commit, or the
    first offset it was handed); ``high`` the offset after the last one handed out.
    """

    __slots__ = ("acked", "floor", "high", "order", "pending", "sent")

    def __init__(self, first: int) -> None:
        self.pending: set[int] = set()
        self.order: deque[int] = deque()
        self.high = self.acked = self.floor = first
        self.sent = -1

    def rewind(self, offset: int) -> None:
        """Forget what was handed out from ``offset`` on: it is read again."""
        self.pending = {o for o in self.pending if o < offset}
        self.order = deque(o for o in self.order if o < offset)
        self.high = offset


class OffsetTracker:
    """Per-partition bookkeeping of one consumer.

    A partition's offset is committed only past messages that are all acknowledged (at-least-
    once); a failed message rewinds its partition to it, until ``max_attempts`` sends it to the
    dead letters. Records of a rewound partition still in the current batch are skipped.
    Commits follow the store's ``CommitPolicy``: sent without waiting once ``interval`` passed
    (or half of ``max_uncommitted`` is not confirmed), waited for when more than
    ``max_uncommitted`` acknowledged messages are not confirmed, when partitions are given up
    and when the consumer closes.
    """

    def __init__(
        self,
        consumer: ConsumerHandle,
        *,
        commits: bool,
        policy: CommitPolicy,
        max_attempts: int,
        dead_letters: DeadLetters,
        stats: ProcessStats,
    ) -> None:
        self.consumer = consumer
        self.commits = commits
        self.limit = policy.max_uncommitted
        self.interval = policy.interval.total_seconds()
        self.max_attempts = max_attempts
        self.dead_letters = dead_letters
        self.stats = stats
        self.partitions: dict[int, Partition] = {}
        self.unconfirmed = 0  # acknowledged, commit not confirmed
        self.unsent = 0  # acknowledged, commit not sent
        self.due: float | None = None
        self.attempts: dict[tuple[int, int], int] = {}
        self.rewound: dict[int, int] = {}
        self.held: set[int] = set()
        self.losses = 0  # how many times partitions were taken away
        self.heartbeat = consumer.heartbeat

    def new_batch(self) -> None:
        """A new poll's records: partitions rewound or taken away during the last batch are
        read again."""
        self.rewound.clear()
        self.forget_revoked()
        self.rewound.clear()
        if self.commits:
            self._count_confirmed()  # commits sent before the poll were confirmed during it

    def before_poll(self) -> None:
        """Send what was acknowledged, without waiting for it, once ``interval`` passed since
        the first acknowledgement not sent, or once half the bound is not confirmed (so that
        acknowledgements rarely have to wait for it)."""
        if self.due is not None and (self.unsent > self.limit // 2 or time.monotonic() >= self.due):
            self.flush(wait=False)

    def forget_revoked(self, assigned: set[int] | None = None) -> None:
        """Drop what is known of partitions no longer held (``assigned``: the ones held now):
        a late ack of one of their messages then commits nothing."""
        if assigned is None:
            assigned = self.consumer.assignment()
        gone = (self.held | set(self.partitions)) - assigned
        self.held.clear()  # in place: the consumer loop holds it
        self.held.update(assigned)
        for p in gone:
            self.partitions.pop(p, None)
            self.rewound[p] = -1  # what this poll fetched of it is stale, even if given back
        if gone:
            self.losses += 1
            self._recount()

    def release(self, partitions: set[int]) -> None:
        """``partitions`` are about to be given up: commit their acknowledged offsets now, and
        wait for it, so their next owner starts after every message this one handled."""
        if not self.commits:
            return
        try:
            self._commit(self._unconfirmed(partitions), wait=True)
        except DataLayerError as exc:
            log.warning("commit before giving up partitions %s failed: %s", sorted(partitions), exc)

    def close(self) -> None:
        """Commit everything acknowledged before the consumer leaves (a failure is logged:
        those messages are then delivered again, as after a crash)."""
        if not self.commits:
            return
        try:
            self.flush(wait=True)
        except DataLayerError as exc:
            log.warning("commit on close failed: %s", exc)

    def holds(self, record: Position) -> bool:
        """Whether ``record`` was handed out and is still this consumer's to settle."""
        state = self.partitions.get(record.partition)
        return state is not None and record.offset in state.pending

    def delivered_all(self, records: list[Record]) -> list[int] | None:
        """Track a poll's records of partitions held as handed out (the others are stale):
        their attempt numbers in order, or None when each is a first attempt."""
        partitions, held = self.partitions, self.held
        seen: dict[int, Partition] = {}
        for record in records:
            partition, offset = record.partition, record.offset
            state = seen.get(partition)
            if state is None:
                if partition not in held:
                    continue
                state = partitions.get(partition)
                if state is None:
                    state = partitions[partition] = Partition(offset)
                seen[partition] = state
            state.pending.add(offset)
            state.order.append(offset)
            if offset >= state.high:
                state.high = offset + 1
        if not self.attempts:
            return None
        attempts = self.attempts
        return [attempts.get((r.partition, r.offset), 0) + 1 for r in records]

    def ack(self, record: Position) -> None:
        """Move the partition's commit target to its first unacknowledged message. A message
        handed out before its partition was revoked moves nothing: the partition's new owner
        reads from the last commit, and a late commit must not move it (Kafka would move it
        back)."""
        offset = record.offset
        state = self.partitions.get(record.partition)
        if state is None or offset not in state.pending:
            return
        pending = state.pending
        pending.discard(offset)
        if self.attempts:
            self.attempts.pop((record.partition, offset), None)
        order = state.order
        while order and order[0] not in pending:
            order.popleft()
        target = order[0] if order else state.high
        moved = target - state.acked
        if moved <= 0 or not self.commits:
            return
        state.acked = target
        self.unconfirmed += moved
        self.unsent += moved
        # The policy's common case, nothing due, answered here: this runs once per message.
        if self.unconfirmed > self.limit or self.due is None or time.monotonic() >= self.due:
            self._follow_policy()

    def ack_all(self, records: Sequence[Position]) -> None:
        """``ack`` each of ``records`` (a batch handler's list), moving each partition's
        commit target once."""
        touched = []
        partitions = self.partitions
        for record in records:
            state = partitions.get(record.partition)
            if state is not None and record.offset in state.pending:
                state.pending.discard(record.offset)
                touched.append(state)
        if self.attempts:
            for record in records:
                self.attempts.pop((record.partition, record.offset), None)
        moved = 0
        for state in set(touched):
            order, pending = state.order, state.pending
            while order and order[0] not in pending:
                order.popleft()
            target = order[0] if order else state.high
            if target > state.acked:
                moved += target - state.acked
                state.acked = target
        if moved and self.commits:
            self.unconfirmed += moved
            self.unsent += moved
            self._follow_policy()

    def _follow_policy(self) -> None:
        """Acknowledgements were counted: commit as the policy says."""
        if self.unconfirmed > self.limit:
            self.flush(wait=True)
        elif self.due is None:
            self.due = time.monotonic() + self.interval
        elif time.monotonic() >= self.due:
            self.flush(wait=False)

    def flush(self, *, wait: bool) -> None:
        """Commit every partition's target that moved since it was last sent (``wait``: since
        it was last confirmed, and wait for the store to confirm it)."""
        self.due = None
        self.unsent = 0
        if wait:
            moved = self._unconfirmed(self.partitions)
        else:
            moved = {p: s.acked for p, s in self.partitions.items() if s.acked > s.sent}
        if moved:
            self._commit(moved, wait=wait)

    def _unconfirmed(self, partitions: set[int] | dict[int, Partition]) -> dict[int, int]:
        found = self.partitions
        return {
            p: found[p].acked for p in partitions if p in found and found[p].acked > found[p].floor
        }

    def _commit(self, offsets: dict[int, int], *, wait: bool) -> None:
        held = self.consumer.assignment()
        offsets = {p: t for p, t in offsets.items() if p in held}
        if not offsets:
            return
        confirmed = self.consumer.commit(offsets, wait=wait)
        for p, target in offsets.items():
            state = self.partitions.get(p)
            if state is not None:
                state.sent = max(state.sent, target)
                if confirmed:
                    state.floor = max(state.floor, target)
        if confirmed:
            self._recount()

    def _count_confirmed(self) -> None:
        """Take in the commits the store confirmed since the last poll."""
        changed = False
        for p, offset in self.consumer.confirmed().items():
            state = self.partitions.get(p)
            if state is not None and offset > state.floor:
                state.floor = offset
                changed = True
        if changed:
            self._recount()

    def _recount(self) -> None:
        self.unconfirmed = sum(max(0, s.acked - s.floor) for s in self.partitions.values())

    def nack(self, record: Record, attempt: int, error: BaseException | str) -> None:
        if attempt >= self.max_attempts:
            self.dead_letters.send(record, error, attempt)
            self.stats.dead_lettered += 1
            self.ack(record)
            return
        p = record.partition
        self.attempts[(p, record.offset)] = attempt
        state = self.partitions.get(p)
        if state is not None:
            state.rewind(record.offset)
        self.rewound[p] = record.offset
        self.consumer.seek(p, record.offset)
        self.stats.retried += 1

    def reject(self, record: Record, error: BaseException) -> None:
        """A message that cannot be decoded: dead-lettered at once, and passed."""
        if self.dead_letters.topic:
            self.dead_letters.send(record, error, 1)
        self.stats.dead_lettered += 1
        self.ack(record)

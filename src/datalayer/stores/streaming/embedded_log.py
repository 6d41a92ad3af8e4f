"""``embedded-log``: the streaming contract on an SQLite file, shared safely by processes.

Topics have partitions with gap-free offsets; consumer groups keep committed offsets and a
member table with heartbeats, from which every member derives the same wanted assignment
(partition ``p`` goes to the ``p % n``-th live member).

A partition is handled by one member at a time, by construction: a member reads and commits a
partition only while it holds its row in ``owners`` (its lease). It claims a wanted partition
only once no live member holds it, and gives one up only at a poll or a heartbeat, after
committing every message it acknowledged there (``on_release``). So a member that joins or
leaves never makes another handle a message twice. A member that stops heartbeating (polling,
committing, or moving through a batch) for ``session_timeout`` is taken for dead: its leases go
to the others, which read from its last commit (its unacknowledged messages, and those
acknowledged since its last commit, are delivered again), and its own commits are refused from
then on; it finds out at its next heartbeat and hands out nothing more of those partitions.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

from datalayer.categories.streaming import (
    AssignmentCallback,
    CommitPolicy,
    ConsumerHandle,
    Delivery,
    OutgoingRecord,
    Record,
    StartPositions,
    Stream,
    StreamBackend,
    StreamingPattern,
)
from datalayer.categories.streaming.backend import partition_of, refuse_oversized
from datalayer.categories.streaming.start import StartPosition
from datalayer.errors import DataLayerError, NotApplied
from datalayer.stores.base import Store, StoreConfig
from datalayer.stores.shared.paths import resolve_path
from datalayer.stores.shared.sqlite_file import SQLiteFile
from datalayer.validators import Duration

log = logging.getLogger(__name__)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS topics (
        name TEXT PRIMARY KEY, partitions INTEGER NOT NULL, retention_s REAL)""",
    """CREATE TABLE IF NOT EXISTS partitions (
        topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
        PRIMARY KEY (topic, partition)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS messages (
        topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
        key TEXT, value BLOB NOT NULL, headers TEXT NOT NULL, ts REAL NOT NULL,
        PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS messages_by_time ON messages (topic, partition, ts)",
    """CREATE TABLE IF NOT EXISTS offsets (
        grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
        committed INTEGER NOT NULL, PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS members (
        grp TEXT NOT NULL, topic TEXT NOT NULL, member TEXT NOT NULL, heartbeat REAL NOT NULL,
        PRIMARY KEY (grp, topic, member)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS owners (
        grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, member TEXT NOT NULL,
        PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID""",
]


class EmbeddedLogConfig(StoreConfig):
    """An SQLite file holding topics, messages, committed offsets and group members."""

    type: Literal["embedded-log"]
    path: str = ".datalayer/events.db"
    session_timeout: Duration = timedelta(seconds=10)
    poll_interval: float = Field(default=0.05, gt=0, le=5)
    max_message_bytes: int = Field(default=1_048_576, ge=1024, le=1_000_000_000)
    busy_timeout: float = Field(default=30.0, gt=0, le=3600)
    commit: CommitPolicy = Field(default_factory=CommitPolicy)

    def target(self) -> str:
        return self.path

    def connect(self, name: str, base_dir: Path) -> EmbeddedLogStore:
        return EmbeddedLogStore(name, self, resolve_path(self.path, base_dir))


class EmbeddedLogStore(Store[StreamingPattern, Stream], StreamBackend):
    config: EmbeddedLogConfig

    def __init__(self, name: str, config: EmbeddedLogConfig, path: Path) -> None:
        super().__init__(name, config)
        self.commit_policy = config.commit
        self.db = SQLiteFile(path, self.label, config.busy_timeout)
        with self.db.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        self._last_purge = 0.0
        self._partition_counts: dict[str, int] = {}

    def handle(self, pattern: StreamingPattern) -> Stream:
        return Stream(pattern, self)

    def apply(self, patterns: list[StreamingPattern]) -> list[str]:
        done = []
        for pattern in patterns:
            retention = pattern.retention.total_seconds() if pattern.retention else None
            for topic in filter(None, [pattern.topic, pattern.dead_letter]):
                done.append(self.create_topic(topic, pattern.partitions, retention))
        return done

    def create_topic(self, topic: str, partitions: int, retention: float | None) -> str:
        """Create a topic, or grow its partitions; never shrink (keys would move)."""
        with self.db.write() as conn:
            row = conn.execute("SELECT partitions FROM topics WHERE name = ?", (topic,)).fetchone()
            if row is not None and row[0] > partitions:
                raise DataLayerError(
                    f"{self.label}: topic '{topic}' has {row[0]} partitions; "
                    f"it cannot shrink to {partitions}",
                    store=self.name,
                )
            conn.execute(
                "INSERT INTO topics(name, partitions, retention_s) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET partitions = excluded.partitions, "
                "retention_s = excluded.retention_s",
                (topic, partitions, retention),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO partitions(topic, partition, next_offset) VALUES (?, ?, 0)",
                [(topic, p) for p in range(partitions)],
            )
        self._partition_counts.pop(topic, None)
        if row is None:
            return f"topic '{topic}' created ({partitions} partitions)"
        if row[0] < partitions:
            return f"topic '{topic}' grown to {partitions} partitions"
        return f"topic '{topic}' exists ({partitions} partitions)"

    def partitions(self, topic: str) -> int:
        """Partition count of a topic (cached; ``apply`` forgets what it changes)."""
        if topic not in self._partition_counts:
            with self.db.read() as conn:
                row = conn.execute(
                    "SELECT partitions FROM topics WHERE name = ?", (topic,)
                ).fetchone()
            if row is None:
                raise NotApplied(
                    f"{self.label}: topic '{topic}' does not exist; run 'datalayer apply'",
                    store=self.name,
                )
            self._partition_counts[topic] = int(row[0])
        return self._partition_counts[topic]

    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        refuse_oversized(
            self.label,
            topic,
            [r.value for r in records],
            self.config.max_message_bytes,
        )
        count = self.partitions(topic)
        placed = [(partition_of(r.key, count), r) for r in records]
        now = time.time()
        deliveries = []
        with self.db.write() as conn:
            offsets = dict(
                conn.execute(
                    "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
                ).fetchall()
            )
            rows = []
            for partition, record in placed:
                offset = offsets[partition]
                offsets[partition] = offset + 1
                rows.append(
                    (
                        topic,
                        partition,
                        offset,
                        record.key,
                        record.value,
                        json.dumps(record.headers),
                        now,
                    )
                )
                deliveries.append(Delivery(topic, partition, offset))
            conn.executemany(
                "INSERT INTO messages(topic, partition, offset, key, value, headers, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "UPDATE partitions SET next_offset = ? WHERE topic = ? AND partition = ?",
                [(o, topic, p) for p, o in offsets.items()],
            )
        self.purge_expired()
        return deliveries

    def end_offsets(self, topic: str) -> dict[int, int]:
        self.partitions(topic)
        with self.db.read() as conn:
            return dict(
                conn.execute(
                    "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
                ).fetchall()
            )

    def committed_offsets(self, topic: str, group: str) -> dict[int, int]:
        self.partitions(topic)
        with self.db.read() as conn:
            return dict(
                conn.execute(
                    "SELECT partition, committed FROM offsets WHERE grp = ? AND topic = ?",
                    (group, topic),
                ).fetchall()
            )

    def open_consumer(
        self,
        topic: str,
        group: str | None,
        start: StartPositions,
        on_assignment: AssignmentCallback,
        on_release: AssignmentCallback,
    ) -> EmbeddedConsumer:
        return EmbeddedConsumer(
            self, topic, self.partitions(topic), group, start, on_assignment, on_release
        )

    def ping(self) -> None:
        self.db.ping()

    def close(self) -> None:
        self.db.close()

    def purge_expired(self) -> None:
        """Apply topic retention at most once a minute per process."""
        if time.monotonic() - self._last_purge < 60:
            return
        self._last_purge = time.monotonic()
        with self.db.write() as conn:
            for topic, retention in conn.execute(
                "SELECT name, retention_s FROM topics WHERE retention_s IS NOT NULL"
            ).fetchall():
                conn.execute(
                    "DELETE FROM messages WHERE topic = ? AND ts < ?",
                    (topic, time.time() - retention),
                )


class EmbeddedConsumer(ConsumerHandle):
    def __init__(
        self,
        store: EmbeddedLogStore,
        topic: str,
        partitions: int,
        group: str | None,
        start: StartPositions,
        on_assignment: AssignmentCallback,
        on_release: AssignmentCallback,
    ) -> None:
        self.on_assignment = on_assignment
        self.on_release = on_release
        self.store = store
        self.db = store.db
        self.topic = topic
        self.partitions = partitions
        self.group = group
        self.start = start
        self.member = uuid.uuid4().hex
        self.positions: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.started: set[int] = set()
        self.session = store.config.session_timeout.total_seconds()
        self.refresh_every = min(0.5, self.session / 4)
        self.last_refresh = 0.0

    def refresh(self) -> None:
        """Heartbeat and rebalance: partitions given up or lost are dropped, claimed ones start
        where the contract says (the first time this consumer gets them) or at the commit."""
        self.last_refresh = time.monotonic()
        assigned = set(range(self.partitions)) if self.group is None else self.rebalance()
        for p in self.assigned - assigned:
            self.positions.pop(p, None)
        for p in sorted(assigned - self.assigned):
            self.positions[p] = self.initial_position(p)
            self.started.add(p)
        changed = assigned != self.assigned
        self.assigned = assigned
        if changed:
            self.on_assignment(set(assigned))

    def rebalance(self) -> set[int]:
        """One write transaction: heartbeat, forget members past their session (and their
        leases), give up held partitions another member now wants, claim wanted partitions no
        live member holds. Returns the partitions this member holds."""
        assert self.group is not None
        now = time.time()
        me = (self.group, self.topic, self.member)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO members(grp, topic, member, heartbeat) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(grp, topic, member) DO UPDATE SET heartbeat = excluded.heartbeat",
                (*me, now),
            )
            conn.execute(
                "DELETE FROM members WHERE grp = ? AND topic = ? AND heartbeat < ?",
                (self.group, self.topic, now - self.session),
            )
            conn.execute(
                "DELETE FROM owners WHERE grp = ?1 AND topic = ?2 AND member NOT IN "
                "(SELECT member FROM members WHERE grp = ?1 AND topic = ?2)",
                (self.group, self.topic),
            )
            members = [
                m
                for (m,) in conn.execute(
                    "SELECT member FROM members WHERE grp = ? AND topic = ? ORDER BY member",
                    (self.group, self.topic),
                )
            ]
            owners = dict(
                conn.execute(
                    "SELECT partition, member FROM owners WHERE grp = ? AND topic = ?",
                    (self.group, self.topic),
                ).fetchall()
            )
            index = members.index(self.member)
            wanted = {p for p in range(self.partitions) if p % len(members) == index}
            held = {p for p, m in owners.items() if m == self.member}
            released = held - wanted
            claimed = {p for p in wanted if p not in owners}
            conn.executemany(
                "INSERT INTO owners(grp, topic, member, partition) VALUES (?, ?, ?, ?)",
                [(*me, p) for p in claimed],
            )
        lost = self.assigned - held
        if lost:
            self.lose(lost)
        if released:
            self.on_release(released & self.assigned)  # still leased: commit them first
            with self.db.write() as conn:
                conn.executemany(
                    "DELETE FROM owners "
                    "WHERE grp = ? AND topic = ? AND member = ? AND partition = ?",
                    [(*me, p) for p in released],
                )
        return (held - released) | claimed

    def lose(self, partitions: set[int]) -> None:
        """Drop partitions whose lease another member took: the messages of them fetched
        already are not handed out (the next owner has them)."""
        self.assigned -= partitions
        for partition in partitions:
            self.positions.pop(partition, None)
        self.on_assignment(set(self.assigned))
        log.warning(
            "%s: partitions %s of '%s' went to another member of group '%s': this one missed "
            "its session timeout; its unacknowledged messages are delivered again there",
            self.store.label,
            sorted(partitions),
            self.topic,
            self.group,
        )

    def initial_position(self, partition: int) -> int:
        """The contract's start position for ``partition`` as an offset in this file."""
        position = self.start(partition)
        if partition in self.started:
            position = StartPosition("committed")
        with self.db.read() as conn:
            first, end = conn.execute(
                "SELECT (SELECT min(offset) FROM messages WHERE topic = ?1 AND partition = ?2), "
                "(SELECT next_offset FROM partitions WHERE topic = ?1 AND partition = ?2)",
                (self.topic, partition),
            ).fetchone()
            earliest = end if first is None else first
            if position.kind == "committed":
                row = None
                if self.group is not None:
                    row = conn.execute(
                        "SELECT committed FROM offsets WHERE grp = ? AND topic = ? AND partition = ?",
                        (self.group, self.topic, partition),
                    ).fetchone()
                return int(max(row[0], earliest) if row else earliest)
            if position.kind == "earliest":
                return int(earliest)
            if position.kind == "latest":
                return int(end)
            if position.kind == "time":
                row = conn.execute(
                    "SELECT min(offset) FROM messages WHERE topic = ? AND partition = ? AND ts >= ?",
                    (self.topic, partition, position.time.timestamp()),
                ).fetchone()
                return int(end if row[0] is None else row[0])
        return position.within(int(earliest), int(end))

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() - self.last_refresh >= self.refresh_every:
                self.refresh()
            records = self.fetch(max_records)
            if records or time.monotonic() >= deadline:
                return records
            time.sleep(min(self.store.config.poll_interval, max(0.0, deadline - time.monotonic())))

    def fetch(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        new = tuple.__new__  # Record(...) without NamedTuple's Python-level __new__
        with self.db.read() as conn:
            for partition in sorted(self.assigned):
                if len(out) >= max_records:
                    break
                rows = conn.execute(
                    "SELECT offset, key, value, headers, ts FROM messages "
                    "WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
                    (self.topic, partition, self.positions[partition], max_records - len(out)),
                ).fetchall()
                stamp, when = None, None  # messages published together share their time
                for offset, key, value, headers, ts in rows:
                    if ts != stamp:
                        stamp, when = ts, datetime.fromtimestamp(ts, UTC)
                    out.append(
                        new(
                            Record,
                            (
                                self.topic,
                                partition,
                                offset,
                                key,
                                bytes(value),
                                None if headers == "{}" else json.loads(headers) or None,
                                when,
                            ),
                        )
                    )
                if rows:
                    self.positions[partition] = rows[-1][0] + 1
        return out

    def commit(self, offsets: Mapping[int, int], *, wait: bool) -> bool:
        """Commit in one transaction, each partition only while holding its lease (and count
        it as a heartbeat); a partition whose lease was taken is lost instead."""
        if self.group is None:
            return True
        refused = set()
        with self.db.write() as conn:
            for partition, offset in offsets.items():
                accepted = conn.execute(
                    "INSERT INTO offsets(grp, topic, partition, committed) SELECT ?1, ?2, ?3, ?4 "
                    "WHERE EXISTS (SELECT 1 FROM owners WHERE grp = ?1 AND topic = ?2 "
                    "AND partition = ?3 AND member = ?5) "
                    "ON CONFLICT(grp, topic, partition) DO UPDATE "
                    "SET committed = max(committed, excluded.committed)",
                    (self.group, self.topic, partition, offset, self.member),
                ).rowcount
                if not accepted:
                    refused.add(partition)
            if len(refused) < len(offsets):
                conn.execute(
                    "UPDATE members SET heartbeat = max(heartbeat, ?) "
                    "WHERE grp = ? AND topic = ? AND member = ?",
                    (time.time(), self.group, self.topic, self.member),
                )
        if refused & self.assigned:
            self.lose(refused & self.assigned)
        return True

    def seek(self, partition: int, offset: int) -> None:
        if partition in self.assigned:
            self.positions[partition] = offset

    def heartbeat(self) -> None:
        """A member busy with a batch heartbeats (and finds out whether it lost a lease) here:
        acknowledgements do not commit one by one."""
        if self.group is not None and time.monotonic() - self.last_refresh >= self.refresh_every:
            self.refresh()

    def assignment(self) -> set[int]:
        return set(self.assigned)

    def close(self) -> None:
        """Leave the group: its leases are free at once (what was acknowledged is committed)."""
        if self.group is not None:
            me = (self.group, self.topic, self.member)
            with self.db.write() as conn:
                conn.execute("DELETE FROM owners WHERE grp = ? AND topic = ? AND member = ?", me)
                conn.execute("DELETE FROM members WHERE grp = ? AND topic = ? AND member = ?", me)

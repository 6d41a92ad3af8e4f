"""The streaming contract, subclassed to run against a streaming store type."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

import datalayer
from datalayer import DataLayer, DataLayerError, NotApplied, PayloadValidationError
from datalayer.categories.streaming import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_SOURCE,
    Message,
    MessageBatch,
    OutgoingRecord,
    Stream,
)
from datalayer.testing.contracts.base import Contract, OpenLayer
from datalayer.testing.contracts.schemas import Event
from datalayer.testing.registry import write_registry

EVENTS = {
    "topic": "events",
    "partitions": 4,
    "key": "device",
    "schema": "datalayer.testing.contracts.schemas:Event",
    "dead_letter": "events.dlq",
    "max_attempts": 3,
}


class Calibration(BaseModel):
    offset: float


class Reading(BaseModel):
    """An event with floats at the top, optional, in a list and in a nested model."""

    sensor: str
    value: float
    peak: float | None = None
    samples: list[float] = Field(default_factory=list)
    calibration: Calibration | None = None


READINGS = {
    "topic": "readings",
    "partitions": 2,
    "key": "sensor",
    "schema": "datalayer.testing.contracts.streaming:Reading",
}


def event(n: int, device: str | None = None, payload: str = "") -> dict[str, object]:
    return {"event_id": f"e{n}", "device": device or f"d{n % 5}", "seq": n, "payload": payload}


class StreamingContract(Contract):
    """The streaming contract: keys and partitions, consumer groups, acknowledgements,
    retries and dead letters, replay, and the batch publisher."""

    category = "streaming"
    #: How long a consumer waits for more before a test decides the topic is drained; set per
    #: test from ``idle_for``.
    idle: float

    def idle_for(self, store: dict[str, Any]) -> float:
        """The idle timeout for this store: longer where a fetch after an assignment is slow."""
        return 0.5

    def refuse_writes(self, stream: Stream, topic: str) -> None:
        """Make the store refuse every message of ``topic`` (the broker or the file says no)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override refuse_writes for the store under test"
        )

    @pytest.fixture
    def dl(self, open_layer: OpenLayer, datalayer_store: dict[str, Any]) -> DataLayer:
        self.idle = self.idle_for(datalayer_store)
        return open_layer({"events": EVENTS})

    def drain(
        self, dl: DataLayer, group: str | None, *, ack: bool = True, **kwargs: Any
    ) -> list[Message]:
        out = []
        for message in dl.stream("events").consume(
            group, idle_timeout=kwargs.pop("idle_timeout", self.idle), **kwargs
        ):
            out.append(message)
            if ack:
                message.ack()
        return out

    def _refuse_writes(self, dl: DataLayer) -> None:
        """Have the store refuse the topic, then wait until it does."""
        stream = dl.stream("events")
        self.refuse_writes(stream, stream.pattern.topic)
        # The broker applies a topic's new settings a moment after the change is acknowledged.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                stream.publish(event(-1, "probe"))
            except DataLayerError:
                return
            time.sleep(0.1)
        raise AssertionError("the store kept accepting messages")

    def test_publish_then_consume_round_trips(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        delivery = stream.publish(event(1, "dev-a"))
        assert delivery.topic.startswith("events") and delivery.offset >= 0
        [message] = self.drain(dl, "g1")
        assert message.value == event(1, "dev-a")
        assert message.key == "dev-a"
        assert (message.partition, message.offset) == (delivery.partition, delivery.offset)
        assert message.attempt == 1

    def test_same_key_same_partition_in_order(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        deliveries = stream.publish_many(
            [event(n, "dev-a" if n % 2 else "dev-b") for n in range(20)]
        )
        assert len({d.partition for d, n in zip(deliveries, range(20), strict=True) if n % 2}) == 1
        messages = self.drain(dl, "g1")
        assert len(messages) == 20
        seqs = [m.value["seq"] for m in messages if m.key == "dev-a"]
        assert seqs == sorted(seqs) and len(seqs) == 10

    def test_invalid_payload_names_the_field_and_publishes_nothing(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        before = stream.end_offsets()
        with pytest.raises(PayloadValidationError, match="seq"):
            stream.publish({"event_id": "x", "device": "d", "seq": "not a number"})
        with pytest.raises(PayloadValidationError, match="device"):
            stream.publish_many([event(1), {"event_id": "x", "seq": 2}])
        assert stream.end_offsets() == before

    def test_oversized_message_is_refused_and_publishes_nothing(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        before = stream.end_offsets()
        with pytest.raises(DataLayerError, match="bytes"):
            stream.publish_many([event(1), event(2, payload="x" * 200_000)])
        assert stream.end_offsets() == before

    def test_committed_offsets_resume_the_group(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n) for n in range(10)])
        first = self.drain(dl, "g1", max_messages=4)
        rest = self.drain(dl, "g1")
        assert len(first) == 4 and len(rest) == 6
        assert {m.value["seq"] for m in first} | {m.value["seq"] for m in rest} == set(range(10))
        assert self.drain(dl, "g1") == []
        assert len(self.drain(dl, "other-group")) == 10

    def test_unacknowledged_messages_are_delivered_again(self, dl: DataLayer) -> None:
        dl.stream("events").publish_many([event(n, "dev-a") for n in range(5)])
        seen = self.drain(dl, "g1", ack=False)
        assert [m.value["seq"] for m in seen] == [0, 1, 2, 3, 4]
        again = self.drain(dl, "g1")
        assert [m.value["seq"] for m in again] == [0, 1, 2, 3, 4]

    def test_commit_waits_for_every_earlier_ack(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(4)])
        consumer = stream.consume("g1", idle_timeout=self.idle)
        messages = [next(consumer) for _ in range(4)]
        messages[0].ack()
        messages[2].ack()
        messages[3].ack()
        consumer.close()  # type: ignore[attr-defined]
        again = self.drain(dl, "g1")
        assert [m.value["seq"] for m in again] == [1, 2, 3]

    def test_acks_commit_together_never_more_than_max_uncommitted_behind(
        self, open_layer: OpenLayer, datalayer_store: dict[str, Any]
    ) -> None:
        """Acknowledgements are committed together, not one round trip each, yet the group's
        committed offset is never more than ``max_uncommitted`` behind what was acknowledged
        (the most a crash can make the group handle twice), and closing commits all of it."""
        self.idle = self.idle_for(datalayer_store)
        datalayer_store["commit"] = {"max_uncommitted": 3, "interval": "1h"}
        stream = open_layer({"events": EVENTS}).stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(10)])
        behind = []
        consumer = stream.consume("g1", idle_timeout=self.idle, batch_size=100)
        for acked, message in enumerate(consumer, start=1):
            message.ack()
            committed = stream.committed("g1").get(message.partition, 0)
            behind.append(message.offset + 1 - committed)
            if acked == 10:
                break
        consumer.close()  # type: ignore[attr-defined]
        assert max(behind) <= 3
        assert sum(behind) > 0, "every ack was committed on its own"
        assert sum(stream.lag("g1").values()) == 0
        assert stream.committed("g1") == {m: o for m, o in stream.end_offsets().items() if o}

    def test_max_uncommitted_zero_commits_each_ack_before_it_returns(
        self, open_layer: OpenLayer, datalayer_store: dict[str, Any]
    ) -> None:
        self.idle = self.idle_for(datalayer_store)
        datalayer_store["commit"] = {"max_uncommitted": 0}
        stream = open_layer({"events": EVENTS}).stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(4)])
        for message in stream.consume("g1", idle_timeout=self.idle):
            message.ack()
            assert stream.committed("g1")[message.partition] == message.offset + 1

    def test_a_bad_commit_policy_names_the_setting(
        self, open_layer: OpenLayer, datalayer_store: dict[str, Any]
    ) -> None:
        datalayer_store["commit"] = {"max_uncommitted": -1}
        with pytest.raises(DataLayerError, match="max_uncommitted"):
            open_layer({"events": EVENTS})

    def test_process_batch_hands_lists_in_order_each_message_once(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, f"dev-{n % 3}") for n in range(25)])
        batches: list[list[int]] = []
        stats = stream.process_batch(
            lambda batch: batches.append([m.value["seq"] for m in batch]),
            "g1",
            max_batch=10,
            max_wait=0.1,
            idle_timeout=self.idle,
        )
        assert all(0 < len(b) <= 10 for b in batches)
        seen = [seq for b in batches for seq in b]
        assert sorted(seen) == list(range(25))
        for device in range(3):
            mine = [seq for seq in seen if seq % 3 == device]
            assert mine == sorted(mine)
        assert (stats.handled, stats.retried, stats.dead_lettered) == (25, 0, 0)
        assert stream.process_batch(lambda b: None, "g1", idle_timeout=self.idle).handled == 0

    def test_process_batch_values_and_keys_are_its_messages_and_settle_without_them(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, f"dev-{n % 2}") for n in range(12)])
        seen: list[tuple[list[Any], list[str | None], list[Any], list[str | None]]] = []

        def look(batch: MessageBatch) -> None:
            seen.append(
                (list(batch.values), batch.keys, [m.value for m in batch], [m.key for m in batch])
            )

        stats = stream.process_batch(look, "g1", max_batch=5, max_wait=0.1, idle_timeout=self.idle)
        assert stats.handled == 12
        for values, keys, message_values, message_keys in seen:
            assert (values, keys) == (message_values, message_keys)
            assert keys == [f"dev-{v['seq'] % 2}" for v in values]
        # A handler that only reads the values (no message is ever made) settles its batches.
        stream.publish_many([event(n, "dev-0") for n in range(12, 20)])
        got: list[int] = []
        stats = stream.process_batch(
            lambda batch: got.extend(v["seq"] for v in batch.values), "g1", idle_timeout=self.idle
        )
        assert (stats.handled, got) == (8, list(range(12, 20)))
        assert self.drain(dl, "g1") == []

    def test_a_batch_handler_cannot_change_its_messages_through_values(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(6)])
        seen: list[int] = []

        def handler(batch: MessageBatch) -> None:
            values: Any = batch.values
            with contextlib.suppress(AttributeError):
                values.clear()  # a hostile (or careless) sink
            if len(batch) > 1:
                raise RuntimeError("sink down")  # then each message alone, from its own value
            seen.append(batch[0].value["seq"])

        stats = stream.process_batch(handler, "g1", max_batch=6, idle_timeout=self.idle)
        assert (sorted(seen), stats.handled, stats.dead_lettered) == (list(range(6)), 6, 0)
        assert self.drain(dl, "g1") == []

    def test_process_batch_takes_a_failed_list_one_by_one_and_dead_letters_the_bad_one(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(6)])
        calls: list[list[int]] = []
        written: list[int] = []

        def handler(batch: MessageBatch) -> None:
            seqs = [m.value["seq"] for m in batch]
            calls.append(seqs)
            if 2 in seqs:
                raise RuntimeError("poison")
            written.extend(seqs)

        stats = stream.process_batch(handler, "g1", max_batch=6, idle_timeout=self.idle)
        assert sorted(written) == [0, 1, 3, 4, 5]
        assert calls.count([2]) in (3, 4)  # max_attempts alone (after [2] failed as a list)
        assert (stats.handled, stats.dead_lettered) == (5, 1)
        assert [m.value["seq"] for m in stream.dead_letters()] == [2]
        assert self.drain(dl, "g1") == []

    @pytest.mark.parametrize("group", ["", "g\x00x", "lone \ud800", 7])
    def test_a_group_name_the_store_cannot_keep_apart_is_refused(
        self, dl: DataLayer, group: Any
    ) -> None:
        stream = dl.stream("events")
        with pytest.raises(DataLayerError, match="group must be non-empty text"):
            stream.consume(group, idle_timeout=self.idle)
        with pytest.raises(DataLayerError, match="group must be non-empty text"):
            stream.process(lambda m: None, group, idle_timeout=self.idle)

    def test_process_batch_refuses_bad_arguments_naming_them(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"max_batch": 0}, "max_batch"),
            ({"max_batch": True}, "max_batch"),
            ({"max_wait": -1}, "max_wait"),
            ({"max_wait": float("nan")}, "max_wait"),
        ]
        for kwargs, name in cases:
            with pytest.raises(DataLayerError, match=name):
                stream.process_batch(lambda b: None, "g1", idle_timeout=self.idle, **kwargs)

    def test_consume_refuses_bad_arguments_naming_them(self, dl: DataLayer) -> None:
        """A negative timeout is librdkafka's "wait forever": every reading call refuses it,
        and other values that would read forever or not at all, before reading anything."""
        stream = dl.stream("events")
        stream.publish(event(0))
        cases: list[tuple[dict[str, Any], str]] = [
            ({"idle_timeout": -1}, "idle_timeout"),
            ({"idle_timeout": float("nan")}, "idle_timeout"),
            ({"max_messages": -1}, "max_messages"),
            ({"max_messages": True}, "max_messages"),
            ({"max_messages": "5"}, "max_messages"),
            ({"batch_size": 0}, "batch_size"),
        ]
        for kwargs, name in cases:
            with pytest.raises(DataLayerError, match=name):
                stream.consume("g1", **{"idle_timeout": self.idle, **kwargs})
            if "batch_size" not in kwargs:
                with pytest.raises(DataLayerError, match=name):
                    stream.process(lambda m: None, "g1", **{"idle_timeout": self.idle, **kwargs})
        assert list(stream.consume("g1", max_messages=0, idle_timeout=self.idle)) == []
        assert len(self.drain(dl, "g1")) == 1  # nothing was read or committed meanwhile

    def test_nack_redelivers_then_dead_letters_with_headers(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(0, "dev-a"), event(1, "dev-a")])
        attempts = []
        for message in stream.consume("g1", idle_timeout=self.idle):
            if message.value["seq"] == 0:
                attempts.append(message.attempt)
                message.nack(ValueError("cannot handle"))
            else:
                message.ack()
        assert attempts == [1, 2, 3]
        [dead] = list(stream.dead_letters())
        assert dead.value == event(0, "dev-a")
        assert dead.headers[HEADER_ATTEMPTS] == "3"
        assert "cannot handle" in dead.headers[HEADER_ERROR]
        assert dead.headers[HEADER_SOURCE].endswith("/0")
        assert self.drain(dl, "g1") == []

    def test_process_retries_then_dead_letters_and_the_partition_goes_on(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(6)])
        handled: list[int] = []
        calls: dict[int, int] = {}

        def handler(message: Message) -> None:
            seq = message.value["seq"]
            calls[seq] = calls.get(seq, 0) + 1
            if seq == 2:
                raise RuntimeError("poison")
            if seq == 4 and calls[seq] == 1:
                raise RuntimeError("flaky")
            handled.append(seq)

        stats = stream.process(handler, "g1", idle_timeout=self.idle)
        assert handled == [0, 1, 3, 4, 5]
        assert calls[2] == 3 and calls[4] == 2
        assert (stats.handled, stats.dead_lettered, stats.retried) == (5, 1, 3)
        assert [m.value["seq"] for m in stream.dead_letters()] == [2]

    def test_undecodable_message_goes_to_dead_letter_and_consumer_continues(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        topic = stream.pattern.topic
        stream.publish(event(0, "dev-a"))
        stream.store.produce(topic, [OutgoingRecord("dev-a", b"{not json")])
        stream.store.produce(topic, [OutgoingRecord("dev-a", b'{"event_id": "x"}')])
        stream.publish(event(3, "dev-a"))
        assert [m.value["seq"] for m in self.drain(dl, "g1")] == [0, 3]
        dead = list(stream.dead_letters())
        assert [d.value for d in dead] == [b"{not json", {"event_id": "x"}]
        assert all(HEADER_ERROR in d.headers for d in dead)

    def test_replay_from_earliest_latest_offset_and_timestamp(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(3)])
        time.sleep(0.05)
        middle = datetime.now(UTC)
        time.sleep(0.05)
        deliveries = stream.publish_many([event(n, "dev-a") for n in range(3, 6)])
        partition = deliveries[0].partition
        assert len(self.drain(dl, None, start="earliest")) == 6
        assert self.drain(dl, None, start="latest", idle_timeout=0.3) == []
        from_offset = self.drain(dl, None, start={partition: 4})
        assert [m.value["seq"] for m in from_offset] == [4, 5]
        assert [m.value["seq"] for m in self.drain(dl, None, start=middle)] == [3, 4, 5]
        assert [m.value["seq"] for m in self.drain(dl, None, start=2)] == [2, 3, 4, 5]
        self.drain(dl, "g1")
        assert len(self.drain(dl, "g1", start="earliest")) == 6

    def test_end_offsets_count_published_messages(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        before = stream.end_offsets()
        assert set(before) == set(range(4))
        stream.publish_many([event(n) for n in range(7)])
        after = stream.end_offsets()
        assert sum(after.values()) - sum(before.values()) == 7

    def test_two_consumers_in_one_group_share_the_partitions(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        got: dict[str, list[Message]] = {"a": [], "b": []}
        held: dict[str, set[int]] = {"a": set(), "b": set()}
        split: dict[str, set[int]] = {}
        settled = threading.Event()

        def assigned(name: str, partitions: set[int]) -> None:
            held[name] = partitions
            a, b = held["a"], held["b"]
            if not settled.is_set() and a and b and not a & b and a | b == set(range(4)):
                split.update(a=set(a), b=set(b))
                settled.set()

        def member(name: str) -> None:
            for message in stream.consume(
                "shared", idle_timeout=3.0, on_assignment=lambda p: assigned(name, p)
            ):
                got[name].append(message)
                message.ack()

        # Both members hold their share of the partitions before anything is published.
        threads = [threading.Thread(target=member, args=(n,)) for n in "ab"]
        for t in threads:
            t.start()
        assert settled.wait(timeout=30), f"the group never split the partitions: {held}"
        stream.publish_many([event(n, f"dev-{n % 8}") for n in range(40)])
        for t in threads:
            t.join(timeout=60)
        a = {(m.partition, m.offset) for m in got["a"]}
        b = {(m.partition, m.offset) for m in got["b"]}
        assert a and b, "both members should get messages"
        assert not a & b
        assert sorted(m.value["seq"] for m in got["a"] + got["b"]) == list(range(40))
        assert {m.partition for m in got["a"]} <= split["a"]
        assert {m.partition for m in got["b"]} <= split["b"]

    def test_members_joining_and_leaving_handle_each_message_exactly_once(
        self, dl: DataLayer
    ) -> None:
        """Churn while a producer publishes: members join one after another and each leaves
        cleanly after a share of the messages; every message is handled once, none twice."""
        stream = dl.stream("events")
        total, churners = 600, 4
        gap = 2 * self.idle  # between joins: a few of the store's rebalances
        handled: list[str] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def produce() -> None:
            # Bursts: members fetch big batches, so a rebalance finds messages in hand.
            batches = [range(n, min(n + 40, total)) for n in range(0, total, 40)]
            pause = gap * (churners + 1) / len(batches)
            for batch in batches:
                stream.publish_many([event(n, f"dev-{n % 16}") for n in batch])
                time.sleep(pause)

        def member(delay: float, share: int | None) -> None:
            time.sleep(delay)
            for message in stream.consume(
                "churn", max_messages=share, idle_timeout=max(3 * self.idle, 2.0)
            ):
                time.sleep(0.003)  # the handler's work, during which a rebalance may start
                with lock:
                    handled.append(message.value["event_id"])
                message.ack()

        def guarded(target: Any, *args: Any) -> threading.Thread:
            def run() -> None:
                try:
                    target(*args)
                except BaseException as exc:  # reported by the assertion below
                    failures.append(exc)

            return threading.Thread(target=run, daemon=True)

        threads = [guarded(produce), guarded(member, 0.0, None)]
        threads += [guarded(member, k * gap, total // 8) for k in range(1, churners + 1)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, 50 - (time.monotonic() - started)))
        assert not any(t.is_alive() for t in threads), "a member or the producer never finished"
        assert not failures, failures
        # Whatever the members left (none left the group with messages in hand) comes now.
        handled += [m.value["event_id"] for m in self.drain(dl, "churn")]
        counts = Counter(handled)
        twice = sorted(i for i, c in counts.items() if c > 1)
        assert not twice, f"{len(twice)} messages handled more than once, e.g. {twice[:5]}"
        assert set(counts) == {f"e{n}" for n in range(total)}, "messages were lost"

    def test_a_stopped_consumer_s_unacked_messages_go_to_another_member(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(n, "dev-a") for n in range(6)])
        first = stream.consume("g1", idle_timeout=self.idle)
        taken = [next(first) for _ in range(4)]
        taken[0].ack()
        taken[1].ack()
        # Stops mid-batch: 2 and 3 were delivered but never acknowledged.
        first.close()  # type: ignore[attr-defined]
        rest = self.drain(dl, "g1")
        assert [m.value["seq"] for m in rest] == [2, 3, 4, 5]

    def test_publish_many_reports_where_each_event_landed(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        deliveries = stream.publish_many([event(n, f"dev-{n % 3}") for n in range(12)])
        landed = {m.value["seq"]: (m.partition, m.offset) for m in self.drain(dl, "g1")}
        assert [(d.partition, d.offset) for d in deliveries] == [landed[n] for n in range(12)]

    def test_publisher_delivers_every_batch_by_the_end_of_the_block(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        with stream.publisher() as publisher:
            assert publisher.publish_many([event(n, "dev-a") for n in range(5)]) == 5
            publisher.publish(event(5, "dev-a"), headers={"trace": "t-5"})
            assert publisher.flush() == 6
            assert publisher.publish_many(event(n, f"dev-{n}") for n in range(6, 10)) == 4
            assert publisher.publish_many([]) == 0
        messages = self.drain(dl, "g1")
        assert sorted(m.value["seq"] for m in messages) == list(range(10))
        assert [m.value["seq"] for m in messages if m.key == "dev-a"] == [0, 1, 2, 3, 4, 5]
        assert [m.headers.get("trace") for m in messages if m.value["seq"] == 5] == ["t-5"]
        assert {m.key for m in messages} == {"dev-a", "dev-6", "dev-7", "dev-8", "dev-9"}

    def test_publisher_sends_the_same_bytes_and_keys_as_publish(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish({"event_id": "a", "device": "dev-a", "seq": "1"})
        with stream.publisher() as publisher:
            publisher.publish_many([{"event_id": "b", "device": "dev-a", "seq": "2"}])
        values = [m.value for m in self.drain(dl, None, start="earliest")]
        assert values == [
            {"event_id": "a", "device": "dev-a", "seq": 1, "payload": ""},
            {"event_id": "b", "device": "dev-a", "seq": 2, "payload": ""},
        ]
        keys, bodies = stream.encode_many([event(7, "dev-z"), event(8, "dev-y")])
        assert keys == ["dev-z", "dev-y"]
        assert bodies == [
            stream.encode(event(7, "dev-z")).value,
            stream.encode(event(8, "dev-y")).value,
        ]
        # Dicts and models mixed, across slices: one that starts with dicts and holds a model,
        # one that starts with a model, and dicts needing coercion.
        batch: list[Any] = [{**event(n, f"dev-{n % 3}"), "seq": str(n)} for n in range(150)]
        batch[70] = Event(**event(70, "dev-m"))
        batch[128] = Event(**event(128, "dev-n"))
        keys, bodies = stream.encode_many(batch)
        assert keys == [stream.encode(e).key for e in batch]
        assert bodies == [stream.encode(e).value for e in batch]
        assert bodies[5] == b'{"event_id":"e5","device":"dev-2","seq":5,"payload":""}'

    def test_publisher_puts_each_key_on_the_partition_publish_does(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        keys = ["", "dev-a", "dev-b", "é-unicode", *(f"k{n}" for n in range(16))]
        with stream.publisher() as publisher:
            publisher.publish_many([{**event(n), "device": key} for n, key in enumerate(keys)])
            # Headers take the other path through the store.
            publisher.publish({**event(99), "device": ""}, headers={"h": "1"})
        landed = {m.value["seq"]: m.partition for m in self.drain(dl, "g1")}
        expected = {n: stream.partition_for(key) for n, key in enumerate(keys)}
        assert landed == {**expected, 99: stream.partition_for("")}
        assert len(set(expected.values())) > 1

    def test_publisher_writes_nothing_from_a_batch_with_an_invalid_event(
        self, dl: DataLayer
    ) -> None:
        stream = dl.stream("events")
        bad = {"event_id": "x", "device": "dev-a", "seq": "not a number"}
        with stream.publisher() as publisher:
            publisher.publish_many([event(0, "dev-a")])
            with pytest.raises(PayloadValidationError, match=r"\[2\]\.seq"):
                publisher.publish_many([event(1, "dev-a"), event(2, "dev-a"), bad])
            with pytest.raises(PayloadValidationError, match="device"):
                publisher.publish_many([event(3, "dev-a"), {"event_id": "y", "seq": 4}])
            with pytest.raises(DataLayerError, match="bytes"):
                publisher.publish_many([event(5, "dev-a"), event(6, payload="x" * 200_000)])
            publisher.publish_many([event(7, "dev-a")])
        assert [m.value["seq"] for m in self.drain(dl, "g1")] == [0, 7]

    def test_publisher_raises_when_the_store_refuses_delivery(self, dl: DataLayer) -> None:
        stream = dl.stream("events")
        stream.publish_many([event(0, "dev-a")])
        self._refuse_writes(dl)
        before = stream.end_offsets()
        with (
            pytest.raises(DataLayerError, match=r"refuse|too large") as raised,
            stream.publisher() as publisher,
        ):
            publisher.publish_many([event(n, f"dev-{n}") for n in range(1, 6)])
        assert not isinstance(raised.value, PayloadValidationError)
        assert raised.value.store == "main"
        with pytest.raises(DataLayerError) as raised:
            stream.publish_many([event(6, "dev-a")])
        assert raised.value.store == "main"
        assert stream.end_offsets() == before
        assert [
            m.value["seq"] for m in self.drain(dl, None, start="earliest") if m.key != "probe"
        ] == [0]

    def test_events_json_cannot_hold_are_refused_before_sending(
        self, open_layer: OpenLayer
    ) -> None:
        stream = open_layer({"raw": {"topic": "raw", "partitions": 2}}).stream("raw")
        before = stream.end_offsets()
        for bad in ({"x": float("inf")}, {"x": [float("nan")]}, {"x": object()}, {"x": Decimal(1)}):
            with pytest.raises(PayloadValidationError) as caught:
                stream.publish(bad)
            assert caught.value.store is None  # refused before the store was asked
            with pytest.raises(PayloadValidationError):
                stream.publish_many([{"x": 1}, bad])
        assert stream.end_offsets() == before

    def test_nan_and_infinities_in_float_fields_are_refused_naming_the_field(
        self, open_layer: OpenLayer, datalayer_store: dict[str, Any]
    ) -> None:
        """JSON has no NaN or infinity (the serializer would write null): every publishing path
        refuses them, whether the event is a dict, text pydantic reads as a float, or a model
        instance, and names the field (and the event's index in a batch)."""
        stream = open_layer({"readings": READINGS}).stream("readings")
        ok = {"sensor": "s1", "value": 1.5}
        before = stream.end_offsets()
        for number in (float("nan"), float("inf"), float("-inf"), "NaN", "-Infinity"):
            for field, bad in (
                ("value", {**ok, "value": number}),
                ("peak", {**ok, "peak": number}),
                ("samples.1", {**ok, "samples": [0.5, number]}),
                ("calibration.offset", {**ok, "calibration": {"offset": number}}),
            ):
                one, second = rf"\({re.escape(field)}: ", rf"\(\[1\]\.{re.escape(field)}: "
                with pytest.raises(PayloadValidationError, match=one):
                    stream.publish(bad)
                with pytest.raises(PayloadValidationError, match=one):
                    stream.publish(Reading.model_validate(bad))
                with pytest.raises(PayloadValidationError, match=second):
                    stream.publish_many([ok, bad])
                with pytest.raises(PayloadValidationError, match=second):
                    stream.publish_many([Reading(**ok), Reading.model_validate(bad)])
                with pytest.raises(PayloadValidationError, match=second), stream.publisher() as p:
                    p.publish_many([ok, bad])
        assert stream.end_offsets() == before
        good = {**ok, "peak": -0.0, "samples": [1e308, -2.5e-308], "calibration": {"offset": 0.1}}
        stream.publish(good)
        [message] = stream.consume(
            None, start="earliest", idle_timeout=self.idle_for(datalayer_store)
        )
        assert message.value == good

    def test_a_foreign_message_with_nan_or_infinity_is_dead_lettered(
        self, open_layer: OpenLayer, datalayer_store: dict[str, Any]
    ) -> None:
        """Another program's ``NaN`` or ``Infinity`` (Python's json reads them as floats) is
        not JSON: the message goes to the dead letters as it came, never to the handler."""
        pattern = {**READINGS, "dead_letter": "readings.dlq"}
        stream = open_layer({"readings": pattern}).stream("readings")
        bodies = [
            b'{"sensor": "s1", "value": NaN}',
            b'{"sensor": "s1", "value": 1.5, "peak": Infinity}',
            b'{"sensor": "s1", "value": 1.5, "samples": [-Infinity]}',
        ]
        stream.publish({"sensor": "s1", "value": 1.0})
        stream.store.produce(stream.pattern.topic, [OutgoingRecord("s1", b) for b in bodies])
        stream.publish({"sensor": "s1", "value": 2.0})
        handled: list[float] = []
        idle = self.idle_for(datalayer_store)
        stats = stream.process(lambda m: handled.append(m.value["value"]), "g1", idle_timeout=idle)
        assert handled == [1.0, 2.0] and stats.dead_lettered == len(bodies)
        dead = list(stream.dead_letters(idle_timeout=idle))
        assert [d.value for d in dead] == bodies
        assert all("not JSON" in d.headers[HEADER_ERROR] for d in dead)

    def test_text_with_a_lone_surrogate_is_refused(self, dl: DataLayer) -> None:
        """A lone surrogate has no UTF-8 form: refused before anything is sent, on every
        publishing path (pydantic's serializer raised its own error)."""
        stream = dl.stream("events")
        before = stream.end_offsets()
        bad = event(1, payload="a\ud800")
        with pytest.raises(PayloadValidationError, match="surrogate"):
            stream.publish(bad)
        with pytest.raises(PayloadValidationError, match="surrogate"):
            stream.publish(Event.model_validate(event(1, device="\udfff")))
        with pytest.raises(PayloadValidationError, match=r"\(\[1\]: "):
            stream.publish_many([event(0), bad])
        with pytest.raises(PayloadValidationError), stream.publisher() as publisher:
            publisher.publish_many([event(0), bad])
        assert stream.end_offsets() == before

    def test_events_nested_past_the_json_encoder_are_refused(self, open_layer: OpenLayer) -> None:
        """Python's JSON encoder gives up near 1,000 levels (RecursionError): refused before
        anything is sent, alone or in a batch."""
        stream = open_layer({"free": {"topic": "free"}}).stream("free")
        deep: object = "leaf"
        for _ in range(5000):
            deep = {"a": deep}
        with pytest.raises(PayloadValidationError, match="too deep"):
            stream.publish({"v": deep})
        with pytest.raises(PayloadValidationError, match="too deep"):
            stream.publish_many([{"v": 1}, {"v": deep}])
        assert stream.end_offsets() == {0: 0}

    def test_publish_many_takes_a_list_of_events(self, dl: DataLayer) -> None:
        """A dict would be published as its keys, one event each; None or a number raised
        TypeError."""
        stream = dl.stream("events")
        before = stream.end_offsets()
        for events in (event(1), None, 5, "abc", b"{}"):
            with pytest.raises(PayloadValidationError, match="list of events"):
                stream.publish_many(events)  # type: ignore[arg-type]
            with pytest.raises(PayloadValidationError), stream.publisher() as publisher:
                publisher.publish_many(events)  # type: ignore[arg-type]
        assert stream.end_offsets() == before

    def test_keys_and_headers_are_text_read_back_exactly(self, dl: DataLayer) -> None:
        """A partition key and headers are text of valid Unicode, NUL and all (Kafka cut a
        header value at NUL); anything else, and a header name with NUL, is refused before
        anything is sent (drivers raised AttributeError or TypeError, and librdkafka crashed
        the process on a header name holding a lone surrogate)."""
        stream = dl.stream("events")
        before = stream.end_offsets()
        for key, headers in (
            (5, None),
            (b"k", None),
            ("\ud800", None),
            (None, {"h": 5}),
            (None, {"h": None}),
            (None, {"h": b"v"}),
            (None, {b"h": "v"}),
            (None, {"\ud800": "v"}),
            (None, {"h": "\udfff"}),
            (None, {"a\x00b": "v"}),
            (None, "h=v"),
        ):
            with pytest.raises(PayloadValidationError) as caught:
                stream.publish(event(1), key=key, headers=headers)  # type: ignore[arg-type]
            assert caught.value.store is None
            with pytest.raises(PayloadValidationError), stream.publisher() as publisher:
                publisher.publish(event(1), key=key, headers=headers)  # type: ignore[arg-type]
        assert stream.end_offsets() == before
        headers = {"x-\u00e9\u202e": "a\x00b \U0001f600", "": "", "h": "'; DROP TABLE x; --"}
        stream.publish(event(1), key="k\x00\u200b", headers=headers)
        [message] = self.drain(dl, None, start="earliest")
        assert (message.key, message.headers) == ("k\x00\u200b", headers)

    def test_a_message_at_the_size_limit_is_dead_lettered_with_a_long_error(
        self, dl: DataLayer, datalayer_store: dict[str, Any]
    ) -> None:
        stream = dl.stream("events")
        limit = int(datalayer_store.get("max_message_bytes", 65536))
        big = event(0, "dev-a", payload="")
        big["payload"] = "x" * (limit - len(stream.encode(big).value))
        assert len(stream.encode(big).value) == limit
        stream.publish_many([big, event(1, "dev-a")])
        handled: list[int] = []

        def handler(message: Message) -> None:
            if message.value["seq"] == 0:
                raise RuntimeError("é" * 100_000)  # an error text far past any header limit
            handled.append(message.value["seq"])

        stats = stream.process(handler, "g1", idle_timeout=self.idle)
        assert handled == [1] and stats.dead_lettered == 1
        [dead] = list(stream.dead_letters())
        assert dead.value == big
        assert dead.headers[HEADER_ERROR].startswith("RuntimeError: éé")
        assert len(dead.headers[HEADER_ERROR].encode()) <= 512

    def test_a_topic_never_applied_says_to_apply(
        self, datalayer_store: dict[str, Any], tmp_path: Path
    ) -> None:
        topic = f"never_applied_{uuid.uuid4().hex[:8]}"
        pattern = {"category": "streaming", "store": "main", "topic": topic}
        folder = tmp_path / "unapplied"
        folder.mkdir()
        file = write_registry(folder, {"test": {"main": datalayer_store}}, {"never": pattern})
        with datalayer.open(file, profile="test") as dl:
            stream = dl.stream("never")
            for call in (
                lambda: stream.publish({"x": 1}),
                lambda: stream.end_offsets(),
                lambda: list(stream.consume("g", max_messages=1, idle_timeout=1.0)),
            ):
                with pytest.raises(NotApplied, match="run 'datalayer apply'") as caught:
                    call()
                assert caught.value.store == "main"

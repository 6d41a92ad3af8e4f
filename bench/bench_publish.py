"""Stream publish throughput on Apache Kafka: datalayer's ``publisher()``, ``publish_many`` and
``publish`` against raw confluent-kafka.

Payloads are ``datalayer.testing.contracts.schemas:Event`` dicts whose JSON is about 100 bytes,
keyed by ``device`` (64 distinct keys), on a 6-partition topic created by ``dl.apply()``.

Batch phase (N messages per contender: quick 50k, full 1M, split into interleaved rounds). Pairs
with the same delivery semantics are compared:

- ours publisher:    ``with stream.publisher() as p: p.publish_many(batch)`` for every batch of
                     1,000 of the round (validates each batch with pydantic, serializes, queues
                     on the store's publishing producer, which reports failed deliveries only;
                     leaving the block waits for every ack and raises on any failure);
- raw:               one confluent-kafka ``Producer`` with the same settings (enable.idempotence,
                     acks=all, linger.ms=5, same timeouts), producing the same pre-serialized
                     JSON bytes with the same keys, then one ``flush()`` per round: the target's
                     baseline;
- ours publish_many: ``stream.publish_many(batch)`` per batch of 1,000, each call waiting for
                     its acks;
- raw-batch-flush:   raw, but ``flush()`` after every 1,000 messages, i.e. the same
                     "acknowledged on return" semantics as ``publish_many``;
- raw-serializing:   raw, but given the same dicts as ours, so it serializes each with
                     ``json.dumps`` in the timed round, as hand-written producer code must; no
                     validation. Reported for scale; the target stays on ``raw``;
- raw-tuned:         raw with the two changes our publisher makes to the same client: a
                     producer with ``delivery.report.only.error`` (a Python callback for failures
                     only) and ``produce`` arguments by position. Reported for scale: it is the
                     floor of what any publisher built on confluent-kafka can cost.

Single phase (fewer messages: each call waits for its ack): a loop of ``publish(event)`` against
raw ``produce`` + ``flush`` per message.

Target (from the issue): ours publisher at least 0.8x raw throughput.

The batch phase also reports each contender's CPU time on the calling thread per message
(``time.thread_time``: our Python, pydantic and the client's produce and delivery callbacks, not
librdkafka's or the broker's threads). It moves much less with machine load than throughput
does, and it is what bounds throughput here: the calling thread is the busiest one.

Kafka comes from the project's launcher ($DATALAYER_KAFKA_BOOTSTRAP if set, else a container or
a local server). Run from the repository root:

    PYTHONPATH=. python bench/bench_publish.py --size quick   # or --size full, --profile
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import KafkaError, Message, Producer
from harness import (
    Round,
    Stats,
    console,
    interleave,
    parse_args,
    print_table,
    profile_top,
    ratio,
    summarize,
    time_calls,
    time_once,
    write_results,
)
from tests.services.launcher import Launcher

import datalayer
from datalayer.testing import registry as test_registry

T = TypeVar("T")

TARGET = 0.8
BATCH = 1_000
PAYLOAD_BYTES = 100
DEVICES = 64
SIZES = {
    # batch messages per contender, rounds, single-publish messages per contender
    "quick": (50_000, 5, 1_000),
    "full": (1_000_000, 20, 10_000),
}


def write_registry(folder: Path, bootstrap: str, topic: str) -> Path:
    return test_registry.write_registry(
        folder,
        {"bench": {"events": {"type": "kafka", "bootstrap_servers": bootstrap}}},
        {
            "events": {
                "category": "streaming",
                "store": "events",
                "topic": topic,
                "partitions": 6,
                "key": "device",
                "schema": "datalayer.testing.contracts.schemas:Event",
            }
        },
    )


def serialize(event: dict[str, Any]) -> bytes:
    """The same encoding as the streaming contract (compact JSON, UTF-8)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def make_events(count: int) -> list[dict[str, Any]]:
    """Events whose JSON is about PAYLOAD_BYTES long (the payload string pads them)."""
    events = []
    for i in range(count):
        event = {"event_id": f"evt-{i:09d}", "device": f"dev-{i % DEVICES:03d}", "seq": i}
        padding = PAYLOAD_BYTES - len(serialize({**event, "payload": ""}))
        events.append({**event, "payload": "x" * max(0, padding)})
    return events


def producer_config(bootstrap: str) -> dict[str, Any]:
    """The settings KafkaStore gives its producer (kafka/producer.py) with the store's defaults."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "bench-raw",
        "socket.timeout.ms": 10_000,
        "log_level": 3,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "delivery.timeout.ms": 30_000,
        "request.timeout.ms": 10_000,
        "message.max.bytes": 1_000_000 + 4096,
    }


class RawPublisher:
    """Raw confluent-kafka: produce pre-serialized bytes, count delivery errors, flush."""

    def __init__(self, bootstrap: str, topic: str, **settings: Any) -> None:
        self.producer = Producer({**producer_config(bootstrap), **settings})
        self.topic = topic
        self.errors = 0

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors += 1

    def produce(self, messages: list[tuple[bytes, bytes]]) -> None:
        producer, topic, report = self.producer, self.topic, self._delivered
        for key, value in messages:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.1)

    def produce_tuned(self, messages: list[tuple[bytes, bytes]]) -> None:
        """``produce`` with positional arguments (partition -1: the partitioner picks)."""
        produce, topic, report = self.producer.produce, self.topic, self._delivered
        for key, value in messages:
            while True:
                try:
                    produce(topic, value, key, -1, report)
                    break
                except BufferError:
                    self.producer.poll(0.1)

    def flush(self) -> None:
        remaining = self.producer.flush(35)
        if remaining or self.errors:
            raise RuntimeError(f"raw producer: {remaining} unconfirmed, {self.errors} failed")

    def publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        self.produce(messages)
        self.flush()


class CallerCpu:
    """CPU time of the calling thread per message, per contender (warm-up rounds included)."""

    def __init__(self) -> None:
        self.used: dict[str, list[int]] = {}

    def counted(self, name: str, messages: int, round_: Callable[[], list[int]]) -> Round:
        def run() -> list[int]:
            started = time.thread_time_ns()
            samples = round_()
            used = self.used.setdefault(name, [0, 0])
            used[0] += time.thread_time_ns() - started
            used[1] += messages
            return samples

        return run

    def per_message_us(self, name: str) -> float:
        ns, messages = self.used[name]
        return ns / messages / 1000


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def row(stats: Stats, base: Stats | None, per_sample: str) -> tuple[object, ...]:
    return (
        stats.name,
        stats.units,
        stats.ops_per_s,
        f"{ratio(stats.ops_per_s, base.ops_per_s):.2f}x" if base else "-",
        per_sample,
        stats.median_ns / 1e6,
        stats.p99_ns / 1e6,
    )


def run(size: str, profile: bool) -> int:
    launcher = Launcher()
    try:
        console.print("starting kafka ...")
        bootstrap = launcher.start("kafka").url
        return bench(bootstrap, size, profile)
    finally:
        gc.collect()  # the Kafka clients' threads end before the broker does
        launcher.down()


def bench(bootstrap: str, size: str, profile: bool) -> int:
    total, rounds, singles = SIZES[size]
    per_round = total // rounds
    single_per_round = max(1, singles // rounds)
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-"))
    topic = f"bench-events-{uuid.uuid4().hex[:10]}"
    dl = datalayer.open(write_registry(folder, bootstrap, topic), profile="bench")
    raw: RawPublisher | None = None
    tuned: RawPublisher | None = None
    try:
        for result in dl.apply():
            console.print(f"apply {result.store}: {'; '.join(result.actions)}")
        stream = dl.stream("events")
        raw = RawPublisher(bootstrap, topic)
        tuned = RawPublisher(bootstrap, topic, **{"delivery.report.only.error": True})

        events = make_events(per_round)
        wire = [(e["device"].encode(), serialize(e)) for e in events]
        sizes = sorted(len(v) for _, v in wire)
        console.print(f"payload JSON: {sizes[0]}-{sizes[-1]} bytes")
        if stream.encode(events[0]).value != wire[0][1]:
            raise SystemExit("ours and raw do not send the same bytes")
        keys, values = stream.encode_many(events[:BATCH])
        if values != [v for _, v in wire[:BATCH]] or keys != [e["device"] for e in events[:BATCH]]:
            raise SystemExit("ours and raw do not send the same batch")
        event_batches = chunks(events, BATCH)
        wire_batches = chunks(wire, BATCH)
        raw_publisher, tuned_publisher = raw, tuned

        def publish_round() -> None:
            with stream.publisher() as publisher:
                for batch in event_batches:
                    publisher.publish_many(batch)

        def ours_round() -> list[int]:
            return time_once(publish_round)

        def ours_batches() -> list[int]:
            return time_calls(stream.publish_many, event_batches)

        def raw_round() -> list[int]:
            return time_once(lambda: raw_publisher.publish(wire))

        def raw_batches() -> list[int]:
            return time_calls(raw_publisher.publish, wire_batches)

        def raw_serializing_round() -> list[int]:
            return time_once(
                lambda: raw_publisher.publish(
                    [(e["device"].encode(), serialize(e)) for e in events]
                )
            )

        def raw_tuned_round() -> list[int]:
            def publish() -> None:
                tuned_publisher.produce_tuned(wire)
                tuned_publisher.flush()

            return time_once(publish)

        console.print(
            f"batch phase: {rounds} rounds x {per_round:,} messages per contender "
            f"(+1 warm-up round), batches of {BATCH:,} ({size})"
        )
        cpu = CallerCpu()
        batch_samples = interleave(
            {
                "ours publisher": cpu.counted("ours publisher", per_round, ours_round),
                "raw": cpu.counted("raw", per_round, raw_round),
                "ours publish_many": cpu.counted("ours publish_many", per_round, ours_batches),
                "raw-batch-flush": cpu.counted("raw-batch-flush", per_round, raw_batches),
                "raw-serializing": cpu.counted("raw-serializing", per_round, raw_serializing_round),
                "raw-tuned": cpu.counted("raw-tuned", per_round, raw_tuned_round),
            },
            rounds,
        )
        ours_pub = summarize("ours publisher", batch_samples["ours publisher"], per_round)
        raw_stats = summarize("raw", batch_samples["raw"], per_round)
        ours_many = summarize("ours publish_many", batch_samples["ours publish_many"], BATCH)
        raw_batch = summarize("raw-batch-flush", batch_samples["raw-batch-flush"], BATCH)
        raw_serializing = summarize("raw-serializing", batch_samples["raw-serializing"], per_round)
        raw_tuned = summarize("raw-tuned", batch_samples["raw-tuned"], per_round)

        single_events = events[:single_per_round]
        single_wire = [[w] for w in wire[:single_per_round]]

        def ours_single() -> list[int]:
            return time_calls(stream.publish, single_events)

        def raw_single() -> list[int]:
            return time_calls(raw_publisher.publish, single_wire)

        console.print(
            f"single phase: {rounds} rounds x {single_per_round:,} messages per contender"
        )
        single_samples = interleave(
            {"ours publish": ours_single, "raw produce+flush": raw_single}, rounds
        )
        ours_one = summarize("ours publish", single_samples["ours publish"])
        raw_one = summarize("raw produce+flush", single_samples["raw produce+flush"])

        columns = ["contender", "messages", "msgs/s", "vs raw", "sample", "median ms", "p99 ms"]
        print_table(
            f"publish throughput, ~{PAYLOAD_BYTES}-byte JSON, 6 partitions ({size})",
            columns,
            [
                row(ours_pub, raw_stats, f"round of {per_round:,}"),
                row(raw_stats, raw_stats, f"round of {per_round:,}"),
                row(raw_serializing, raw_stats, f"round of {per_round:,}"),
                row(raw_tuned, raw_stats, f"round of {per_round:,}"),
                row(ours_many, raw_batch, f"batch of {BATCH:,}"),
                row(raw_batch, raw_batch, f"batch of {BATCH:,}"),
                row(ours_one, raw_one, "one message"),
                row(raw_one, raw_one, "one message"),
            ],
            note=f"vs raw: against the raw row below each ours row (same semantics); "
            f"target: ours publisher >= {TARGET}x raw msgs/s",
        )
        pub_vs_raw = ratio(ours_pub.ops_per_s, raw_stats.ops_per_s)
        many_vs_batch = ratio(ours_many.ops_per_s, raw_batch.ops_per_s)
        many_vs_raw = ratio(ours_many.ops_per_s, raw_stats.ops_per_s)
        single_vs_raw = ratio(ours_one.ops_per_s, raw_one.ops_per_s)
        pub_vs_serializing = ratio(ours_pub.ops_per_s, raw_serializing.ops_per_s)
        pub_vs_tuned = ratio(ours_pub.ops_per_s, raw_tuned.ops_per_s)
        met = pub_vs_raw >= TARGET
        verdict = "[green]met[/]" if met else "[red]missed[/]"
        console.print(
            f"ours publisher / raw: {pub_vs_raw:.2f}x (target >= {TARGET}x: {verdict}); "
            f"ours publish_many / raw-batch-flush: {many_vs_batch:.2f}x, / raw: {many_vs_raw:.2f}x; "
            f"ours publish / raw produce+flush: {single_vs_raw:.2f}x; "
            f"ours publisher / raw-serializing (no validation): {pub_vs_serializing:.2f}x; "
            f"ours publisher / raw-tuned: {pub_vs_tuned:.2f}x"
        )
        cpu_us = {name: cpu.per_message_us(name) for name in cpu.used}
        console.print(
            "calling-thread CPU per message: "
            + ", ".join(f"{name} {us:.2f} µs" for name, us in cpu_us.items())
            + f"; raw / ours publisher: {ratio(cpu_us['raw'], cpu_us['ours publisher']):.2f}x"
        )
        write_results(
            "publish",
            {
                "size": size,
                "payload_bytes": [sizes[0], sizes[-1]],
                "batch": BATCH,
                "rounds": rounds,
                "messages_per_round": per_round,
                "single_messages_per_round": single_per_round,
                "target": {"min_ratio": TARGET, "ratio": pub_vs_raw, "met": met},
                "ratios": {
                    "publisher_vs_raw": pub_vs_raw,
                    "publish_many_vs_raw_batch_flush": many_vs_batch,
                    "publish_many_vs_raw": many_vs_raw,
                    "publish_vs_raw_single": single_vs_raw,
                    "publisher_vs_raw_serializing": pub_vs_serializing,
                    "publisher_vs_raw_tuned": pub_vs_tuned,
                },
                "caller_cpu_us_per_message": cpu_us,
                "contenders": {
                    s.name: s.as_dict()
                    for s in (
                        ours_pub,
                        raw_stats,
                        raw_serializing,
                        raw_tuned,
                        ours_many,
                        raw_batch,
                        ours_one,
                        raw_one,
                    )
                },
            },
        )
        if profile:
            console.print(profile_top(publish_round))
        return 0
    finally:
        for client in (raw, tuned):
            if client is not None:
                client.producer.flush(10)
                client.producer.close()
        try:
            admin = dl.store("events").admin  # type: ignore[attr-defined]
            for future in admin.delete_topics([topic], operation_timeout=10).values():
                future.result(15)
        except Exception as exc:
            console.print(f"could not delete topic {topic}: {exc}", style="yellow")
        dl.close()


def main() -> int:
    args = parse_args("Stream publish throughput on Kafka: ours against raw confluent-kafka.")
    return run(args.size, args.profile)


if __name__ == "__main__":
    sys.exit(main())

"""Stream consume throughput: datalayer's ``consume`` + ``ack``, ``process`` and
``process_batch`` against a raw confluent-kafka consumer on Apache Kafka, and the same three on
the embedded log (issue 14).

N events (quick 20k, full 100k) of ``datalayer.testing.contracts.schemas:Event`` whose JSON is
about 100 bytes, keyed by ``device``, are published once to a 3-partition topic per store. Then
each contender reads the whole backlog once, from the earliest offset, with a group of its own:

- raw:           confluent-kafka ``Consumer`` with the settings our store gives its consumer
                 (no auto commit, ``fetch.wait.max.ms`` 100), ``consume(500)`` batches,
                 ``json.loads`` of each value, ``commit(asynchronous=True)`` after each batch:
                 the targets' baseline (Kafka only; the embedded log has no raw client);
- consume + ack: ``for m in stream.consume(group, batch_size=500): m.ack()`` (schema
                 validation on, as in production; the store's default commit policy);
- process:       ``stream.process(handler, group)`` with a handler that does nothing (``process``
                 acks each message itself);
- process_batch: ``stream.process_batch(handler, group, max_batch=500)``, the handler counts
                 the truthy ``batch.values`` (what a bulk sink writes).

Each contender's clock runs from its first message to its last, so the group join (seconds on
Kafka) is left out; it is reported apart. Each run is capped at ``CAP`` seconds: a contender that
has not read the backlog by then stops and is reported with the messages it read in that time.
Contenders run in ``ROUNDS`` interleaved rounds; a ratio is the median of the rounds' ratios.

Targets (issue 14): ``consume`` + ``ack`` and ``process`` at least 0.7x raw throughput on Kafka,
``process_batch`` at least 0.85x; the embedded log at least 20,000 messages/s. ``--size full``
also times the catch-up of a 1,000,000-message backlog on each store (published, then read by
one ``process_batch`` consumer of a new group, its join included).

Kafka comes from the project's launcher ($DATALAYER_KAFKA_BOOTSTRAP if set, else a container or
a local server). Run from the repository root:

    PYTHONPATH=src:. python bench/bench_consume.py --size quick   # or --size full, --profile
"""

from __future__ import annotations

import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from harness import console, parse_args, print_table, profile_top, ratio, write_results
from tests.services.launcher import Launcher

import datalayer
from datalayer import Message, MessageBatch
from datalayer.testing import registry as test_registry

TARGET_RATIO = 0.7
TARGET_BATCH_RATIO = 0.85
TARGET_EMBEDDED = 20_000.0
PARTITIONS = 3
BATCH = 500
PAYLOAD_BYTES = 100
DEVICES = 64
PUBLISH_BATCH = 1_000
#: Rounds of every contender, interleaved: each reads the backlog once per round with a group
#: of its own; ratios are the median of the rounds' ratios (one run is noisy on 2 cores).
ROUNDS = 5
#: A consumer that gets nothing for this long (once it holds partitions) gives up.
IDLE = 10.0
SIZES = {
    # messages in the backlog, cap in seconds per contender, catch-up backlog (0: none)
    "quick": (20_000, 20.0, 0),
    "full": (100_000, 30.0, 1_000_000),
}


@dataclass(frozen=True)
class Run:
    """One contender reading one backlog: ``seconds`` from its first message to its last."""

    name: str
    store: str
    messages: int
    seconds: float
    join_s: float
    capped: bool
    round: int = 0

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "messages_per_s": self.per_s}


class Deadline(BaseException):
    """Raised from a ``process`` handler at the cap: not an ``Exception``, so the handler's
    retries and dead letters do not catch it and it ends ``process``."""


class Clock:
    """Counts messages, from the first one to the last, until ``total`` or the cap. Counting
    one message is an addition: the time is read every ``EVERY`` messages (and at the last),
    so a contender that counts per message pays no more for its clock than raw, which counts
    per batch."""

    EVERY = 250

    def __init__(self, total: int, cap: float) -> None:
        self.total = total
        self.cap = cap
        self.opened = time.perf_counter()
        self.first = self.last = 0.0
        self.count = 0
        self.check_at = 1

    def begin(self) -> None:
        """Messages arrived: the clock starts at the first arrival."""
        if not self.first:
            self.first = time.perf_counter()

    def tick(self, messages: int = 1) -> bool:
        """Count ``messages``; False once the backlog is read or the cap is reached."""
        self.count += messages
        return self.count < self.check_at or self._check()

    def _check(self) -> bool:
        now = time.perf_counter()
        if not self.first:
            self.first = now
        self.last = now
        self.check_at = min(self.count + self.EVERY, self.total)
        return self.count < self.total and now - self.first < self.cap

    def timed_out(self) -> bool:
        return time.perf_counter() - self.opened > self.cap + 60.0

    def run(self, name: str, store: str) -> Run:
        return Run(
            name=name,
            store=store,
            messages=self.count,
            seconds=self.last - self.first,
            join_s=(self.first or self.opened) - self.opened,
            capped=self.count < self.total,
        )


def serialize(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def make_events(count: int, first: int = 0) -> list[dict[str, Any]]:
    """Events whose JSON is about PAYLOAD_BYTES long (the payload string pads them)."""
    events = []
    for i in range(first, first + count):
        event = {"event_id": f"evt-{i:09d}", "device": f"dev-{i % DEVICES:03d}", "seq": i}
        padding = PAYLOAD_BYTES - len(serialize({**event, "payload": ""}))
        events.append({**event, "payload": "x" * max(0, padding)})
    return events


def open_layer(folder: Path, store: dict[str, Any], topic: str) -> datalayer.DataLayer:
    registry = test_registry.write_registry(
        folder,
        {"bench": {"events": store}},
        {
            "events": {
                "category": "streaming",
                "store": "events",
                "topic": topic,
                "partitions": PARTITIONS,
                "key": "device",
                "schema": "datalayer.testing.contracts.schemas:Event",
            }
        },
        name=f"{store['type']}.yaml",
    )
    dl = datalayer.open(registry, profile="bench")
    for result in dl.apply():
        console.print(f"apply {result.store}: {'; '.join(result.actions)}")
    return dl


def publish(dl: datalayer.DataLayer, total: int) -> None:
    """Publish ``total`` events, made a batch at a time: the consumers are measured without
    the published events kept alive (a heap that large makes every full collection of the
    garbage collector slow, a cost of the benchmark, not of consuming)."""
    stream = dl.stream("events")
    started = time.perf_counter()
    with stream.publisher() as publisher:
        for first in range(0, total, PUBLISH_BATCH):
            publisher.publish_many(make_events(min(PUBLISH_BATCH, total - first), first))
    console.print(f"published {total:,} events in {time.perf_counter() - started:.1f} s")


def group_name(label: str) -> str:
    return f"bench-consume-{label}-{uuid.uuid4().hex[:8]}"


def raw_consume(bootstrap: str, topic: str, total: int, cap: float) -> Run:
    """confluent-kafka: batches of BATCH, json.loads per value, asynchronous commit per batch."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_name("raw"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
            "log_level": 3,
        }
    )
    clock = Clock(total, cap)
    decoded = 0
    try:
        consumer.subscribe([topic])
        while not clock.timed_out():
            batch = consumer.consume(BATCH, 0.2)
            if not batch:
                continue
            clock.begin()
            for message in batch:
                if message.error() is not None:
                    raise RuntimeError(f"raw consumer: {message.error()}")
                value = message.value()
                if value is not None and json.loads(value):
                    decoded += 1
            consumer.commit(asynchronous=True)
            if not clock.tick(len(batch)):
                break
    finally:
        consumer.close()
    if decoded != clock.count:
        raise RuntimeError(f"raw consumer decoded {decoded} of {clock.count} messages")
    return clock.run("raw confluent-kafka", "kafka")


def ours_consume(dl: datalayer.DataLayer, store: str, total: int, cap: float) -> Run:
    """``consume`` + ``ack`` per message, stopped at the backlog's end or the cap."""
    clock = Clock(total, cap)
    messages: Iterator[Message] = dl.stream("events").consume(
        group_name("consume"),
        start="earliest",
        max_messages=total,
        idle_timeout=IDLE,
        batch_size=BATCH,
    )
    try:
        for message in messages:
            message.ack()
            if not clock.tick():
                break
    finally:
        messages.close()  # type: ignore[attr-defined]
    return clock.run("ours consume + ack", store)


def ours_process(dl: datalayer.DataLayer, store: str, total: int, cap: float) -> Run:
    """``process`` with a handler that only counts; ``Deadline`` stops it at the cap."""
    clock = Clock(total, cap)

    def handler(message: Message) -> None:
        if not clock.tick() and clock.count < total:
            raise Deadline

    try:
        stats = dl.stream("events").process(
            handler, group_name("process"), start="earliest", max_messages=total, idle_timeout=IDLE
        )
        if stats.retried or stats.errors:
            raise RuntimeError(f"process: {stats.retried} retries, errors {stats.errors[:3]}")
    except Deadline:
        pass
    gc.collect()  # closes the abandoned consumer loop (and its consumer) at once
    return clock.run("ours process", store)


def ours_batch(dl: datalayer.DataLayer, store: str, total: int, cap: float) -> Run:
    """``process_batch`` with lists of up to BATCH messages and a handler that only counts."""
    clock = Clock(total, cap)

    def handler(batch: MessageBatch) -> None:
        clock.begin()
        handled = sum(1 for value in batch.values if value)  # raw's work: each value looked at
        if not clock.tick(handled) and clock.count < total:
            raise Deadline

    try:
        stats = dl.stream("events").process_batch(
            handler,
            group_name("batch"),
            max_batch=BATCH,
            max_wait=0.1,
            start="earliest",
            max_messages=total,
            idle_timeout=IDLE,
        )
        if stats.retried or stats.errors:
            raise RuntimeError(f"process_batch: {stats.retried} retries, errors {stats.errors[:3]}")
    except Deadline:
        pass
    gc.collect()
    return clock.run("ours process_batch", store)


def catch_up(dl: datalayer.DataLayer, store: str, backlog: int) -> dict[str, Any]:
    """Publish a backlog of ``backlog`` events, then time one ``process_batch`` consumer of a
    new group from its start (the group join included) until it has handled them all: how
    long a consumer that fell that far behind takes to catch up."""
    stream = dl.stream("events")
    begin = stream.end_offsets()
    started = time.perf_counter()
    publish(dl, backlog)
    published_s = time.perf_counter() - started
    console.print(f"{store}: published a backlog of {backlog:,} in {published_s:.1f} s")
    handled = 0

    def handler(batch: MessageBatch) -> None:
        nonlocal handled
        handled += len(batch.values)

    started = time.perf_counter()
    stream.process_batch(
        handler,
        group_name("catch-up"),
        max_batch=BATCH,
        max_wait=0.1,
        start=begin,
        max_messages=backlog,
        idle_timeout=IDLE,
    )
    seconds = time.perf_counter() - started
    if handled != backlog:
        raise RuntimeError(f"catch-up on {store} handled {handled:,} of {backlog:,} messages")
    console.print(f"{store}: caught up with {backlog:,} in {seconds:.1f} s")
    return {
        "store": store,
        "backlog": backlog,
        "publish_s": published_s,
        "catch_up_s": seconds,
        "messages_per_s": backlog / seconds,
    }


def in_rounds(store: str, contenders: list[tuple[str, Callable[[], Run]]]) -> list[Run]:
    """Every contender once per round, in turn, each run numbered with its round."""
    runs = []
    for number in range(ROUNDS):
        for label, fn in contenders:
            gc.collect()
            found = replace(fn(), round=number)
            runs.append(found)
            console.print(
                f"{store}, round {number + 1}: {label}: {found.messages:,} messages at "
                f"{found.per_s:,.0f}/s"
            )
    return runs


def medians(runs: list[Run]) -> list[Run]:
    """Per contender, the run of its median throughput."""
    by: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        by.setdefault((r.store, r.name), []).append(r)
    return [sorted(group, key=lambda r: r.per_s)[len(group) // 2] for group in by.values()]


def round_ratio(runs: list[Run], name: str) -> float:
    """The median over rounds of ``name``'s throughput over raw's in the same round."""
    raw = {r.round: r.per_s for r in runs if r.store == "kafka" and r.name == "raw confluent-kafka"}
    mine = [ratio(r.per_s, raw[r.round]) for r in runs if r.store == "kafka" and r.name == name]
    return statistics.median(mine)


def kafka_runs(
    bootstrap: str, total: int, cap: float, folder: Path, backlog: int
) -> tuple[list[Run], list[dict[str, Any]]]:
    topic = f"bench-consume-{uuid.uuid4().hex[:10]}"
    dl = open_layer(folder, {"type": "kafka", "bootstrap_servers": bootstrap}, topic)
    try:
        publish(dl, total)
        contenders: list[tuple[str, Callable[[], Run]]] = [
            ("raw", lambda: raw_consume(bootstrap, topic, total, cap)),
            ("consume", lambda: ours_consume(dl, "kafka", total, cap)),
            ("process", lambda: ours_process(dl, "kafka", total, cap)),
            ("process_batch", lambda: ours_batch(dl, "kafka", total, cap)),
        ]
        runs = in_rounds("kafka", contenders)
        return runs, [catch_up(dl, "kafka", backlog)] if backlog else []
    finally:
        try:
            admin = dl.store("events").admin  # type: ignore[attr-defined]
            for future in admin.delete_topics([topic], operation_timeout=10).values():
                future.result(15)
        except Exception as exc:
            console.print(f"could not delete topic {topic}: {exc}", style="yellow")
        dl.close()


def embedded_runs(
    total: int, cap: float, folder: Path, backlog: int
) -> tuple[list[Run], list[dict[str, Any]]]:
    store = {"type": "embedded-log", "path": str(folder / "events.db")}
    dl = open_layer(folder, store, "bench-consume")
    try:
        publish(dl, total)
        contenders: list[tuple[str, Callable[[], Run]]] = [
            ("consume", lambda: ours_consume(dl, "embedded-log", total, cap)),
            ("process", lambda: ours_process(dl, "embedded-log", total, cap)),
            ("process_batch", lambda: ours_batch(dl, "embedded-log", total, cap)),
        ]
        runs = in_rounds("embedded log", contenders)
        return runs, [catch_up(dl, "embedded-log", backlog)] if backlog else []
    finally:
        dl.close()


def targets(runs: list[Run]) -> list[dict[str, Any]]:
    by = {(r.store, r.name): r for r in medians(runs)}
    found = []
    for name in ("ours consume + ack", "ours process", "ours process_batch"):
        value = round_ratio(runs, name)
        target = TARGET_BATCH_RATIO if name.endswith("batch") else TARGET_RATIO
        found.append(
            {
                "what": f"kafka, {name.removeprefix('ours ')} / raw confluent-kafka, msgs/s",
                "target": f">= {target:g}x",
                "value": f"{value:.3f}x",
                "ratio": value,
                "met": value >= target,
            }
        )
    for name in ("ours consume + ack", "ours process", "ours process_batch"):
        per_s = by[("embedded-log", name)].per_s
        found.append(
            {
                "what": f"embedded log, {name.removeprefix('ours ')}, msgs/s",
                "target": f">= {TARGET_EMBEDDED:,.0f}",
                "value": f"{per_s:,.0f}",
                "met": per_s >= TARGET_EMBEDDED,
            }
        )
    return found


def run(size: str, profile: bool) -> int:
    total, cap, backlog = SIZES[size]
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-consume-"))
    launcher = Launcher()
    try:
        console.print("starting kafka ...")
        bootstrap = launcher.start("kafka").url
        console.print(
            f"{total:,} events of ~{PAYLOAD_BYTES} bytes, {PARTITIONS} partitions, "
            f"cap {cap:g} s per contender ({size})"
        )
        runs, catch_ups = kafka_runs(bootstrap, total, cap, folder, backlog)
        more, more_catch_ups = embedded_runs(total, cap, folder, backlog)
        runs += more
        catch_ups += more_catch_ups
        print_table(
            f"consume throughput, {total:,} messages of ~{PAYLOAD_BYTES} bytes, "
            f"{PARTITIONS} partitions ({size}), median of {ROUNDS} rounds",
            ["contender", "store", "messages", "seconds", "msgs/s", "vs raw", "join s"],
            [
                (
                    r.name,
                    r.store,
                    f"{r.messages:,}" + (" (cap)" if r.capped else ""),
                    r.seconds,
                    r.per_s,
                    f"{round_ratio(runs, r.name):.3f}x" if r.store == "kafka" else "-",
                    r.join_s,
                )
                for r in medians(runs)
            ],
            note="seconds: first message's arrival to the last one handled (the group join "
            "apart); vs raw: kafka only, the median of each round's ratio; (cap): stopped at "
            f"{cap:g} s. Targets: kafka consume + ack and process >= {TARGET_RATIO:g}x raw "
            f"msgs/s, process_batch >= {TARGET_BATCH_RATIO:g}x; embedded log >= "
            f"{TARGET_EMBEDDED:,.0f} msgs/s",
        )
        found = targets(runs)
        for t in found:
            verdict = "[green]met[/]" if t["met"] else "[red]missed[/]"
            console.print(f"{t['what']}: {t['value']} (target {t['target']}: {verdict})")
        for c in catch_ups:
            console.print(
                f"catch-up, {c['store']}: a backlog of {c['backlog']:,} handled in "
                f"{c['catch_up_s']:.1f} s ({c['messages_per_s']:,.0f} msgs/s, group join included)"
            )
        write_results(
            "consume",
            {
                "size": size,
                "messages": total,
                "partitions": PARTITIONS,
                "batch": BATCH,
                "cap_s": cap,
                "targets": found,
                "runs": [r.as_dict() for r in runs],
                "catch_up": catch_ups,
            },
        )
        if profile:
            profile_embedded(min(total, 5_000), cap, folder)
        return 0
    finally:
        gc.collect()  # the Kafka clients' threads end before the broker does
        launcher.down()
        shutil.rmtree(folder, ignore_errors=True)


def profile_embedded(total: int, cap: float, folder: Path) -> None:
    """cProfile ``consume`` + ``ack`` on a fresh embedded log (no broker in the listing)."""
    sub = folder / "profile"
    sub.mkdir()
    dl = open_layer(sub, {"type": "embedded-log", "path": str(sub / "events.db")}, "profiled")
    try:
        publish(dl, total)
        consume: Callable[[], Run] = lambda: ours_consume(dl, "embedded-log", total, cap)  # noqa: E731
        console.print(profile_top(consume))
    finally:
        dl.close()


def main() -> int:
    args = parse_args("Stream consume throughput: ours against raw confluent-kafka.")
    return run(args.size, args.profile)


if __name__ == "__main__":
    sys.exit(main())

"""Network faults between datalayer and each real server, injected by Toxiproxy: latency past
the timeout, connections reset, traffic black-holed, bandwidth cut, the server unreachable.
Each test asserts the bound, the number of retries, the breaker and the recovery of the same
``DataLayer`` once the fault is gone."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer import CircuitOpen, StoreTimeout, StoreUnavailable
from datalayer.testing.registry import write_registry
from tests.services.toxiproxy import Proxied, ProxiedKafka, Proxy

TIMEOUT = 1.0
RETRIES = 2
BACKOFF = 0.05
#: A reconnect on PostgreSQL may take libpq's 2 s floor; the rest is the error's way up.
ATTEMPT_BOUND = 2.0
SLACK = 1.5


@dataclass
class Case:
    """One store behind a proxy: an idempotent read, a write that is never retried."""

    name: str
    dl: datalayer.DataLayer
    proxy: Proxy
    read: Callable[[], Any]
    unretried_write: Callable[[], Any]
    big_read: Callable[[], Any]

    def stats(self) -> Any:
        (stats,) = self.dl.resilience()
        return stats


def layer(tmp_path: Path, store: dict[str, Any], pattern: dict[str, Any], **breaker: Any) -> Any:
    store["resilience"] = {
        "timeout": f"{TIMEOUT}s",
        "retries": RETRIES,
        "backoff": f"{BACKOFF}s",
        "max_backoff": f"{BACKOFF}s",
        "breaker": breaker or {"failures": 0},
    }
    file = write_registry(tmp_path, {"p": {"main": store}}, {"it": {"store": "main", **pattern}})
    dl = datalayer.open(file, "p")
    dl.apply()
    return dl


def postgres_case(proxied: Proxied, tmp_path: Path, **breaker: Any) -> Case:
    table = f"faults_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "transactional",
        "table": table,
        "key": ["account_id", "entry_no"],
        "schema": "datalayer.testing.contracts.schemas:Ledger",
    }
    store = {"type": "postgres", "url": proxied.url, "connect_timeout": 2}
    dl = layer(tmp_path, store, pattern, **breaker)
    rows = dl.transactional("it")
    rows.put_many([{"account_id": "a", "entry_no": n, "amount": 1.5} for n in range(2000)])

    def in_transaction() -> None:
        with rows.transaction():
            rows.put({"account_id": "b", "entry_no": 1, "amount": 2.0})

    return Case(
        "postgres",
        dl,
        proxied.proxy,
        read=lambda: rows.get(("a", 1)),
        unretried_write=in_transaction,
        big_read=lambda: rows.query({"account_id": "a"}),
    )


def redis_case(proxied: Proxied, tmp_path: Path, **breaker: Any) -> Case:
    pattern = {"category": "key-value", "prefix": f"faults-{uuid.uuid4().hex[:8]}"}
    dl = layer(
        tmp_path, {"type": "redis", "url": proxied.url, "connect_timeout": 1}, pattern, **breaker
    )
    kv = dl.kv("it")
    kv.set("k", 1)
    kv.set("big", "x" * 100_000)
    return Case(
        "redis",
        dl,
        proxied.proxy,
        read=lambda: kv.get("k"),
        unretried_write=lambda: kv.incr("n"),
        big_read=lambda: kv.get("big"),
    )


def mongodb_case(proxied: Proxied, tmp_path: Path, **breaker: Any) -> Case:
    pattern = {
        "category": "document",
        "collection": f"faults_{uuid.uuid4().hex[:8]}",
        "key": "note_id",
        "schema": "datalayer.testing.contracts.schemas:Note",
    }
    store = {"type": "mongodb", "url": proxied.url, "server_selection_timeout_ms": 1000}
    dl = layer(tmp_path, store, pattern, **breaker)
    docs = dl.documents("it")
    docs.put({"note_id": "n", "author": "a", "score": 1, "meta": {"text": "x" * 100_000}})
    return Case(
        "mongodb",
        dl,
        proxied.proxy,
        read=lambda: docs.get("n"),
        unretried_write=lambda: docs.update("n", inc={"score": 1}),
        big_read=lambda: docs.find({"author": "a"}),
    )


CASES = {"postgres": postgres_case, "redis": redis_case, "mongodb": mongodb_case}


@pytest.fixture(params=sorted(CASES))
def proxied_store(request: pytest.FixtureRequest) -> tuple[str, Proxied]:
    return request.param, request.getfixturevalue(f"{request.param}_proxy")


@contextmanager
def open_case(proxied_store: tuple[str, Proxied], tmp_path: Path, **breaker: Any) -> Iterator[Case]:
    name, proxied = proxied_store
    case = CASES[name](proxied, tmp_path, **breaker)
    try:
        yield case
    finally:
        case.proxy.reset()
        case.dl.close()


def timed(call: Callable[[], Any], error: type[BaseException]) -> float:
    started = time.monotonic()
    with pytest.raises(error):
        call()
    return time.monotonic() - started


Record = Callable[[str, object], None]


def test_latency_past_the_timeout_is_retried_then_a_store_timeout(
    proxied_store: tuple[str, Proxied], tmp_path: Path, record_property: Record
) -> None:
    with open_case(proxied_store, tmp_path) as case:
        with case.proxy.toxic(case.proxy.latency(1500)):
            elapsed = timed(case.read, StoreTimeout)
            record_property(f"time_to_error {case.name} latency read", f"{elapsed:.3f}")
            assert elapsed < (RETRIES + 1) * ATTEMPT_BOUND + RETRIES * BACKOFF + SLACK
            assert elapsed >= (RETRIES + 1) * TIMEOUT * 0.9  # drivers' timers run a hair early
            stats = case.stats()
            assert (stats.retries, stats.failures) == (RETRIES, RETRIES + 1)
            assert stats.timeouts >= 1  # a driver may see the next attempt's socket closed
        assert case.read() is not None


def test_reset_connections_are_retried_and_counted(
    proxied_store: tuple[str, Proxied], tmp_path: Path, record_property: Record
) -> None:
    with open_case(proxied_store, tmp_path) as case:
        case.read()
        with case.proxy.toxic(case.proxy.reset_peer()):
            elapsed = timed(case.read, StoreUnavailable)
            record_property(f"time_to_error {case.name} reset read", f"{elapsed:.3f}")
            assert elapsed < (RETRIES + 1) * ATTEMPT_BOUND + SLACK
            assert case.stats().retries == RETRIES
            timed(case.unretried_write, StoreUnavailable)
            assert case.stats().retries == RETRIES, "a non-idempotent call is never retried"
        assert case.read() is not None
        case.unretried_write()


def test_a_black_hole_is_bounded(
    proxied_store: tuple[str, Proxied], tmp_path: Path, record_property: Record
) -> None:
    with open_case(proxied_store, tmp_path) as case:
        case.read()
        with case.proxy.toxic(case.proxy.timeout()):
            elapsed = timed(case.unretried_write, StoreTimeout)
            record_property(f"time_to_error {case.name} black-hole write", f"{elapsed:.3f}")
            assert elapsed < ATTEMPT_BOUND + SLACK
        assert case.read() is not None


def test_a_cut_bandwidth_times_a_large_read_out(
    proxied_store: tuple[str, Proxied], tmp_path: Path, record_property: Record
) -> None:
    with open_case(proxied_store, tmp_path) as case:
        case.big_read()
        with case.proxy.toxic(case.proxy.bandwidth(30)):  # 30 KB/s: 100 kB need 3 s
            elapsed = timed(case.big_read, StoreTimeout)
            record_property(f"time_to_error {case.name} bandwidth read", f"{elapsed:.3f}")
            # Let the aborted replies drain: Toxiproxy removes a bandwidth toxic only once its
            # links are idle, and may take longer than its API timeout on a loaded machine.
            time.sleep(4)
            assert elapsed < (RETRIES + 1) * ATTEMPT_BOUND + SLACK
        case.big_read()


def test_an_unreachable_server_opens_the_breaker_until_it_is_back(
    proxied_store: tuple[str, Proxied], tmp_path: Path, record_property: Record
) -> None:
    with open_case(proxied_store, tmp_path, failures=3, cooldown="2s") as case:
        case.read()
        with case.proxy.down():
            elapsed = timed(case.read, StoreUnavailable)  # the third attempt opens the circuit
            record_property(f"time_to_error {case.name} down read", f"{elapsed:.3f}")
            assert case.stats().state == "open"
            elapsed = timed(case.read, CircuitOpen)
            record_property(f"time_to_error {case.name} circuit-open read", f"{elapsed:.3f}")
            assert elapsed < 0.05
            assert [h.circuit for h in case.dl.doctor(timeout=0.5)] == ["open"]
        time.sleep(2.1)
        assert case.read() is not None  # the probe succeeds: closed again
        assert case.stats().state == "closed"


def test_kafka_publish_through_a_faulty_network(
    kafka_proxy: ProxiedKafka, tmp_path: Path, record_property: Record
) -> None:
    store = {
        "type": "kafka",
        "bootstrap_servers": kafka_proxy.url,
        "delivery_timeout_ms": 2000,
        "request_timeout_ms": 1000,
        "options": {"reconnect.backoff.max.ms": 500},
    }
    pattern = {
        "category": "streaming",
        "topic": "faults",
        "partitions": 2,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    dl = layer(tmp_path, store, pattern)
    with dl:
        stream = dl.stream("it")
        event = {"event_id": "e", "device": "d", "seq": 1}
        stream.publish(event)
        with kafka_proxy.proxy.toxic(kafka_proxy.proxy.latency(300)):
            started = time.monotonic()
            stream.publish(event)  # slow, under the delivery timeout: delivered
            assert time.monotonic() - started >= 0.3
        with kafka_proxy.proxy.down():
            elapsed = timed(lambda: stream.publish(event), StoreUnavailable)
            record_property("time_to_error kafka down publish", f"{elapsed:.3f}")
            assert elapsed < 2 + SLACK
            elapsed = timed(stream.end_offsets, StoreUnavailable)
            record_property("time_to_error kafka down end_offsets", f"{elapsed:.3f}")
            assert elapsed < (RETRIES + 1) * 1 + SLACK
        stream.publish(event)
        assert sum(stream.end_offsets().values()) in (3, 4)  # a timed-out publish may land


#: The commit bound of the reset test's store: what one interrupted consumer may repeat.
RESET_MAX_UNCOMMITTED = 200


def test_a_consumer_group_through_connection_resets_loses_nothing(
    kafka_proxy: ProxiedKafka, tmp_path: Path, record_property: Record
) -> None:
    """A ``process_batch`` consumer reads a backlog through a proxy that resets every broker
    connection a few times mid-stream. Each time a call fails the consumer is started again,
    as a service would: no message is lost, and each interruption repeats at most the commit
    policy's bound of acknowledged messages."""
    store = {
        "type": "kafka",
        "bootstrap_servers": kafka_proxy.url,
        "request_timeout_ms": 2000,
        "session_timeout": "6s",
        "commit": {"max_uncommitted": RESET_MAX_UNCOMMITTED, "interval": "200ms"},
        "options": {"reconnect.backoff.max.ms": 500},
    }
    pattern = {
        "category": "streaming",
        "topic": "resets",
        "partitions": 3,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    total = 3000
    with layer(tmp_path, store, pattern) as dl:
        stream = dl.stream("it")
        stream.publish_many(
            [{"event_id": f"e{n}", "device": f"d{n % 7}", "seq": n} for n in range(total)]
        )
        handled: Counter[str] = Counter()
        resets = 0

        def handler(batch: list[Any]) -> None:
            nonlocal resets
            handled.update(m.value["event_id"] for m in batch)
            time.sleep(0.02)  # a sink's write: the stream takes a few seconds
            if len(handled) >= (resets + 1) * total // 4 and resets < 3:
                resets += 1
                with kafka_proxy.proxy.toxic(kafka_proxy.proxy.reset_peer()):
                    time.sleep(0.5)

        restarts, deadline = 0, time.monotonic() + 90
        while len(handled) < total and time.monotonic() < deadline:
            try:
                stream.process_batch(handler, "resets", max_batch=100, idle_timeout=5)
            except StoreUnavailable:  # StoreTimeout too: the consumer is started again
                restarts += 1
    lost = total - len(handled)
    repeated = sum(c - 1 for c in handled.values())
    record_property("stream reset: messages", total)
    record_property("stream reset: connection resets", resets)
    record_property("stream reset: consumer restarts", restarts)
    record_property("stream reset: messages lost", lost)
    record_property("stream reset: messages handled twice", repeated)
    assert resets == 3
    assert lost == 0, f"{lost} messages lost"
    assert repeated <= RESET_MAX_UNCOMMITTED * (resets + restarts), repeated

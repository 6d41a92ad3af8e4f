"""Every store frozen (SIGSTOP: connections accepted, nothing answers) or stopped under a live
``DataLayer``: each call errs within its store's ``resilience.timeout``, and once the server is
back the same ``DataLayer`` works again, without reopening."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer import CircuitOpen, StoreTimeout, StoreUnavailable
from datalayer.testing.registry import write_registry
from tests.services.base import LocalServer

TimeToError = Callable[[str, float], AbstractContextManager[None]]

TIMEOUT = 1.0
#: What a call may take over its timeout: the error's way up, a loaded 2-core machine.
SLACK = 2.0
RESILIENCE = {"timeout": f"{TIMEOUT}s", "retries": 0, "breaker": {"failures": 0}}


def open_layer(
    tmp_path: Path, store: dict[str, Any], pattern: dict[str, Any]
) -> datalayer.DataLayer:
    store = {"resilience": RESILIENCE, **store}
    file = write_registry(tmp_path, {"p": {"main": store}}, {"it": {"store": "main", **pattern}})
    dl = datalayer.open(file, "p")
    dl.apply()
    return dl


@contextmanager
def takes_at_most(seconds: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.2f}s, more than {seconds}s"


def bounded_while_frozen(
    server: LocalServer, calls: dict[str, Callable[[], Any]], time_to_error: TimeToError
) -> None:
    """Each call, warmed up first, times out while the server is frozen, then works again."""
    for call in calls.values():
        call()
    with server.frozen():
        for name, call in calls.items():
            with (
                time_to_error(f"{server.name} frozen {name}", TIMEOUT + SLACK),
                pytest.raises(StoreTimeout) as caught,
            ):
                call()
            assert "did not answer" in str(caught.value), name
    for call in calls.values():
        call()


TABLE = {
    "category": "transactional",
    "table": "ledger",
    "key": ["account_id", "entry_no"],
    "schema": "datalayer.testing.contracts.schemas:Ledger",
}


def row(account: str, amount: float) -> dict[str, Any]:
    return {"account_id": account, "entry_no": 1, "amount": amount}


def test_frozen_postgres_bounds_every_call(
    time_to_error: TimeToError, private_postgres: Any, tmp_path: Path
) -> None:
    store = {"type": "postgres", "url": private_postgres.url, "pool_size": 2}
    with open_layer(tmp_path, store, TABLE) as dl:
        table = dl.transactional("it")
        table.put(row("a", 1.0))

        def in_transaction() -> None:
            with table.transaction():
                table.put(row("b", 2.0))

        bounded_while_frozen(
            private_postgres,
            {
                "get": lambda: table.get(("a", 1)),
                "put": lambda: table.put(row("a", 2.0)),
                "query": lambda: table.query({"amount": {"$gte": 0}}, limit=5),
                "count": lambda: table.count(),
                "transaction": in_transaction,
            },
            time_to_error,
        )
        assert table.get(("b", 1)) == row("b", 2.0)


def test_commit_on_a_frozen_postgres_is_bounded_and_says_its_outcome_is_unknown(
    private_postgres: Any, tmp_path: Path
) -> None:
    store = {"type": "postgres", "url": private_postgres.url}
    with open_layer(tmp_path, store, TABLE) as dl:
        table = dl.transactional("it")
        with (
            ExitStack() as frozen,
            takes_at_most(TIMEOUT + SLACK),
            pytest.raises(StoreTimeout, match="may or may not have been applied"),
            table.transaction(),
        ):
            table.put(row("c", 3.0))
            frozen.enter_context(private_postgres.frozen())
        # The COMMIT sat in the frozen server's socket buffer: it may land once thawed.
        assert table.get(("c", 1)) in (None, row("c", 3.0))
        table.put(row("c", 4.0))
        assert table.get(("c", 1)) == row("c", 4.0)


def test_stopped_postgres_fails_fast_then_recovers(
    time_to_error: TimeToError, private_postgres: Any, tmp_path: Path
) -> None:
    store = {"type": "postgres", "url": private_postgres.url, "connect_timeout": 1}
    with open_layer(tmp_path, store, TABLE) as dl:
        table = dl.transactional("it")
        table.put(row("a", 1.0))
        private_postgres.stop()
        calls = {"get": lambda: table.get(("a", 1)), "put": lambda: table.put(row("a", 2.0))}
        for name, call in calls.items():
            with (
                time_to_error(f"postgres stopped {name}", TIMEOUT + SLACK),
                pytest.raises(StoreUnavailable),
            ):
                call()
        private_postgres.restart()
        table.put(row("a", 3.0))
        assert table.get(("a", 1)) == row("a", 3.0)


def test_frozen_redis_bounds_every_call(
    time_to_error: TimeToError, private_redis: Any, tmp_path: Path
) -> None:
    store = {"type": "redis", "url": private_redis.url}
    with open_layer(tmp_path, store, {"category": "key-value"}) as dl:
        kv = dl.kv("it")
        bounded_while_frozen(
            private_redis,
            {
                "set": lambda: kv.set("k", {"v": 1}),
                "get": lambda: kv.get("k"),
                "mget": lambda: kv.mget(["k", "j"]),
                "delete": lambda: kv.delete("j"),
            },
            time_to_error,
        )


def test_frozen_mongodb_bounds_every_call(
    time_to_error: TimeToError, private_mongodb: Any, tmp_path: Path
) -> None:
    store = {"type": "mongodb", "url": private_mongodb.url, "database": "frozen"}
    pattern = {
        "category": "document",
        "collection": "notes",
        "key": "note_id",
        "schema": "datalayer.testing.contracts.schemas:Note",
    }
    with open_layer(tmp_path, store, pattern) as dl:
        docs = dl.documents("it")
        note = {"note_id": "n1", "author": "a", "score": 1}
        bounded_while_frozen(
            private_mongodb,
            {
                "put": lambda: docs.put(note),
                "get": lambda: docs.get("n1"),
                "find": lambda: docs.find({"author": "a"}),
                "update": lambda: docs.update("n1", set={"score": 2}),
            },
            time_to_error,
        )


def test_the_breaker_opens_refuses_at_once_then_closes_after_a_probe(
    private_redis: Any, tmp_path: Path
) -> None:
    resilience = {**RESILIENCE, "breaker": {"failures": 2, "cooldown": "1s"}}
    store = {"type": "redis", "url": private_redis.url, "resilience": resilience}
    with open_layer(tmp_path, store, {"category": "key-value"}) as dl:
        kv = dl.kv("it")
        kv.set("k", 1)
        with private_redis.frozen():
            for _ in range(2):
                with pytest.raises(StoreTimeout):
                    kv.get("k")
            with takes_at_most(0.05), pytest.raises(CircuitOpen, match="circuit open"):
                kv.get("k")
            assert [h.circuit for h in dl.doctor(timeout=0.5)] == ["open"]
            time.sleep(1.1)
            with pytest.raises(StoreTimeout):
                kv.get("k")  # the probe, which fails: open again
            with takes_at_most(0.05), pytest.raises(CircuitOpen):
                kv.get("k")
        time.sleep(1.1)
        assert kv.get("k") == 1
        (stats,) = dl.resilience()
        assert (stats.state, stats.timeouts, stats.rejected) == ("closed", 3, 2)


def test_frozen_kafka_bounds_every_call(
    time_to_error: TimeToError, private_kafka: Any, tmp_path: Path
) -> None:
    store = {
        "type": "kafka",
        "bootstrap_servers": private_kafka.bootstrap,
        "delivery_timeout_ms": 2000,
        "request_timeout_ms": 1000,
    }
    pattern = {
        "category": "streaming",
        "topic": "frozen",
        "partitions": 2,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    with open_layer(tmp_path, store, pattern) as dl:
        stream = dl.stream("it")
        event = {"event_id": "e", "device": "d", "seq": 1}
        calls = {
            "publish": lambda: stream.publish(event),
            "publish_many": lambda: stream.publish_many([event, event]),
            "end_offsets": stream.end_offsets,
        }
        for call in calls.values():
            call()
        with private_kafka.frozen():
            for name, call in calls.items():
                # Kafka's own bounds: delivery_timeout_ms for a publish, request_timeout_ms else
                with (
                    time_to_error(f"kafka frozen {name}", 2 + SLACK),
                    pytest.raises(StoreUnavailable) as caught,
                ):
                    call()
                assert "did not answer" in str(caught.value), name
        for call in calls.values():
            call()
        # A publish that timed out had been sent: the thawed broker may still append it.
        assert 6 <= sum(stream.end_offsets().values()) <= 9


@pytest.mark.parametrize("max_uncommitted", [0, 5000])
def test_acks_on_a_frozen_kafka_are_bounded_and_lose_nothing(
    time_to_error: TimeToError, private_kafka: Any, tmp_path: Path, max_uncommitted: int
) -> None:
    """With ``max_uncommitted: 0`` an ack waits for its commit, so on a frozen broker it
    fails within the timeout; with the default an ack waits for nothing, and the commit that
    closing waits for gives up within the timeout instead. Either way nothing is lost."""
    store = {
        "type": "kafka",
        "bootstrap_servers": private_kafka.bootstrap,
        "commit": {"max_uncommitted": max_uncommitted},
    }
    pattern = {
        "category": "streaming",
        "topic": "frozen-acks",
        "partitions": 1,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    group = f"g-frozen-acks-{max_uncommitted}"
    with open_layer(tmp_path, store, pattern) as dl:
        stream = dl.stream("it")
        start = stream.end_offsets()
        stream.publish_many([{"event_id": f"e{n}", "device": "d", "seq": n} for n in range(10)])
        messages = stream.consume(group, start=start, idle_timeout=2)
        first = next(messages)
        first.ack()
        with private_kafka.frozen():
            second = next(messages)  # already fetched
            if max_uncommitted == 0:
                with (
                    time_to_error("kafka frozen ack", TIMEOUT + SLACK),
                    pytest.raises(StoreTimeout, match="commit"),
                ):
                    second.ack()
            else:
                with time_to_error("kafka frozen ack, commits batched", 0.1):
                    second.ack()
            with time_to_error(
                f"kafka frozen consumer close ({max_uncommitted})", 2 * TIMEOUT + SLACK
            ):
                messages.close()  # the commit it waits for and leaving the group are bounded
        handled = [m.value["seq"] for m in stream.consume(group, idle_timeout=3)]
        # Acknowledged messages whose commit never landed are handled again; none is lost.
        assert set(range(2, 10)) <= {*handled} <= set(range(10)), handled

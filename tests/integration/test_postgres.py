"""PostgreSQL specifics: hostile input is only data, a restart is survived, a deadlock is a
Conflict."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

import datalayer
from datalayer import ConfigError, Conflict, QueryError, StoreUnavailable
from datalayer.testing.registry import write_registry
from tests.services.postgres import PASSWORD, PostgresServer

HOSTILE = [
    "'; DROP TABLE canary; --",
    '"; DROP TABLE canary; --',
    "x' OR '1'='1",
    "$$; DROP TABLE canary; $$",
    "'); SELECT pg_sleep(5); --",
    "\\'; DELETE FROM canary; --",
    "名前\x7f%_*",
]


def registry(tmp_path: Path, url: str, table: str = "items") -> Path:
    return write_registry(
        tmp_path,
        {"pg": {"sql": {"type": "postgres", "url": url, "connect_timeout": 2}}},
        {
            "items": {
                "category": "transactional",
                "store": "sql",
                "table": table,
                "key": "item_id",
                "schema": "datalayer.testing.contracts.schemas:Item",
            }
        },
    )


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_hostile_values_and_identifiers_change_nothing(
    postgres_database: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE canary (id int PRIMARY KEY)")
        conn.execute("INSERT INTO canary VALUES (1)")
    with datalayer.open(registry(tmp_path, postgres_database), "pg") as dl:
        dl.apply()
        items = dl.transactional("items")
        started = time.monotonic()
        for n, text in enumerate(HOSTILE):
            items.put(
                {
                    "item_id": text,
                    "name": text,
                    "price": n,
                    "created_at": datetime.now(UTC),
                    "attributes": {text: text},
                }
            )
            assert items.get(text) is not None
            assert [r["item_id"] for r in items.query({"name": text})] == [text]
            assert items.count({"item_id": {"$in": [text, "other"]}}) == 1
            assert items.query({"name": {"$gte": text}}, order_by="name")
        assert time.monotonic() - started < 5, "a value reached the server as SQL (pg_sleep ran)"
        for text in HOSTILE:
            for bad in ({text: 1}, {"name": {text: 1}}, {"name": {"$in": text}}):
                with pytest.raises(QueryError):
                    items.query(bad)
            with pytest.raises(QueryError):
                items.query(order_by=text)
        assert items.count() == len(HOSTILE)
        assert all(items.delete(text) for text in HOSTILE)
    assert tables(postgres_database) == {"canary", "items"}
    with psycopg.connect(postgres_database) as conn:
        assert conn.execute("SELECT id FROM canary").fetchall() == [(1,)]


def test_hostile_identifiers_in_the_registry_are_refused(tmp_path: Path) -> None:
    for table in ['items"; DROP TABLE canary; --', "items; DROP", "1items", "a" * 64]:
        with pytest.raises(ConfigError, match=r"patterns\.items\.table"):
            datalayer.open(registry(tmp_path, "postgresql://u:p@127.0.0.1:1/db", table), "pg")


def test_pooled_connections_idle_then_serve_reads_and_writes(
    postgres_database: str, tmp_path: Path
) -> None:
    with datalayer.open(registry(tmp_path, postgres_database), "pg") as dl:
        dl.apply()
        items = dl.transactional("items")
        items.put({"item_id": "a", "name": "a", "price": 1, "created_at": datetime.now(UTC)})
        time.sleep(1.2)  # past ping_after_idle: the next checkout pings first
        assert items.get("a") is not None
        time.sleep(1.2)
        items.put({"item_id": "b", "name": "b", "price": 2, "created_at": datetime.now(UTC)})
        with dl.transaction("items"):
            assert items.count() == 2


def test_stopped_postgres_fails_fast_then_recovers(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    with datalayer.open(registry(tmp_path, private_postgres.url), "pg") as dl:
        dl.apply()
        items = dl.transactional("items")
        items.put({"item_id": "a", "name": "a", "price": 1, "created_at": datetime.now(UTC)})

        private_postgres.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            items.get("a")
        assert time.monotonic() - started < 10
        message = str(caught.value)
        assert "store 'sql'" in message and "postgres" in message
        assert PASSWORD not in message and "***" in message
        health = {h.store: h for h in dl.doctor(timeout=5)}
        assert health["sql"].status == "unavailable" and PASSWORD not in health["sql"].detail

        private_postgres.start()
        row = items.get("a")
        assert row is not None and row["name"] == "a"
        items.put({"item_id": "b", "name": "b", "price": 2, "created_at": datetime.now(UTC)})
        assert items.count() == 2


def test_a_deadlock_between_for_update_transactions_is_a_conflict(
    postgres_database: str, tmp_path: Path
) -> None:
    """Each transaction locks one row, then asks for the other's: PostgreSQL breaks the cycle
    (after deadlock_timeout, 1 s), and the one it chose raises Conflict with nothing kept."""
    with datalayer.open(registry(tmp_path, postgres_database), "pg") as dl:
        dl.apply()
        items = dl.transactional("items")
        for key in ("a", "b"):
            items.put({"item_id": key, "name": key, "price": 0, "created_at": datetime.now(UTC)})
        both_hold_one = threading.Barrier(2, timeout=10)
        outcomes: dict[str, object] = {}

        def rename(first: str, second: str) -> None:
            try:
                with items.transaction():
                    for key in (first, second):
                        row = items.get(key, for_update=True)
                        assert row is not None
                        items.put({**row, "name": f"by {first}"})
                        if key == first:
                            both_hold_one.wait()
                outcomes[first] = "committed"
            except BaseException as exc:
                outcomes[first] = exc

        threads = [threading.Thread(target=rename, args=pair) for pair in (("a", "b"), ("b", "a"))]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert time.monotonic() - started < 15
        assert sorted(map(type, outcomes.values()), key=str) == sorted([str, Conflict], key=str)
        (winner,) = [k for k, o in outcomes.items() if o == "committed"]
        (loser,) = [o for o in outcomes.values() if isinstance(o, Conflict)]
        assert "run it again" in str(loser) and loser.orig is not None
        assert {r["name"] for r in items.query()} == {f"by {winner}"}

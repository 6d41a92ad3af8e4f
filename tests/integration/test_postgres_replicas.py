"""Reads of a pattern with ``reads: replica`` go to the store's streaming replica (a
``pg_basebackup`` of the test's own primary, on loopback), everything else and every read
inside a transaction to the primary; a replica that stops answering leaves reads to the
primary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import datalayer
from datalayer.testing.registry import write_registry
from tests.services.base import LocalServer
from tests.services.launcher import cache_dir, new_state_dir
from tests.services.postgres import PostgresReplica


@pytest.fixture
def replica(private_postgres: LocalServer) -> Iterator[PostgresReplica]:
    standby = PostgresReplica(private_postgres, new_state_dir(), cache_dir())  # type: ignore[arg-type]
    standby.start()
    yield standby
    standby.stop()


def registry(folder: Path, primary: str, replicas: list[str]) -> Path:
    pattern = {
        "category": "transactional",
        "store": "pg",
        "table": "ledger",
        "key": ["account_id", "entry_no"],
        "schema": "datalayer.testing.contracts.schemas:Ledger",
        "reads": "replica",
    }
    stores = {"pg": {"type": "postgres", "url": primary, "replicas": replicas}}
    return write_registry(folder, {"local": stores}, {"ledger": pattern})


def row(account: str) -> dict[str, Any]:
    return {"account_id": account, "entry_no": 1, "amount": 1.5}


def eventually(read: Any, expected: Any, seconds: float = 20.0) -> None:
    """Wait until ``read()`` returns ``expected`` (the replica replays the primary's WAL; a
    table it has not replayed yet is not there)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if read() == expected:
                return
        except datalayer.NotApplied:
            pass
        assert time.monotonic() < deadline, f"the replica never showed {expected!r}"
        time.sleep(0.05)


def test_replica_reads_route_to_the_replica_and_transactions_to_the_primary(
    tmp_path: Path, private_postgres: LocalServer, replica: PostgresReplica
) -> None:
    primary_url = private_postgres.url  # type: ignore[attr-defined]
    file = registry(tmp_path, primary_url, [replica.url])
    with datalayer.open(file, "local") as dl:
        dl.apply()
        ledger = dl.transactional("ledger")
        ledger.put(row("a"))
        eventually(lambda: ledger.get(("a", 1)), row("a"))  # replicated
        with psycopg.connect(replica.url, autocommit=True) as standby:
            standby.execute("SELECT pg_wal_replay_pause()")
            try:
                ledger.put(row("b"))  # on the primary; the paused replica does not have it
                time.sleep(0.3)
                assert ledger.get(("b", 1)) is None
                assert ledger.count() == 1 and ledger.query() == [row("a")]
                with ledger.transaction():  # every read of a transaction: the primary
                    assert ledger.get(("b", 1)) == row("b")
                    assert ledger.count() == 2
                    assert ledger.get(("b", 1), for_update=True) == row("b")
            finally:
                standby.execute("SELECT pg_wal_replay_resume()")
        eventually(lambda: ledger.get(("b", 1)), row("b"))
        dl.store("pg").ping()  # the primary and the replica answer
    replica.stop()  # reads go to the primary when the replica does not answer
    with datalayer.open(file, "local") as dl:
        ledger = dl.transactional("ledger")
        assert ledger.get(("b", 1)) == row("b")
        assert ledger.count() == 2
        with pytest.raises(datalayer.StoreUnavailable, match="read replica 1 of 1"):
            dl.store("pg").ping()


def test_a_store_without_replicas_serves_replica_reads_from_the_primary(
    tmp_path: Path, postgres_database: str
) -> None:
    with datalayer.open(registry(tmp_path, postgres_database, []), "local") as dl:
        dl.apply()
        dl.transactional("ledger").put(row("a"))
        assert dl.transactional("ledger").get(("a", 1)) == row("a")

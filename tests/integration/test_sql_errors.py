"""Each SQL failure surfaces as the error that says what to do, on SQLite and PostgreSQL alike,
and no message carries the statement or its values."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer import Conflict, DataLayer, NotApplied, QueryError
from datalayer.testing.registry import write_registry

SCHEMA = "datalayer.testing.contracts.schemas:Ledger"
SECRET = "s3cr3t-value-0123"


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "sql.db"), "migrations": None}
    return {"type": "postgres", "url": request.getfixturevalue("postgres_database"),
            "migrations": None}  # fmt: skip


def open_layer(tmp_path: Path, store: dict[str, Any], *, apply: bool = True) -> DataLayer:
    pattern = {"category": "transactional", "store": "sql", "table": "ledger",
               "key": ["account_id", "entry_no"], "schema": SCHEMA}  # fmt: skip
    file = write_registry(tmp_path, {"test": {"sql": store}}, {"ledger": pattern})
    dl = datalayer.open(file, "test")
    if apply:
        dl.apply()
    return dl


def test_a_table_never_applied_says_to_apply(tmp_path: Path, sql_store: dict[str, Any]) -> None:
    with open_layer(tmp_path, sql_store, apply=False) as dl:
        ledger = dl.transactional("ledger")
        for call in (
            lambda: ledger.get({"account_id": SECRET, "entry_no": 1}),
            lambda: ledger.put({"account_id": SECRET, "entry_no": 1, "amount": 2.5}),
            lambda: ledger.query({"account_id": SECRET}),
            lambda: ledger.count(),
        ):
            with pytest.raises(NotApplied, match="run 'datalayer apply'") as info:
                call()
            message = str(info.value)
            assert type(info.value.orig).__module__.split(".")[0] in ("sqlite3", "psycopg")
            assert SECRET not in message
            for sql in ("SELECT", "INSERT", "LINE 1"):
                assert sql not in message.upper()


def test_an_in_list_past_what_a_store_binds_is_a_query_error(
    tmp_path: Path, sql_store: dict[str, Any]
) -> None:
    with open_layer(tmp_path, sql_store) as dl:
        ledger = dl.transactional("ledger")
        with pytest.raises(QueryError, match="at most 10,000"):
            ledger.query({"entry_no": {"$in": list(range(70_001))}})
        assert ledger.query({"entry_no": {"$in": list(range(10_000))}}) == []


def test_a_deadlock_between_transactions_is_a_conflict(
    tmp_path: Path, postgres_database: str
) -> None:
    store = {"type": "postgres", "url": postgres_database, "migrations": None}
    with open_layer(tmp_path, store) as dl:
        ledger = dl.transactional("ledger")
        ledger.put_many([{"account_id": a, "entry_no": 1, "amount": 0.0} for a in "ab"])
        both_in = threading.Barrier(2)
        errors: list[BaseException] = []

        def transfer(first: str, second: str) -> None:
            try:
                with dl.transaction("ledger"):
                    ledger.put({"account_id": first, "entry_no": 1, "amount": 1.0})
                    both_in.wait(timeout=10)
                    time.sleep(0.2)
                    ledger.put({"account_id": second, "entry_no": 1, "amount": 1.0})
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=transfer, args=pair) for pair in (("a", "b"), ("b", "a"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(errors) == 1, errors
        assert isinstance(errors[0], Conflict), errors[0]
        assert type(errors[0].orig).__name__ == "DeadlockDetected"
        assert "run it again" in str(errors[0])
        assert {r["amount"] for r in ledger.query()} == {1.0}

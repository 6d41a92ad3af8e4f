"""A transactional pattern moves from SQLite to PostgreSQL by stages, under concurrent writers
(upserts, deletes and read-modify-write transactions), with a backfill interrupted once and
resumed: at every stage both stores hold the same rows, a divergence on PostgreSQL is seen by
shadow reads and by verify, and going back from cutover to split loses nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer.rollout import BATCH, bucket, key_text
from datalayer.testing.registry import write_registry
from tests.integration.rollouts import backfill_killed_after_one_batch, rollout_cli, run_writers

LEDGER = {
    "category": "transactional",
    "store": "sql",
    "table": "ledger",
    "key": ["account_id", "entry_no"],
    "schema": "datalayer.testing.contracts.schemas:Ledger",
}
WRITERS, ROWS = 3, 40


def registry(folder: Path, postgres: str, rollout: dict[str, Any] | None) -> Path:
    pattern = dict(LEDGER) | ({"rollout": rollout} if rollout is not None else {})
    stores = {
        "sql": {"type": "sqlite", "path": str(folder / "ledger.db")},
        "pg": {"type": "postgres", "url": postgres},
    }
    return write_registry(folder, {"local": stores}, {"ledger": pattern})


def old_side(folder: Path) -> Path:
    """The pattern on SQLite alone, without the rollout (``registry`` rewrites one file)."""
    side = folder / "sqlite-side"
    side.mkdir(exist_ok=True)
    stores = {"sql": {"type": "sqlite", "path": str(folder / "ledger.db")}}
    return write_registry(side, {"local": stores}, {"ledger": LEDGER})


def new_side(folder: Path, postgres: str) -> Path:
    """The pattern on PostgreSQL alone: to look at, or write into, the new store behind the
    rollout's back."""
    side = folder / "pg-side"
    side.mkdir(exist_ok=True)
    pattern = LEDGER | {"store": "pg"}
    return write_registry(
        side, {"local": {"pg": {"type": "postgres", "url": postgres}}}, {"ledger": pattern}
    )


def write_concurrently(file: Path, accounts: str) -> dict[tuple[str, int], float | None]:
    """Writers of their own accounts at once: upserts, a delete of every fifth entry, and a
    running total (entry 0) added to in a read-modify-write transaction; the amount each
    key should hold afterwards (None: deleted)."""
    expected: dict[tuple[str, int], float | None] = {}
    lock = threading.Lock()

    def writer(n: int) -> None:
        with datalayer.open(file, "local") as dl:
            ledger, account = dl.transactional("ledger"), f"{accounts}-{n}"
            for i in range(1, ROWS + 1):
                ledger.put({"account_id": account, "entry_no": i, "amount": i * 1.5})
                if i % 5 == 0:
                    ledger.delete((account, i))
                with ledger.transaction():
                    total = ledger.get((account, 0), for_update=True)
                    before = 0.0 if total is None else total["amount"]
                    ledger.put({"account_id": account, "entry_no": 0, "amount": before + i})
                with lock:
                    expected[(account, i)] = None if i % 5 == 0 else i * 1.5
            with lock:
                expected[(account, 0)] = float(sum(range(1, ROWS + 1)))

    run_writers(writer, WRITERS)
    return expected


def amounts(file: Path, keys: list[tuple[str, int]]) -> list[float | None]:
    with datalayer.open(file, "local") as dl:
        rows = [dl.transactional("ledger").get(key) for key in keys]
    return [None if row is None else row["amount"] for row in rows]


def test_a_table_moves_from_sqlite_to_postgresql_through_every_stage_losing_nothing(
    tmp_path: Path, postgres_database: str
) -> None:
    before = registry(tmp_path, postgres_database, None)
    with datalayer.open(before, "local") as dl:
        dl.apply()
        dl.transactional("ledger").put_many(
            {"account_id": f"a{i % 7}", "entry_no": i, "amount": float(i)} for i in range(3 * BATCH)
        )
    shadow = registry(tmp_path, postgres_database, {"to": "pg", "stage": "shadow"})
    with datalayer.open(shadow, "local") as dl:
        assert any("ledger" in a for r in dl.apply() for a in r.actions if "pg" in r.store)
    # the backfill is interrupted after its first batch, then resumed, while writers update
    # and delete rows it is copying
    stop = threading.Event()

    def churn() -> None:
        with datalayer.open(shadow, "local") as dl:
            ledger, i = dl.transactional("ledger"), 0
            while not stop.is_set():
                key = (f"a{i % 7}", (i * 37) % (3 * BATCH))
                if i % 4 == 0:
                    ledger.delete(key)
                else:
                    ledger.put({"account_id": key[0], "entry_no": key[1], "amount": -i})
                i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        checkpoints = backfill_killed_after_one_batch(shadow, "ledger")
        assert json.loads(checkpoints.load("ledger", "pg").cursor)["account_id"]
        resumed = rollout_cli(shadow, "backfill", "ledger")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "keys copied to pg" in resumed.stdout, resumed.stdout
    finally:
        stop.set()
        thread.join(30)
    checked = rollout_cli(shadow, "verify", "ledger", "--json")
    result = json.loads(checked.stdout)
    assert checked.returncode == 0 and result["clean"], (result["mismatches"], result["keys"])
    assert result["old_keys"] == result["new_keys"] > BATCH
    # every stage under concurrent writers; both stores take every write
    expected: dict[tuple[str, int], float | None] = {}
    for stage in ("shadow", "split", "cutover", "split"):
        file = registry(tmp_path, postgres_database, {"to": "pg", "stage": stage, "percent": 50})
        written = write_concurrently(file, f"{stage}{len(expected)}")
        expected |= written
        keys = list(expected)
        assert amounts(file, keys) == list(expected.values()), stage
        assert amounts(old_side(tmp_path), keys) == amounts(
            new_side(tmp_path, postgres_database), keys
        )
        checked = rollout_cli(file, "verify", "ledger")
        assert checked.returncode == 0, (stage, checked.stdout)
    # the accounts written after going back from cutover to split
    accounts = sorted({account for account, _ in written})
    # a transaction that raises leaves neither store changed
    split = registry(tmp_path, postgres_database, {"to": "pg", "stage": "split", "percent": 50})
    with datalayer.open(split, "local") as dl, pytest.raises(RuntimeError):
        ledger = dl.transactional("ledger")
        with ledger.transaction():
            ledger.put({"account_id": "undone", "entry_no": 1, "amount": 1.0})
            ledger.delete((accounts[0], 0))
            raise RuntimeError("changed my mind")
    kept = [("undone", 1), (accounts[0], 0)]
    assert amounts(old_side(tmp_path), kept) == amounts(new_side(tmp_path, postgres_database), kept)
    assert amounts(old_side(tmp_path), kept)[0] is None
    # split reads each key from its stable side: PostgreSQL's rows told apart by a change
    # made there alone
    with datalayer.open(new_side(tmp_path, postgres_database), "local") as pg:
        for account in accounts:
            for i in range(1, 5):
                pg.transactional("ledger").put(
                    {"account_id": account, "entry_no": i, "amount": -1.0}
                )
    keys = [(account, i) for account in accounts for i in range(1, 5)]
    read = amounts(split, keys)
    from_new = [k for k, amount in zip(keys, read, strict=True) if amount == -1.0]
    assert from_new == [
        k for k in keys if bucket(key_text({"account_id": k[0], "entry_no": k[1]})) < 5000
    ]
    diverged = rollout_cli(split, "verify", "ledger")
    assert diverged.returncode == 1 and f"{len(keys)} values differ" in diverged.stdout
    assert json.dumps([accounts[0], 1]) in diverged.stdout, diverged.stdout
    compared = registry(
        tmp_path, postgres_database, {"to": "pg", "stage": "shadow", "compare_sample": 1.0}
    )
    with datalayer.open(compared, "local") as dl:
        assert amounts(compared, keys) == [expected[k] for k in keys]  # the current store's
        ledger = dl.transactional("ledger")
        for key in keys:
            ledger.get(key)
        (rollout,) = dl.rollouts()
        assert (rollout.stats.compared, rollout.stats.mismatches) == (len(keys), len(keys))
    repaired = rollout_cli(split, "verify", "ledger", "--repair", "--json")
    assert json.loads(repaired.stdout)["repaired"] == len(keys), repaired.stdout
    assert amounts(split, keys) == [expected[k] for k in keys]
    # done: only PostgreSQL is written
    done = registry(tmp_path, postgres_database, {"to": "pg", "stage": "done"})
    with datalayer.open(done, "local") as dl:
        dl.transactional("ledger").put({"account_id": "done", "entry_no": 1, "amount": 2.0})
    assert amounts(old_side(tmp_path), [("done", 1)]) == [None]
    assert amounts(new_side(tmp_path, postgres_database), [("done", 1)]) == [2.0]


def test_a_failing_new_store_never_fails_a_shadow_write_or_transaction(tmp_path: Path) -> None:
    dead = "postgresql://nobody:nothing@127.0.0.1:9/none?connect_timeout=2"
    before = registry(tmp_path, dead, None)
    with datalayer.open(before, "local") as dl:
        dl.apply()
    file = registry(tmp_path, dead, {"to": "pg", "stage": "shadow"})
    with datalayer.open(file, "local") as dl:
        ledger = dl.transactional("ledger")
        ledger.put({"account_id": "a", "entry_no": 1, "amount": 1.0})
        with ledger.transaction():
            row = ledger.get(("a", 1), for_update=True)
            assert row is not None
            ledger.put({"account_id": "a", "entry_no": 1, "amount": row["amount"] + 1})
        assert ledger.get(("a", 1)) == {"account_id": "a", "entry_no": 1, "amount": 2.0}
        (rollout,) = dl.rollouts()
        assert rollout.stats.write_failures >= 2
    split = registry(tmp_path, dead, {"to": "pg", "stage": "split"})
    with datalayer.open(split, "local") as dl, pytest.raises(datalayer.StoreUnavailable):
        dl.transactional("ledger").put({"account_id": "a", "entry_no": 1, "amount": 3.0})


def test_a_key_reads_from_one_side_however_it_is_spelled() -> None:
    """The split's bucket is taken of the key as the stores compare it: a time at any
    offset, an integral float and a decimal with trailing zeros land where their plain
    spelling does."""
    from datetime import UTC, datetime, timedelta, timezone
    from decimal import Decimal

    at = datetime(2024, 1, 1, tzinfo=UTC)
    spellings = [
        [{"k": at}, {"k": at.astimezone(timezone(timedelta(hours=5, minutes=30)))}],
        [{"k": at}, {"k": at.replace(tzinfo=None)}],
        [{"a": "x", "n": 2}, {"a": "x", "n": 2.0}, {"a": "x", "n": Decimal("2.000")}],
        [{"k": Decimal("1.5")}, {"k": Decimal("1.50")}, {"k": 1.5}],
    ]
    for same in spellings:
        assert len({key_text(key) for key in same}) == 1, same
    assert key_text({"k": "svc-1"}) == "svc-1"  # text keys as they are


def test_rows_equal_as_numbers_compare_equal_across_stores() -> None:
    """SQLite drops a decimal's trailing zeros and a float zero's sign; PostgreSQL keeps
    both: verify and shadow reads compare the numbers."""
    from decimal import Decimal

    from datalayer.rollout import TableSide
    from datalayer.testing.contracts.schemas import Amount, Ledger

    amounts = TableSide(None, Amount, ["amount_id"])  # type: ignore[arg-type]
    plain = {"amount_id": "a", "value": Decimal("1.5"), "price": Decimal("2")}
    spelled = {"amount_id": "a", "value": Decimal("1.50"), "price": Decimal("2.00")}
    assert amounts.digest(plain) == amounts.digest(spelled)
    assert amounts.digest(plain) != amounts.digest(plain | {"value": Decimal("1.51")})
    ledger = TableSide(None, Ledger, ["account_id", "entry_no"])  # type: ignore[arg-type]
    zero = {"account_id": "a", "entry_no": 1, "amount": 0.0}
    assert ledger.digest(zero) == ledger.digest(zero | {"amount": -0.0})


def test_a_shadow_transaction_whose_new_store_cannot_begin_leaves_it_out(
    tmp_path: Path, postgres_database: str
) -> None:
    """The new store's BEGIN fails (it comes back during the block): the block's writes
    skip it, counted, so a block that raises changes neither store."""
    from contextlib import contextmanager

    before = registry(tmp_path, postgres_database, None)
    with datalayer.open(before, "local") as dl:
        dl.apply()
    file = registry(tmp_path, postgres_database, {"to": "pg", "stage": "shadow"})
    with datalayer.open(file, "local") as dl:
        dl.apply()
        ledger = dl.transactional("ledger")
        router = ledger.backend

        @contextmanager
        def unreachable() -> Any:
            raise datalayer.StoreUnavailable("store 'pg' is unavailable (test)")
            yield

        router.new.transaction = unreachable
        with pytest.raises(RuntimeError), ledger.transaction():
            ledger.put({"account_id": "undone", "entry_no": 1, "amount": 1.0})
            raise RuntimeError("changed my mind")
        with ledger.transaction():
            ledger.put({"account_id": "kept", "entry_no": 1, "amount": 1.0})
        (rollout,) = dl.rollouts()
        assert rollout.stats.write_failures == 4  # two BEGINs, two upserts
    keys = [("undone", 1), ("kept", 1)]
    assert amounts(old_side(tmp_path), keys) == [None, 1.0]
    assert amounts(new_side(tmp_path, postgres_database), keys) == [None, None]

"""The transactional contract, subclassed to run against a transactional store type."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from datalayer import (
    Conflict,
    DataLayer,
    DataLayerError,
    NotApplied,
    PayloadValidationError,
    QueryError,
)
from datalayer.testing.contracts.base import Contract, OpenLayer
from datalayer.testing.contracts.concurrency import run_together

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEMS = {
    "table": "items",
    "key": "item_id",
    "schema": "datalayer.testing.contracts.schemas:Item",
    "indexes": ["name"],
}
LEDGER = {
    "table": "ledger",
    "key": ["account_id", "entry_no"],
    "schema": "datalayer.testing.contracts.schemas:Ledger",
}
AMOUNTS = {
    "table": "amounts",
    "key": "amount_id",
    "schema": "datalayer.testing.contracts.schemas:Amount",
}
#: Decimals no float holds, by row key.
EXACT = {
    "big": Decimal("12345678901234567890.123456789"),
    "tenth": Decimal("0.1"),
    "negative": Decimal("-98765.4321"),
    "tiny": Decimal("-0." + "0" * 30 + "7"),
    "places": Decimal("3." + "1415926535" * 6),
    "huge": Decimal("9" * 60),
    "zero": Decimal("0"),
}


def item(i: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "item_id": f"i{i:03d}",
        "name": f"item {i}",
        "price": float(i),
        "quantity": i % 5,
        "active": i % 2 == 0,
        "tier": "abc"[i % 3],
        "created_at": T0 + timedelta(hours=i),
    }
    row.update(overrides)
    return row


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["item_id"] for r in rows]


def add_one_at_a_time(dl: DataLayer, pattern: str, key: str, times: int) -> None:
    """Read-modify-write of one counter (``quantity``), each in its own transaction; the first
    creates the row."""
    table = dl.transactional(pattern)
    for _ in range(times):
        with table.transaction():
            row = table.get(key, for_update=True)
            count = 0 if row is None else int(row["quantity"])
            table.put(item(0, item_id=key, quantity=count + 1))


class TransactionalContract(Contract):
    """The transactional contract: rows, composite keys, queries, transactions."""

    category = "transactional"
    #: Increments of one counter by each of 8 threads and 4 processes.
    increments = 200

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        return open_layer({"items": ITEMS, "ledger": LEDGER, "amounts": AMOUNTS})

    def test_put_then_get_round_trips_every_type(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1, attributes={"colour": "red"}, discontinued_at=T0 + timedelta(days=3)))
        row = items.get("i001")
        assert row == {
            "item_id": "i001",
            "name": "item 1",
            "price": 1.0,
            "quantity": 1,
            "active": False,
            "tier": "b",
            "created_at": T0 + timedelta(hours=1),
            "discontinued_at": T0 + timedelta(days=3),
            "attributes": {"colour": "red"},
        }
        assert row["created_at"].tzinfo is not None
        assert items.get("missing") is None

    def test_put_is_an_upsert(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1))
        items.put(item(1, name="renamed", price=9.5))
        assert items.count() == 1
        row = items.get("i001")
        assert row is not None and (row["name"], row["price"]) == ("renamed", 9.5)

    def test_invalid_row_names_the_field_and_writes_nothing(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        with pytest.raises(PayloadValidationError) as caught:
            items.put(item(1, price=-3))
        assert "price" in str(caught.value) and "items" in str(caught.value)
        with pytest.raises(PayloadValidationError, match="created_at"):
            items.put_many([item(2), item(3, created_at="not a date")])
        assert items.count() == 0

    def test_delete_reports_whether_a_row_was_there(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1))
        assert items.delete("i001") is True
        assert items.delete("i001") is False
        assert items.get("i001") is None

    def test_the_backend_scans_keys_in_order_and_adds_only_where_missing(
        self, dl: DataLayer
    ) -> None:
        """What a rollout's backfill uses: keys in key order after a key (composite ones by
        row comparison), resumable, and an insert that never overwrites a row."""
        ledger = dl.transactional("ledger")
        rows = [
            {"account_id": a, "entry_no": n, "amount": float(n)} for a in "bca" for n in (10, 2)
        ]
        ledger.put_many(rows)
        backend, seen, after = ledger.backend, [], None
        while page := backend.scan(after, 4):
            seen += page
            after = page[-1]
        assert seen == [
            {"account_id": a, "entry_no": n} for a in "abc" for n in (2, 10)
        ]  # 2 before 10: numbers in number order, not as text
        taken = ledger.validated({"account_id": "a", "entry_no": 2, "amount": 99.0})
        assert backend.add(taken) is False and ledger.get(("a", 2))["amount"] == 2.0  # type: ignore[index]
        fresh = ledger.validated({"account_id": "a", "entry_no": 3, "amount": 3.5})
        assert backend.add(fresh) is True and ledger.get(("a", 3))["amount"] == 3.5  # type: ignore[index]

    def test_composite_keys(self, dl: DataLayer) -> None:
        ledger = dl.transactional("ledger")
        ledger.put_many([{"account_id": "a", "entry_no": n, "amount": n * 1.5} for n in range(3)])
        ledger.put({"account_id": "b", "entry_no": 0, "amount": 7.0})
        assert ledger.get(("a", 2)) == {"account_id": "a", "entry_no": 2, "amount": 3.0}
        assert ledger.get({"account_id": "b", "entry_no": 0}) == {
            "account_id": "b",
            "entry_no": 0,
            "amount": 7.0,
        }
        assert ledger.delete(("a", 0)) is True
        assert ledger.count({"account_id": "a"}) == 2
        with pytest.raises(QueryError, match="2 value"):
            ledger.get("a")

    def test_query_filters_order_and_limit(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put_many([item(i) for i in range(10)])
        items.put(item(10, discontinued_at=T0))

        assert ids(items.query({"tier": "a"}, order_by="item_id")) == [
            "i000",
            "i003",
            "i006",
            "i009",
        ]
        assert ids(
            items.query({"item_id": {"$in": ["i002", "i004", "nope"]}}, order_by="item_id")
        ) == [
            "i002",
            "i004",
        ]
        assert ids(items.query({"price": {"$gt": 2, "$lte": 5}}, order_by="-price")) == [
            "i005",
            "i004",
            "i003",
        ]
        assert ids(items.query({"price": {"$gte": 8}, "active": True}, order_by="item_id")) == [
            "i008",
            "i010",
        ]
        assert ids(
            items.query({"created_at": {"$lt": T0 + timedelta(hours=2)}}, order_by="item_id")
        ) == ["i000", "i001"]
        assert ids(items.query({"discontinued_at": {"$exists": True}})) == ["i010"]
        assert len(items.query({"discontinued_at": {"$exists": False}})) == 10
        assert ids(items.query(order_by=["tier", "-price"], limit=3)) == ["i009", "i006", "i003"]
        assert items.count({"quantity": 0}) == 3

    def test_query_rejects_unknown_columns_and_operators(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        with pytest.raises(QueryError, match="no column 'colour'"):
            items.query({"colour": "red"})
        with pytest.raises(QueryError, match=r"\$regex"):
            items.query({"name": {"$regex": ".*"}})
        with pytest.raises(QueryError, match="limit"):
            items.query(limit=-1)
        with pytest.raises(QueryError):
            items.query(order_by="price; DROP TABLE items")

    def test_hostile_values_are_only_data(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        hostile = "x'); DROP TABLE items; --"
        items.put(item(1, item_id=hostile, name=hostile))
        assert items.query({"name": hostile})[0]["item_id"] == hostile
        assert items.get(hostile) is not None
        assert items.count() == 1

    def test_transaction_spans_patterns_and_commits(self, dl: DataLayer) -> None:
        with dl.transaction("items", "ledger"):
            dl.transactional("items").put(item(1))
            dl.transactional("ledger").put({"account_id": "a", "entry_no": 1, "amount": 1.0})
        assert dl.transactional("items").count() == 1
        assert dl.transactional("ledger").count() == 1

    def test_transaction_rolls_back_everything_on_error(self, dl: DataLayer) -> None:
        items, ledger = dl.transactional("items"), dl.transactional("ledger")
        items.put(item(0))
        with pytest.raises(RuntimeError, match="boom"), dl.transaction("items", "ledger"):
            items.put(item(1))
            items.put(item(0, name="changed"))
            ledger.put({"account_id": "a", "entry_no": 1, "amount": 1.0})
            items.delete("i000")
            raise RuntimeError("boom")
        assert items.count() == 1 and ledger.count() == 0
        row = items.get("i000")
        assert row is not None and row["name"] == "item 0"

    def test_transaction_rolls_back_when_a_row_is_invalid(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        with pytest.raises(PayloadValidationError), items.transaction():
            items.put(item(1))
            items.put(item(2, tier="z"))
        assert items.count() == 0

    def test_a_caught_failure_never_lets_a_block_end_as_if_it_committed(
        self, dl: DataLayer
    ) -> None:
        """A statement the database refuses inside ``transaction()``, its error caught by the
        block: where the database aborts the transaction (PostgreSQL) the block's end raises
        and nothing is kept; where it does not (SQLite), the rest commits. Never a block that
        ends normally having committed nothing (a COMMIT answered by a rollback)."""
        ledger = dl.transactional("ledger")
        # past PostgreSQL's index row size even compressed; SQLite keeps it
        refused = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(70))
        raised = False
        try:
            with ledger.transaction():
                ledger.put({"account_id": "a", "entry_no": 1, "amount": 1.0})
                with contextlib.suppress(DataLayerError):
                    ledger.put({"account_id": refused, "entry_no": 1, "amount": 1.0})
        except DataLayerError as exc:
            raised = True
            assert "nothing of the block was committed" in str(exc)
        kept = ledger.get(("a", 1)) is not None
        assert kept != raised, (kept, raised)

    def test_wrong_category_and_unknown_pattern_are_clear_errors(self, dl: DataLayer) -> None:
        with pytest.raises(DataLayerError, match=r"use dl.transactional\('items'\)"):
            dl.stream("items")
        with pytest.raises(DataLayerError, match="did you mean 'items'"):
            dl.transactional("itemz")

    def test_apply_is_idempotent(self, dl: DataLayer) -> None:
        dl.transactional("items").put(item(1))
        again = dl.apply()
        assert all("exists" in action for result in again for action in result.actions)
        assert dl.transactional("items").count() == 1

    def test_values_no_store_keeps_exactly_are_refused_before_writing(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1, quantity=2**63 - 1))
        assert items.get("i001")["quantity"] == 2**63 - 1  # type: ignore[index]
        for bad in (2**63, -(2**63) - 1, 10**30):
            with pytest.raises(PayloadValidationError, match="quantity") as caught:
                items.put_many([item(2), item(3, quantity=bad)])
            assert caught.value.store is None  # refused before the store was asked
        assert items.count() == 1
        ledger = dl.transactional("ledger")
        for nan in (float("nan"), float("inf")):
            with pytest.raises(PayloadValidationError, match="amount") as caught:
                ledger.put({"account_id": "a", "entry_no": 1, "amount": nan})
            assert caught.value.store is None
        assert ledger.count() == 0

    def test_text_with_nul_and_datetimes_outside_utc_are_refused(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        far_past = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
        for bad, field in (
            (item(1, name="a\x00b"), "name"),
            (item(1, created_at=far_past), "created_at"),
        ):
            with pytest.raises(PayloadValidationError, match=field):
                items.put(bad)
        assert items.count() == 0

    def test_queries_out_of_any_store_s_range_are_query_errors(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1))
        many = [f"i{n:06d}" for n in range(70_001)]
        for call in (
            lambda: items.query(order_by=7),  # type: ignore[arg-type]
            lambda: items.query(limit=2**63),
            lambda: items.query(limit=10**30),
            lambda: items.query({"quantity": 10**30}),
            lambda: items.query({"quantity": {"$in": [1, -(2**64)]}}),
            lambda: items.query({"item_id": {"$in": many}}),
            lambda: items.count({"price": float("nan")}),
        ):
            with pytest.raises(QueryError) as caught:
                call()
            assert caught.value.store is None  # refused before the store was asked
        assert items.query({"quantity": 2**63 - 1}, limit=2**63 - 1) == []

    def test_concurrent_put_many_on_shared_keys_never_deadlock(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        rows = [item(i) for i in range(150)]
        failures: list[BaseException] = []

        def writer(batch: list[dict[str, object]]) -> None:
            try:
                for _ in range(8):
                    items.put_many(batch)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=writer, args=(order,))
            for order in (rows, rows[::-1], rows[75:] + rows[:75])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        assert items.count() == 150

    def test_get_for_update_needs_a_transaction(self, dl: DataLayer) -> None:
        items = dl.transactional("items")
        items.put(item(1))
        with pytest.raises(QueryError, match=r"inside transaction\(\)"):
            items.get("i001", for_update=True)
        with items.transaction():
            row = items.get("i001", for_update=True)
            assert row is not None and row["name"] == "item 1"
            assert items.get("i404", for_update=True) is None
            items.put(item(404))
        assert items.count() == 2

    def test_read_modify_write_with_for_update_loses_nothing(self, dl: DataLayer) -> None:
        """8 threads and 4 processes add 1 to one counter, which none of them created."""
        run_together(dl, add_one_at_a_time, "items", "counter", self.increments)
        row = dl.transactional("items").get("counter")
        assert row is not None and row["quantity"] == 12 * self.increments

    def test_opposite_lock_orders_commit_or_conflict_never_hang(self, dl: DataLayer) -> None:
        """Two transactions lock two rows in opposite orders: each commits whole or raises
        ``Conflict`` and leaves nothing; one at least commits."""
        items = dl.transactional("items")
        items.put_many([item(1, quantity=0), item(2, quantity=0)])
        both_locked_one = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def transfer(name: str, first: str, second: str) -> None:
            try:
                with items.transaction():
                    row = items.get(first, for_update=True)
                    assert row is not None
                    items.put({**row, "quantity": row["quantity"] + 1})
                    with contextlib.suppress(threading.BrokenBarrierError):
                        both_locked_one.wait(2)  # SQLite runs them one after the other
                    row = items.get(second, for_update=True)
                    assert row is not None
                    items.put({**row, "quantity": row["quantity"] + 1})
                outcomes[name] = "committed"
            except BaseException as exc:
                outcomes[name] = exc

        threads = [
            threading.Thread(target=transfer, args=("a", "i001", "i002")),
            threading.Thread(target=transfer, args=("b", "i002", "i001")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads)
        assert all(o == "committed" or isinstance(o, Conflict) for o in outcomes.values()), outcomes
        committed = sum(o == "committed" for o in outcomes.values())
        assert committed >= 1
        quantities = [r["quantity"] for r in items.query(order_by="item_id")]
        assert quantities == [committed, committed]

    def test_a_table_never_applied_says_to_apply(self, open_layer: OpenLayer) -> None:
        items = open_layer({"items": ITEMS}, apply=False).transactional("items")
        for call in (
            lambda: items.put(item(1)),
            lambda: items.get("i001"),
            lambda: items.query({"name": "item 1"}, order_by="price", limit=5),
            lambda: items.count(),
            lambda: items.delete("i001"),
        ):
            with pytest.raises(NotApplied, match="run 'datalayer apply'") as caught:
                call()
            assert caught.value.store == "main"

    def test_decimals_keep_every_digit(self, dl: DataLayer) -> None:
        amounts = dl.transactional("amounts")
        amounts.put_many([{"amount_id": key, "value": value} for key, value in EXACT.items()])
        for key, value in EXACT.items():
            row = amounts.get(key)
            assert row is not None and isinstance(row["value"], Decimal)
            assert row["value"] == value, key
        rate = Decimal("0." + "1234567890" * 2)
        amounts.put({"amount_id": "declared", "value": "-0.5", "price": "1.5", "rate": rate})
        row = amounts.get("declared")
        assert row is not None
        assert (str(row["price"]), row["rate"], row["value"]) == ("1.50", rate, Decimal("-0.5"))

    def test_decimals_compare_and_sort_as_numbers(self, dl: DataLayer) -> None:
        amounts = dl.transactional("amounts")
        amounts.put_many([{"amount_id": key, "value": value} for key, value in EXACT.items()])

        def ids(where: dict[str, object] | None = None, order: str = "value") -> list[object]:
            return [row["amount_id"] for row in amounts.query(where, order_by=order)]

        assert ids() == sorted(EXACT, key=EXACT.__getitem__)
        assert ids(order="-value") == sorted(EXACT, key=EXACT.__getitem__, reverse=True)
        assert ids({"value": {"$gt": Decimal("0.1")}}) == ["places", "big", "huge"]
        assert ids({"value": {"$gte": Decimal("0.10"), "$lt": 4}}) == ["tenth", "places"]
        assert ids({"value": Decimal("0.10")}) == ["tenth"]
        assert ids({"value": {"$in": [Decimal("-98765.43210"), Decimal("0E-5")]}}) == [
            "negative",
            "zero",
        ]
        assert ids({"value": {"$lt": 0}}, "-value") == ["tiny", "negative"]
        assert amounts.count({"value": EXACT["big"]}) == 1
        assert amounts.count({"value": EXACT["big"] + Decimal("1E-9")}) == 0

    def test_decimals_past_what_is_declared_are_refused(self, dl: DataLayer) -> None:
        amounts = dl.transactional("amounts")
        for field, bad in (
            ("price", Decimal("1.234")),  # three places, two declared
            ("price", Decimal("12345678901.5")),  # eleven digits before the point, ten fit
            ("rate", Decimal("0." + "1" * 21)),
            ("value", Decimal("NaN")),
            ("value", Decimal("-Infinity")),
            ("value", Decimal("1E+200000")),  # past what PostgreSQL's NUMERIC keeps
            ("value", Decimal("1E-20000")),
        ):
            with pytest.raises(PayloadValidationError, match=f"{field}: ") as caught:
                amounts.put_many(
                    [{"amount_id": "ok", "value": 1}, {"amount_id": "bad", "value": 1, field: bad}]
                )
            assert caught.value.store is None
        assert amounts.count() == 0
        for value in (Decimal("NaN"), Decimal("1E+200000")):
            with pytest.raises(QueryError):
                amounts.query({"value": {"$gt": value}})

    def test_text_no_store_keeps_is_refused_everywhere(self, dl: DataLayer) -> None:
        """NUL (PostgreSQL's text refuses it) and lone surrogates (no UTF-8 form) are refused
        on every store, in rows, keys and filters; so is a key integer past 64 bits (SQLite's
        driver raised OverflowError)."""
        items, ledger = dl.transactional("items"), dl.transactional("ledger")
        items.put(item(1))
        for bad in (
            item(2, name="a\x00b"),
            item(2, item_id="\ud800"),
            item(2, name="x\udfff"),
            item(2, attributes={"k": "\x00"}),
            item(2, attributes={"\ud800": "v"}),
        ):
            with pytest.raises(PayloadValidationError) as caught:
                items.put(bad)
            assert caught.value.store is None  # refused before the store was asked
        with pytest.raises(PayloadValidationError):
            items.put_many([item(3), item(4, name="\ud800")])
        for call in (
            lambda: items.get("\ud800"),
            lambda: items.get("a\x00"),
            lambda: items.delete("\udfff"),
            lambda: items.query({"name": "\ud800"}),
            lambda: items.count({"name": {"$in": ["a\x00b"]}}),
            lambda: ledger.get(("a", 2**63)),
            lambda: ledger.delete({"account_id": "a", "entry_no": -(2**64)}),
        ):
            with pytest.raises(QueryError):
                call()
        assert [r["item_id"] for r in items.query()] == ["i001"]

    def test_a_value_of_another_kind_than_its_column_is_refused(self, dl: DataLayer) -> None:
        """Filters and keys compare a column with values of its kind only: SQLite converted
        (``get(0)`` found the row ``'0'``) where PostgreSQL failed with a generic error or
        SQLAlchemy raised ArgumentError (a range on None or a bool); now ``QueryError`` on
        every store, before it is asked. None still matches NULL, in ``$in`` too."""
        items, ledger = dl.transactional("items"), dl.transactional("ledger")
        items.put_many([item(0, item_id="0"), item(1, discontinued_at=T0)])
        ledger.put({"account_id": "a", "entry_no": 1, "amount": 1.0})
        east = timezone(timedelta(hours=5, minutes=30))
        for call in (
            lambda: items.get(0),
            lambda: items.delete(0),
            lambda: ledger.get(("a", "1")),
            lambda: ledger.get(("a", None)),
            lambda: items.query({"name": 5}),
            lambda: items.query({"price": "1"}),
            lambda: items.query({"quantity": {"$in": [1, "2"]}}),
            lambda: items.query({"active": 1}),
            lambda: items.query({"created_at": "2026-03-01T12:00:00Z"}),
            lambda: items.query({"created_at": {"$lt": datetime(1, 1, 1, tzinfo=east)}}),
            lambda: items.query({"attributes": "x"}),
            lambda: items.query({"attributes": {"$in": [[1]]}}),
            lambda: items.query({"price": {"$gt": None}}),
            lambda: items.query({"active": {"$lt": True}}),
            lambda: items.count({"name": {"$gte": False}}),
        ):
            with pytest.raises(QueryError) as caught:
                call()
            assert caught.value.store is None
        with pytest.raises(PayloadValidationError, match="created_at"):
            items.put(item(2, created_at=datetime(1, 1, 1, tzinfo=east)))
        assert ids(items.query({"discontinued_at": None})) == ["0"]
        assert ids(items.query({"discontinued_at": {"$in": [None, T0]}}, order_by="item_id")) == [
            "0",
            "i001",
        ]
        assert ids(items.query({"attributes": {"$exists": True}, "price": 1})) == ["i001"]
        assert items.query({"attributes": {"$in": []}}) == []  # PostgreSQL failed on json = ?
        assert ids(items.query({"discontinued_at": {"$in": [None]}})) == ["0"]
        assert items.get("0") is not None and ledger.get(("a", 1)) is not None

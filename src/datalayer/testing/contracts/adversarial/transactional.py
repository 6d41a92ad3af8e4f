"""The transactional adversarial suite: hostile rows, keys, filters, sorts, limits and tables."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from datalayer import DataLayer
from datalayer.categories.transactional import TransactionalTable
from datalayer.testing.contracts.adversarial.base import AdversarialContract, IdentifierCase
from datalayer.testing.contracts.adversarial.corpus import (
    HOSTILE_LIMITS,
    HOSTILE_SORTS,
    hostile_text,
    hostile_values,
    operator_injections,
)
from datalayer.testing.contracts.adversarial.outcomes import (
    Outcome,
    Tally,
    assert_equal,
    assert_same,
    shown,
)
from datalayer.testing.contracts.adversarial.reference import (
    Either,
    Refuse,
    kind,
    limit_refused,
    matches,
    parse_filter,
    sort_order,
    text_ok,
)
from datalayer.testing.contracts.base import OpenLayer
from datalayer.testing.contracts.schemas import Item

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ITEM = "datalayer.testing.contracts.schemas:Item"
PATTERNS: dict[str, Any] = {
    "items": {"table": "items", "key": "item_id", "schema": ITEM, "indexes": ["name"]},
    "other": {"table": "other", "key": "item_id", "schema": ITEM},
    "ledger": {
        "table": "ledger",
        "key": ["account_id", "entry_no"],
        "schema": "datalayer.testing.contracts.schemas:Ledger",
    },
}
#: Bytes of text every store keeps in a key or an indexed column (PostgreSQL's btree refuses
#: an entry past about a third of a page).
INDEXED_TEXT = 2_000
#: What each column of ``Item`` compares with in a filter (json: None and $exists only).
COLUMN_KINDS = {
    "item_id": "text",
    "name": "text",
    "tier": "text",
    "price": "number",
    "quantity": "number",
    "active": "bool",
    "created_at": "datetime",
    "discontinued_at": "datetime",
    "attributes": "json",
}
COLUMNS = (
    "item_id",
    "name",
    "tier",
    "price",
    "quantity",
    "active",
    "created_at",
    "discontinued_at",
    "attributes",
)


def row(i: Any, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "item_id": f"r{i}",
        "name": f"item {i}",
        "price": 1.5,
        "quantity": 1,
        "created_at": T0,
    }
    base.update(overrides)
    return base


def _storable(value: Any) -> Any:
    """A validated value as every store keeps it, or ``Refuse``: no NUL or lone surrogate, no
    integer past 64 bits, no NaN or infinity; datetimes as aware UTC instants."""
    if isinstance(value, str):
        if not text_ok(value):
            raise Refuse("text")
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise Refuse("integer past 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise Refuse("not finite")
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError as exc:
            raise Refuse("no UTC instant") from exc
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    return value


def expected_row(data: dict[str, Any]) -> dict[str, Any]:
    """The row a store reads back for ``data``, or ``Refuse``."""
    try:
        model = Item.model_validate(data)
    except ValidationError as exc:
        raise Refuse(str(exc)) from exc
    return {k: _storable(v) for k, v in model.model_dump().items()}


def check_kinds(conditions: list[tuple[str, str, Any]]) -> None:
    """Refuse a filter value not of its column's kind (a JSON column compares with None and
    ``$exists`` only)."""
    for column, op, value in conditions:
        if column not in COLUMN_KINDS:
            raise Refuse(f"no column {column!r}")
        if op == "$exists":
            continue
        for v in value if op == "$in" else [value]:
            if v is not None and (
                COLUMN_KINDS[column] == "json" or kind(v) != COLUMN_KINDS[column]
            ):
                raise Refuse(f"{kind(v)} for a {COLUMN_KINDS[column]} column")


class TransactionalAdversarial(AdversarialContract):
    """Every row reads back as its schema's model (datetimes as UTC instants) under its own
    key; filters, sorts and limits are bound, never spliced, and compare a column with values
    of its kind only; what the contract refuses is ``PayloadValidationError`` or
    ``QueryError`` with nothing written."""

    category = "transactional"

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        dl = open_layer(PATTERNS)
        dl.transactional("other").put(row("sentinel"))
        return dl

    def finish(self, tally: Tally, dl: DataLayer, marker: str) -> None:
        other = dl.transactional("other")
        if other.count() != 1 or other.get("rsentinel") != expected_row(row("sentinel")):
            tally.violation("another pattern's rows changed")
        tables = {dl.transactional(p).pattern.table for p in PATTERNS}
        missing = tables - self.store_objects(dl)
        if missing:
            tally.violation(f"tables disappeared: {sorted(missing)}")
        self.check_nothing_foreign(tally, dl, marker, lambda name: name in tables)
        tally.finish()

    @staticmethod
    def try_put(tally: Tally, items: TransactionalTable, label: str, data: dict[str, Any]) -> bool:
        """``put``: accepted, the row reads back as expected and the count grew by one;
        refused, the count did not change. Text past what a store indexes (PostgreSQL's btree
        takes a few kilobytes) in the key or the indexed ``name`` may be refused."""
        try:
            expected: Any = expected_row(data)
            outcome: Outcome = "round trip"
            indexed = [expected["item_id"], expected["name"]]
            if any(isinstance(v, str) and len(v.encode()) > INDEXED_TEXT for v in indexed):
                outcome = "either"
        except Refuse:
            expected, outcome = None, "refused"
        before = items.count()

        def check(_: Any) -> None:
            assert_same(items.get(expected["item_id"]), expected)
            assert items.count() == before + 1, "count"

        def unchanged() -> None:
            assert items.count() == before, "count changed"

        return tally.attempt(
            label, lambda: items.put(data), check=check, unchanged=unchanged, outcome=outcome
        )

    def test_values(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Every hostile value in every column (and as a JSON column's key); each text then
        found by equality with exactly the rows holding it; a batch with one bad row writes
        nothing."""
        items = dl.transactional("items")
        texts = hostile_text(marker, items.pattern.table)
        names: dict[str, str] = {}
        n = 0
        for label, value in [*texts, *hostile_values()]:
            for column in COLUMNS:
                n += 1
                data = row(n, **{column: value})
                if column == "attributes":
                    as_key = isinstance(value, str | int | float | bool | None) and n % 2
                    data = row(n, attributes={value: "v"} if as_key else {"k": value})
                if self.try_put(tally, items, f"{column} {label}", data) and column == "name":
                    names[str(data["item_id"])] = str(items.get(data["item_id"])["name"])  # type: ignore[index]
        before = items.count()
        tally.attempt(
            "put_many with one bad row",
            lambda: items.put_many([row(f"b{i}", name=text) for i, (_, text) in enumerate(texts)]),
            unchanged=lambda: assert_equal(items.count(), before),
            outcome="refused",
        )
        for value in set(names.values()):
            wanted = sorted(k for k, v in names.items() if v == value)
            self.try_query(tally, items, {"name": value}, wanted, only=set(names))
        self.finish(tally, dl, marker)

    @staticmethod
    def try_query(
        tally: Tally,
        items: TransactionalTable,
        where: Any,
        wanted: Any,
        outcome: Outcome = "round trip",
        only: set[str] | None = None,
    ) -> None:
        def found() -> list[Any]:
            ids = [r["item_id"] for r in items.query(where)]
            return sorted(i for i in ids if only is None or i in only)

        tally.attempt(
            f"query {shown(where)}",
            found,
            check=lambda ids: assert_equal(ids, wanted),
            outcome=outcome,
        )

    def test_keys(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile keys to ``put``, ``get`` and ``delete``, single and composite: the row
        asked for, or None, or ``QueryError``; never another row."""
        items, ledger = dl.transactional("items"), dl.transactional("ledger")
        texts = hostile_text(marker, items.pattern.table)
        kept: dict[str, int] = {}
        for i, (label, key) in enumerate(texts):
            if self.try_put(tally, items, f"key {label}", row(i, item_id=key, quantity=i)):
                kept[key] = i
        for key, value in kept.items():
            found = items.get(key)
            if found is None or found["quantity"] != value:
                tally.violation(f"key {shown(key)} reads {shown(found)}")
        count = items.count()
        for label, key in [
            *texts,
            *hostile_values(),
            ("empty-tuple", ()),
            ("two", ("a", "b")),
            ("dict-missing", {"x": 1}),
        ]:
            missing = f"{key}-missing" if isinstance(key, str) else key
            self.try_missing(tally, items, label, missing)
        ledger.put({"account_id": "a", "entry_no": 1, "amount": 1.0})
        composite: list[tuple[str, Any, Outcome]] = [
            ("tuple", ("a", 1), "round trip"),
            ("list", ["a", 1], "round trip"),
            ("mapping", {"account_id": "a", "entry_no": 1}, "round trip"),
            ("one-value", "a", "refused"),
            ("three-values", ("a", 1, 2), "refused"),
            ("mapping-missing", {"account_id": "a"}, "refused"),
            ("huge-entry", ("a", 2**63), "refused"),
            ("surrogate", ("\ud800", 1), "refused"),
            ("text-entry", ("a", "1"), "refused"),
            ("float-entry", ("a", 1.0), "round trip"),
            ("bool-entry", ("a", True), "refused"),
            ("none-entry", ("a", None), "refused"),
            ("injection", ("a' OR '1'='1", 1), "round trip"),
            ("none", None, "refused"),
        ]
        for label, key, outcome in composite:
            hit = label in ("tuple", "list", "mapping", "float-entry")
            self.try_ledger(tally, ledger, label, key, outcome, hit)
        if items.count() != count or ledger.count() != 1:
            tally.violation("a get or delete of a missing key changed a table")
        self.finish(tally, dl, marker)

    @staticmethod
    def try_missing(tally: Tally, items: TransactionalTable, label: str, key: Any) -> None:
        """A key no row has: None and False for text keys, ``QueryError`` for what a text
        column never holds."""
        outcome: Outcome = "round trip" if isinstance(key, str) and text_ok(key) else "refused"
        tally.attempt(
            f"get {label}",
            lambda: items.get(key),
            check=lambda found: assert_equal(found, None),
            outcome=outcome,
        )
        tally.attempt(
            f"delete {label}",
            lambda: items.delete(key),
            check=lambda gone: assert_equal(gone, False),
            outcome=outcome,
        )

    @staticmethod
    def try_ledger(
        tally: Tally,
        ledger: TransactionalTable,
        label: str,
        key: Any,
        outcome: Outcome,
        found: bool,
    ) -> None:
        wanted = {"account_id": "a", "entry_no": 1, "amount": 1.0} if found else None
        tally.attempt(
            f"ledger get {label}",
            lambda: ledger.get(key),
            check=lambda got: assert_equal(got, wanted),
            outcome=outcome,
        )

    def seeded(self, dl: DataLayer) -> tuple[TransactionalTable, list[dict[str, Any]]]:
        items = dl.transactional("items")
        values = [("a", 1.0, 1), ("b", 2.5, 2), ("1", 0.0, 3), ("", 10.0, 0), ("true", 3.0, -1)]
        items.put_many(
            [
                row(
                    i,
                    name=name,
                    price=price,
                    quantity=qty,
                    active=i % 2 == 0,
                    tier="abc"[i % 3],
                    created_at=T0 + timedelta(hours=i),
                    discontinued_at=T0 if i == 2 else None,
                )
                for i, (name, price, qty) in enumerate(values)
            ]
        )
        rows = [items.get(f"r{i}") for i in range(len(values))]
        return items, [r for r in rows if r is not None]

    def test_filters(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Operator injection on every column kind, values of the wrong kind, unknown columns:
        ``QueryError``; otherwise the rows the reference semantics match."""
        items, rows = self.seeded(dl)
        filters: list[Any] = []
        for where in operator_injections(marker):  # each on every column kind
            if isinstance(where, dict) and "v" in where:
                filters += [
                    {c: where["v"]}
                    for c in ("name", "price", "quantity", "active", "created_at", "attributes")
                ]
            else:
                filters.append(where)
        filters += [{"name": text} for _, text in hostile_text(marker, items.pattern.table)]
        filters += [{"created_at": v} for _, v in hostile_values() if not isinstance(v, dict)]
        filters += [
            {"created_at": {"$gte": T0 + timedelta(hours=2)}},
            {"created_at": {"$lt": "2026-03-01T14:00:00Z"}},
            {"created_at": date(2026, 3, 1)},
            {"discontinued_at": {"$in": [None, T0]}},
            {"discontinued_at": {"$exists": False}},
            {"item_id": {"$in": ["r1", "r3", "nope"]}},
            {"nope": 1},
        ]
        for where in filters:
            try:
                try:
                    conditions = parse_filter(where)
                except Either as exc:
                    raise Refuse("no column holds it") from exc
                check_kinds(conditions)
                wanted: Any = sorted(
                    r["item_id"] for r in rows if matches(r, conditions, null_exists=False)
                )
                outcome: Outcome = "round trip"
            except Refuse:
                wanted, outcome = None, "refused"
            self.try_query(tally, items, where, wanted, outcome)
        if items.count() != len(rows):
            tally.violation("a filter changed the table")
        self.finish(tally, dl, marker)

    def test_sorts(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile ``order_by`` (``v`` read as ``quantity``, ``n`` as ``price``): refused, or
        the rows in the reference order."""
        items, rows = self.seeded(dl)
        for sort in [*HOSTILE_SORTS, ["tier", "-quantity"], "-discontinued_at"]:
            spec = _on_columns(sort)
            try:
                wanted: Any = sort_order(rows, spec, "item_id", set(COLUMN_KINDS))
                outcome: Outcome = "round trip"
            except Refuse:
                wanted, outcome = None, "refused"
            self.try_order(tally, items, spec, wanted, outcome)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_order(
        tally: Tally, items: TransactionalTable, spec: Any, wanted: Any, outcome: Outcome
    ) -> None:
        def check(ids: Any) -> None:
            if spec is None:  # no order asked: the same rows in any order
                assert_equal(sorted(ids), sorted(wanted))
            else:
                assert_equal(ids, wanted)

        tally.attempt(
            f"order_by {shown(spec)}",
            lambda: [r["item_id"] for r in items.query(order_by=spec)],
            check=check,
            outcome=outcome,
        )

    def test_limits(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile limits: a positive 64-bit integer cuts the ordered result, anything else is
        refused."""
        items, rows = self.seeded(dl)
        full = sort_order(rows, "quantity", "item_id", set(COLUMN_KINDS))
        for limit in HOSTILE_LIMITS:
            self.try_limit(tally, items, limit, full)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_limit(tally: Tally, items: TransactionalTable, limit: Any, full: list[Any]) -> None:
        tally.attempt(
            f"limit {shown(limit)}",
            lambda: [r["item_id"] for r in items.query(order_by="quantity", limit=limit)],
            check=lambda ids: assert_equal(ids, full[:limit]),
            outcome="refused" if limit_refused(limit) else "round trip",
        )

    # -- identifiers -------------------------------------------------------------------------

    def identifier_cases(self, marker: str) -> list[IdentifierCase]:
        tables: list[tuple[str, Any, Outcome]] = [
            ("table-drop", f"t_{marker}; DROP TABLE x", "refused"),
            ("table-quote", f't_{marker}"', "refused"),
            ("table-schema-qualified", f"public.t_{marker}", "refused"),
            ("table-pg-catalog", "pg_authid", "refused"),
            ("table-pg-upper", "PG_SHADOW", "refused"),
            ("table-sqlite", "sqlite_master", "refused"),
            ("table-information-schema", "information_schema", "refused"),
            ("table-alembic", "alembic_version", "refused"),
            ("table-accent", f"t_{marker}\u00e9", "refused"),
            ("table-dash", f"t-{marker}", "refused"),
            ("table-64", "t" + marker + "x" * 64, "refused"),
            ("table-digit-first", f"1{marker}", "refused"),
            ("table-newline", f"t_{marker}\n", "refused"),
            ("table-empty", "", "refused"),
            ("table-int", 7, "refused"),
            ("table-plain", f"t_{marker}", "round trip"),
            ("table-mixed-case", f"T_{marker}_Mixed", "round trip"),
            ("table-keyword", f"select_{marker}", "round trip"),
        ]
        cases: list[IdentifierCase] = [
            (label, f"t{i}{marker}", {"table": table, "key": "item_id", "schema": ITEM}, out)
            for i, (label, table, out) in enumerate(tables)
        ]
        bad: list[tuple[str, dict[str, Any]]] = [
            ("key-injection", {"key": "item_id; DROP"}),
            ("key-unknown", {"key": "nope"}),
            ("key-empty-list", {"key": []}),
            ("key-int", {"key": 5}),
            ("key-dotted", {"key": "a.b"}),
            ("index-injection", {"indexes": ["name; DROP"]}),
            ("index-unknown", {"indexes": ["nope"]}),
            ("index-desc", {"indexes": ["-name"]}),
            ("index-text", {"indexes": "name"}),
            ("schema-not-a-model", {"schema": "os:path"}),
            ("schema-missing", {"schema": "no.such:Thing"}),
        ]
        cases += [
            (
                label,
                f"k{i}{marker}",
                {"table": f"k{i}_{marker}", "key": "item_id", "schema": ITEM, **spec},
                "refused",
            )
            for i, (label, spec) in enumerate(bad)
        ]
        return cases + self.pattern_names(
            marker, lambda table: {"table": table, "key": "item_id", "schema": ITEM}
        )

    def identifier_probe(self, dl: DataLayer, name: str, spec: dict[str, Any]) -> None:
        table = dl.transactional(name)
        table.put(row(1, name=name))
        assert table.get("r1") == expected_row(row(1, name=name))
        assert spec["table"] in self.store_objects(dl)

    def identifier_target(self, name: str, spec: dict[str, Any]) -> str:
        return str(spec["table"])

    def owns(self, name: str, targets: set[str]) -> bool:
        return name in targets


def _on_columns(sort: Any) -> Any:
    """A hostile sort on ``v`` and ``n`` as one on ``quantity`` and ``price``."""

    def rename(item: Any) -> Any:
        if not isinstance(item, str):
            return item
        descending, name = item.startswith("-"), item.removeprefix("-")
        name = {"v": "quantity", "n": "price"}.get(name, name)
        return f"-{name}" if descending else name

    if isinstance(sort, list):
        return [rename(item) for item in sort]
    if isinstance(sort, tuple):
        return tuple(rename(item) for item in sort)
    return rename(sort)

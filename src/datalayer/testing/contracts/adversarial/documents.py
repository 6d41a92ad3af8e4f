"""The document adversarial suite: hostile values, field names, keys, filters, sorts, limits,
updates and collections."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from datalayer import DataLayer
from datalayer.categories.document import DocumentCollection
from datalayer.testing.contracts.adversarial.base import AdversarialContract, IdentifierCase
from datalayer.testing.contracts.adversarial.corpus import (
    HOSTILE_LIMITS,
    HOSTILE_SORTS,
    hostile_text,
    hostile_values,
    nested,
    operator_injections,
)
from datalayer.testing.contracts.adversarial.outcomes import (
    Outcome,
    Tally,
    assert_equal,
    assert_same,
    same,
    shown,
)
from datalayer.testing.contracts.adversarial.reference import (
    FIELD_PATH,
    MAX_DOCUMENT_DEPTH,
    Either,
    Refuse,
    at_path,
    expected_document,
    limit_refused,
    matches,
    parse_filter,
    sort_order,
    text_ok,
)
from datalayer.testing.contracts.base import OpenLayer
from datalayer.testing.contracts.schemas import Note

PATTERNS: dict[str, Any] = {
    "free": {"collection": "free", "key": "id"},
    "notes": {
        "collection": "notes",
        "key": "note_id",
        "schema": "datalayer.testing.contracts.schemas:Note",
        "indexes": ["author", "-score"],
    },
    "other": {"collection": "other", "key": "id"},
}
OTHER = {"id": "sentinel", "v": "kept", "n": {"x": 1}}


def seed_documents() -> list[dict[str, Any]]:
    """Documents holding every type a filter may meet, one field ``v`` each."""
    values: list[Any] = [1, 2, 3, 2.5, -1, "a", "b", "1", "true", "", True, False, None]
    docs: list[dict[str, Any]] = [
        {"id": f"s{i:02d}", "v": v, "n": {"x": i % 3}} for i, v in enumerate(values)
    ]
    docs.append({"id": "s-missing", "n": {}})
    docs.append({"id": "s-object", "v": {"w": 1}, "n": {"x": None}})
    return docs


def expect(doc: dict[str, Any], schema: type[BaseModel] | None = None) -> tuple[Any, Outcome]:
    """What ``put(doc)`` must read back, and whether it must be kept or refused."""
    try:
        if schema is not None:
            doc = schema.model_validate(doc).model_dump()
        return expected_document(doc), "round trip"
    except (Refuse, ValidationError):
        return None, "refused"
    except Either:
        return None, "either"


class DocumentAdversarial(AdversarialContract):
    """Every document reads back in the contract's stored form under its own key; filters are
    translated, never evaluated, and match by the reference semantics on every store; what
    the contract refuses is ``PayloadValidationError`` or ``QueryError`` with nothing
    written."""

    category = "document"

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        self.kept: dict[str, set[str]] = {}
        dl = open_layer(PATTERNS)
        dl.documents("other").put(OTHER)
        return dl

    def counted(self, tally: Tally, collection: DocumentCollection) -> None:
        """The collection holds the documents accepted, no more."""
        wanted = len(self.kept.get(collection.pattern.name, set()))
        if collection.count() != wanted:
            tally.violation(f"{collection.pattern.name} holds {collection.count()}, not {wanted}")

    def finish(self, tally: Tally, dl: DataLayer, marker: str) -> None:
        other = dl.documents("other")
        if other.count() != 1 or not same(other.get("sentinel"), OTHER):
            tally.violation("another pattern's documents changed")
        own = [dl.documents(p).pattern.collection for p in PATTERNS]
        self.check_nothing_foreign(tally, dl, marker, lambda name: any(c in name for c in own))
        tally.finish()

    def try_put(
        self,
        tally: Tally,
        collection: DocumentCollection,
        label: str,
        doc: Any,
        expected: Any,
        outcome: Outcome,
    ) -> bool:
        """``put``: accepted, it returns the key and the document reads back ``expected``
        (``get`` of the key given finds the same); refused, no document has the key. Each
        test then checks ``counted``: the collection holds the accepted documents, no more."""
        key = doc.get(collection.pattern.key) if isinstance(doc, dict) else None
        asked = isinstance(key, str) and text_ok(key) and key != ""

        def check(returned: Any) -> None:
            found = collection.get(returned)
            assert_same(found, expected)
            assert collection.get(key) == found, f"get({shown(key)}) finds another document"
            self.keep(collection, returned, found)

        def unchanged() -> None:
            assert not asked or collection.get(key) is None, "a document has the key"

        if outcome == "either":
            return tally.attempt(label, lambda: collection.put(doc), check=self.is_json(collection))
        return tally.attempt(
            label, lambda: collection.put(doc), check=check, unchanged=unchanged, outcome=outcome
        )

    def is_json(self, collection: DocumentCollection) -> Any:
        def check(returned: Any) -> None:
            found = collection.get(returned)
            assert found is not None, "put returned a key no document has"
            json.dumps(found, allow_nan=False)
            self.keep(collection, returned, found)

        return check

    def keep(self, collection: DocumentCollection, key: str, found: Any) -> None:
        """Count an accepted document; delete one of over 100 kB once read back (a megabyte
        that every later filter scans, on a store without indexes such as FerretDB's, makes
        them time out)."""
        if len(json.dumps(found, default=str)) > 100_000:
            collection.delete(key)
        else:
            self.kept.setdefault(collection.pattern.name, set()).add(key)

    def test_values(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Every hostile value in a free-form field and in each field of a schema; then each
        stored scalar is found by equality with exactly the documents holding it."""
        free, notes = dl.documents("free"), dl.documents("notes")
        stored: dict[str, Any] = {}
        corpus = [*hostile_text(marker), *hostile_values()]
        for i, (label, value) in enumerate(corpus):
            doc = {"id": f"v{i}", "v": value}
            expected, outcome = expect(doc)
            kept = self.try_put(tally, free, f"value {label}", doc, expected, outcome)
            if kept and expected and doc["id"] in self.kept["free"]:
                stored[doc["id"]] = expected["v"]
            for name, note in (
                ("author", {"note_id": f"a{i}", "author": value, "score": 1}),
                ("score", {"note_id": f"s{i}", "author": "x", "score": value}),
                ("tags", {"note_id": f"t{i}", "author": "x", "score": 1, "tags": [value]}),
                ("meta", {"note_id": f"m{i}", "author": "x", "score": 1, "meta": {"k": value}}),
                ("created", {"note_id": f"c{i}", "author": "x", "score": 1, "created_at": value}),
            ):
                expected, outcome = expect(note, Note)
                self.try_put(tally, notes, f"note {name} {label}", note, expected, outcome)
        self.counted(tally, free)
        self.counted(tally, notes)
        for value in stored.values():
            if not isinstance(value, dict | list):
                wanted = sorted(
                    k for k, v in stored.items() if matches({"v": v}, [("v", "$eq", value)])
                )
                self.try_find(tally, free, {"v": value}, wanted, "round trip", only=set(stored))
        self.finish(tally, dl, marker)

    @staticmethod
    def try_find(
        tally: Tally,
        collection: DocumentCollection,
        where: Any,
        wanted: Any,
        outcome: Outcome,
        only: set[str] | None = None,
    ) -> None:
        """``find`` and ``count`` of ``where`` give the documents ``wanted`` (among ``only``)."""

        def found() -> list[Any]:
            ids = [d[collection.pattern.key] for d in collection.find(where)]
            return sorted(i for i in ids if only is None or i in only)

        label = f"find {shown(where)}"
        if outcome == "either":
            tally.attempt(label, found)
            return
        tally.attempt(label, found, check=lambda ids: assert_equal(ids, wanted), outcome=outcome)
        if only is None:
            tally.attempt(
                f"count {shown(where)}",
                lambda: collection.count(where),
                check=lambda n: assert_equal(n, len(wanted)),
                outcome=outcome,
            )

    def test_field_names(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile field names at the top and nested in ``put``, and as paths in ``update``
        and ``find``."""
        free = dl.documents("free")
        names: list[tuple[str, Any]] = [
            *hostile_text(marker),
            ("dollar-gt", "$gt"),
            ("dollar", "$"),
            ("id-field", "_id"),
            ("dot", "."),
            ("int", 5),
            ("none", None),
            ("bool", True),
            ("bytes", b"x"),
            ("tuple", ("a",)),
        ]
        for i, (label, name) in enumerate(names):
            if name != "id":
                top = {"id": f"f{i}", name: "x"}
                self.try_put(tally, free, f"top field {label}", top, *expect(top))
            inner = {"id": f"g{i}", "n": {name: "x"}}
            self.try_put(tally, free, f"nested field {label}", inner, *expect(inner))
        self.counted(tally, free)
        free.put({"id": "u", "v": 1})
        for label, name in names:
            self.try_update_path(tally, free, label, name)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_update_path(tally: Tally, free: DocumentCollection, label: str, name: Any) -> None:
        is_path = isinstance(name, str) and bool(FIELD_PATH.fullmatch(name))
        top = name.split(".")[0] if is_path else None
        before = free.get("u")

        def changed(result: Any) -> None:
            assert result is True and at_path(free.get("u") or {}, name) == "y"

        tally.attempt(
            f"update set {label}",
            lambda: free.update("u", set={name: "y"}),
            check=changed,
            unchanged=lambda: assert_same(free.get("u"), before),
            outcome="round trip" if is_path and top not in ("id", "_id") else "refused",
        )

        def wanted(found: Any) -> None:
            ids = sorted(d["id"] for d in found)
            assert_equal(ids, sorted(d["id"] for d in free.find() if at_path(d, name) == "y"))

        tally.attempt(
            f"find field {label}",
            lambda: free.find({name: "y"}),
            check=wanted,
            outcome="round trip" if is_path and top != "_id" else "refused",
        )

    def test_keys(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile keys: each document under its own key (normalisation pairs stay apart);
        ``get`` and ``delete`` of hostile keys never reach another document."""
        free = dl.documents("free")
        kept: dict[Any, int] = {}
        corpus: list[tuple[str, Any]] = [
            *hostile_text(marker),
            ("int", 5),
            ("huge-int", 2**70),
            ("float", 1.5),
            ("bool", False),
            ("none", None),
            ("tuple", ("a",)),
            ("dict", {"a": 1}),
            ("list", [1]),
        ]
        for i, (label, key) in enumerate(corpus):
            doc = {"id": key, "v": i}
            expected, outcome = expect(doc)
            if key in (None, "") or isinstance(key, dict | list | tuple):
                expected, outcome = None, "refused"
            put = self.try_put(tally, free, f"key {label}", doc, expected, outcome)
            if put and free.key_text(key) in self.kept["free"]:
                kept[key] = i
        for key, value in kept.items():
            found = free.get(key)
            if found is None or found.get("v") != value:
                tally.violation(f"key {shown(key)} reads {shown(found)}")
        self.counted(tally, free)
        count = free.count()
        for label, key in [*hostile_text(marker), ("none", None), ("list", [1])]:
            missing = f"{key}-missing" if isinstance(key, str) else key
            ok = isinstance(key, str) and text_ok(key)
            self.try_missing(tally, free, label, missing, "round trip" if ok else "refused")
        if free.count() != count:
            tally.violation("a get or delete of a missing key changed the collection")
        self.finish(tally, dl, marker)

    @staticmethod
    def try_missing(
        tally: Tally, free: DocumentCollection, label: str, key: Any, outcome: Outcome
    ) -> None:
        """``get`` and ``delete`` of a key no document has: None and False, or refused."""
        tally.attempt(
            f"get {label}",
            lambda: free.get(key),
            check=lambda found: assert_equal(found, None),
            outcome=outcome,
        )
        tally.attempt(
            f"delete {label}",
            lambda: free.delete(key),
            check=lambda gone: assert_equal(gone, False),
            outcome=outcome,
        )

    def test_filters(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Operator injection and hostile filter values: ``QueryError``, or the documents the
        reference semantics match (values of one type compare; a bool is no number, an object
        no text), the same on every store."""
        free = dl.documents("free")
        docs = seed_documents()
        for doc in docs:
            free.put(doc)
        filters = [*operator_injections(marker), *({"v": v} for _, v in hostile_text(marker))]
        for where in filters:
            try:
                conditions = parse_filter(where)
                if any(name.split(".")[0] == "_id" for name, _, _ in conditions):
                    raise Refuse("_id is MongoDB's own key")
                if any(isinstance(v, Decimal) for _, _, v in conditions):
                    raise Refuse("documents keep decimals as text: no filter compares one")
                wanted: Any = sorted(d["id"] for d in docs if matches(d, conditions))
                outcome: Outcome = "round trip"
            except Refuse:
                wanted, outcome = None, "refused"
            except Either:
                wanted, outcome = None, "either"
            self.try_find(tally, free, where, wanted, outcome)
        if free.count() != len(docs):
            tally.violation("a filter changed the collection")
        self.finish(tally, dl, marker)

    def test_sorts(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile sorts over numbers and missing fields: refused, or the reference order."""
        free = dl.documents("free")
        docs: list[dict[str, Any]] = [
            {"id": f"o{i}", "v": v, "n": i % 2} for i, v in enumerate([3, 1, 2, 5, 4])
        ]
        docs += [{"id": "o-missing", "n": 0}, {"id": "o-tie", "v": 3, "n": 1}]
        for doc in docs:
            free.put(doc)
        for sort in HOSTILE_SORTS:
            try:
                wanted: Any = sort_order(docs, sort, "id")
                outcome: Outcome = "round trip"
            except Refuse:
                wanted, outcome = None, "refused"
            self.try_sort(tally, free, sort, wanted, outcome)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_sort(
        tally: Tally, free: DocumentCollection, sort: Any, wanted: Any, outcome: Outcome
    ) -> None:
        tally.attempt(
            f"sort {shown(sort)}",
            lambda: [d["id"] for d in free.find(sort=sort)],
            check=lambda ids: assert_equal(ids, wanted),
            outcome=outcome,
        )

    def test_limits(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile limits: a positive 64-bit integer cuts the sorted result, anything else is
        refused."""
        free = dl.documents("free")
        for i in range(5):
            free.put({"id": f"l{i}", "v": i})
        for limit in HOSTILE_LIMITS:
            self.try_limit(tally, free, limit, [f"l{i}" for i in range(5)])
        self.finish(tally, dl, marker)

    @staticmethod
    def try_limit(tally: Tally, free: DocumentCollection, limit: Any, full: list[str]) -> None:
        tally.attempt(
            f"limit {shown(limit)}",
            lambda: [d["id"] for d in free.find(sort="v", limit=limit)],
            check=lambda ids: assert_equal(ids, full[:limit]),
            outcome="refused" if limit_refused(limit) else "round trip",
        )

    def test_updates(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile partial updates: applied exactly, or refused with the document as it was."""
        free = dl.documents("free")
        base: dict[str, Any] = {"id": "u", "v": 1, "list": [1], "n": {"x": 1}}
        too_deep = nested(MAX_DOCUMENT_DEPTH + 5)
        cases: list[tuple[str, dict[str, Any], Any]] = [
            ("set-operator-path", {"set": {"$where": 1}}, None),
            ("set-positional", {"set": {"list.$": 2}}, None),
            ("set-dotted-dollar", {"set": {"n.$x": 2}}, None),
            ("set-id", {"set": {"_id": "x"}}, None),
            ("unset-id", {"unset": ["_id"]}, None),
            ("set-key", {"set": {"id": "other"}}, None),
            ("set-operator-value", {"set": {"v": {"$gt": 1}}}, None),
            ("set-surrogate", {"set": {"v": "\ud800"}}, None),
            ("set-nul", {"set": {"v": "a\x00b"}}, None),
            ("set-inf", {"set": {"v": math.inf}}, None),
            ("set-huge", {"set": {"v": 2**64}}, None),
            ("set-deep", {"set": {"v": too_deep}}, None),
            ("set-text", {"set": "abc"}, None),
            ("set-list", {"set": [("v", 2)]}, None),
            ("set-int-path", {"set": {5: 2}}, None),
            ("unset-text", {"unset": "vn"}, None),
            ("unset-dict", {"unset": {"v": 1}}, None),
            ("push-text", {"push": "v"}, None),
            ("push-to-number", {"push": {"v": 2}}, None),
            ("inc-bool", {"inc": {"v": True}}, None),
            ("inc-text", {"inc": {"v": "1"}}, None),
            ("inc-huge", {"inc": {"v": 2**63}}, None),
            ("inc-nan", {"inc": {"v": math.nan}}, None),
            ("inc-text-field", {"inc": "v"}, None),
            ("same-path-twice", {"set": {"v": 2}, "unset": ["v"]}, None),
            ("parent-and-child", {"set": {"n": {}, "n.x": 2}}, None),
            ("empty", {}, None),
            (
                "set-hostile-text",
                {"set": {"v": "'; DROP TABLE x; --"}},
                {**base, "v": "'; DROP TABLE x; --"},
            ),
            (
                "set-proto",
                {"set": {"__proto__": {"admin": True}}},
                {**base, "__proto__": {"admin": True}},
            ),
            ("set-nested-new", {"set": {"a.b.c": 1}}, {**base, "a": {"b": {"c": 1}}}),
            ("push-hostile", {"push": {"list": "\u202e"}}, {**base, "list": [1, "\u202e"]}),
            ("inc-negative", {"inc": {"v": -(2**62)}}, {**base, "v": 1 - 2**62}),
            ("unset-missing", {"unset": ["nope"]}, base),
        ]
        for label, update, expected in cases:
            free.put(base)
            self.try_update(tally, free, label, update, expected, base)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_update(
        tally: Tally,
        free: DocumentCollection,
        label: str,
        update: dict[str, Any],
        expected: Any,
        base: dict[str, Any],
    ) -> None:
        def check(result: Any) -> None:
            assert result is True
            assert_same(free.get("u"), expected)

        tally.attempt(
            f"update {label}",
            lambda: free.update("u", **update),
            check=check,
            unchanged=lambda: assert_same(free.get("u"), base),
            outcome="refused" if expected is None else "round trip",
        )

    # -- identifiers -------------------------------------------------------------------------

    def identifier_cases(self, marker: str) -> list[IdentifierCase]:
        collections: list[tuple[str, Any, Outcome]] = [
            ("collection-system", "system", "refused"),
            ("collection-system-upper", "SYSTEM", "refused"),
            ("collection-dotted", f"system.{marker}", "refused"),
            ("collection-dollar", f"{marker}$cmd", "refused"),
            ("collection-space", f"{marker} x", "refused"),
            ("collection-quote", f'{marker}"; DROP TABLE x; --', "refused"),
            ("collection-accent", f"{marker}\u00e9", "refused"),
            ("collection-nul", f"{marker}\x00", "refused"),
            ("collection-newline", f"{marker}\n", "refused"),
            ("collection-64", marker + "c" * 64, "refused"),
            ("collection-empty", "", "refused"),
            ("collection-int", 7, "refused"),
            ("collection-plain", f"c_{marker}", "round trip"),
            ("collection-upper", f"C_{marker}_X", "round trip"),
        ]
        cases: list[IdentifierCase] = [
            (label, f"c{i}{marker}", {"collection": collection, "key": "id"}, out)
            for i, (label, collection, out) in enumerate(collections)
        ]
        bad: list[tuple[str, dict[str, Any]]] = [
            ("key-dollar", {"key": "$id"}),
            ("key-dotted", {"key": "a.b"}),
            ("key-space", {"key": "a b"}),
            ("key-empty", {"key": ""}),
            ("key-int", {"key": 3}),
            ("key-mongo-id", {"key": "_id"}),
            ("key-newline", {"key": "id\n"}),
            ("index-wildcard", {"indexes": ["$**"]}),
            ("index-positional", {"indexes": ["a.$"]}),
            ("index-dash", {"indexes": ["-"]}),
            ("index-double-dash", {"indexes": ["--a"]}),
            ("index-space", {"indexes": ["a b"]}),
            ("index-text", {"indexes": "author"}),
        ]
        cases += [
            (
                label,
                f"k{i}{marker}",
                {"collection": f"k{i}{marker}", "key": "id", **spec},
                "refused",
            )
            for i, (label, spec) in enumerate(bad)
        ]
        return cases + self.pattern_names(marker, lambda c: {"collection": c, "key": "id"})

    def identifier_probe(self, dl: DataLayer, name: str, spec: dict[str, Any]) -> None:
        collection = dl.documents(name)
        collection.put({"id": "k", "v": name})
        assert collection.get("k") == {"id": "k", "v": name}
        assert collection.pattern.collection == spec["collection"]

    def identifier_target(self, name: str, spec: dict[str, Any]) -> str:
        return str(spec["collection"])

    def owns(self, name: str, targets: set[str]) -> bool:
        """The embedded store keeps a collection in the table ``doc_<collection>``."""
        return name in targets or name.removeprefix("doc_") in targets

"""The document contract, subclassed to run against a document store type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from datalayer import DataLayer, NotApplied, PayloadValidationError, QueryError
from datalayer.testing.contracts.base import Contract, OpenLayer
from datalayer.testing.contracts.concurrency import run_together

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOTES = {
    "collection": "notes",
    "key": "note_id",
    "schema": "datalayer.testing.contracts.schemas:Note",
    "indexes": ["author", "-score"],
}
FREE = {"collection": "free", "key": "id"}
AMOUNTS = {
    "collection": "amounts",
    "key": "amount_id",
    "schema": "datalayer.testing.contracts.schemas:Amount",
}


def note(i: int, **overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "note_id": f"n{i:02d}",
        "author": ["ann", "bob", "cid"][i % 3],
        "score": i,
        "tags": ["even" if i % 2 == 0 else "odd"],
        "meta": {"source": {"kind": "import" if i < 5 else "user"}, "rank": i % 4},
        "created_at": (T0 + timedelta(days=i)).isoformat(),
    }
    doc.update(overrides)
    return doc


def ids(docs: list[dict[str, object]]) -> list[object]:
    return [d["note_id"] for d in docs]


def add_one_by_inc(dl: DataLayer, pattern: str, key: str, times: int) -> None:
    notes = dl.documents(pattern)
    for _ in range(times):
        assert notes.update(key, inc={"score": 1})


class DocumentContract(Contract):
    """The document contract: whole documents, partial updates, the filter language."""

    category = "document"
    #: Increments of one counter by each of 8 threads and 4 processes.
    increments = 200

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        return open_layer({"notes": NOTES, "free": FREE, "amounts": AMOUNTS})

    def test_put_get_delete(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        assert notes.put(note(1)) == "n01"
        stored = notes.get("n01")
        assert stored is not None
        assert stored["meta"] == {"source": {"kind": "import"}, "rank": 1}
        assert stored["created_at"].startswith("2026-03-02T00:00:00")
        assert notes.get("n99") is None
        assert notes.delete("n01") is True
        assert notes.delete("n01") is False
        assert notes.get("n01") is None

    def test_the_backend_scans_adds_and_deletes_if_for_rollouts(self, dl: DataLayer) -> None:
        """What a rollout's backfill and verify use: keys in the order of their text from a
        cursor, a write only where missing, a compare-and-delete."""
        notes = dl.documents("notes")
        for i in range(1, 12):
            notes.put(note(i))
        backend = notes.backend
        seen: list[str] = []
        keys, cursor = backend.scan("", 4)
        seen += keys
        while cursor:
            keys, cursor = backend.scan(cursor, 4)
            seen += keys
        assert seen == sorted(f"n{i:02d}" for i in range(1, 12))
        stored = notes.get("n01")
        assert stored is not None
        assert backend.add("n01", {**stored, "title": "other"}) is False
        assert notes.get("n01") == stored
        assert backend.add("n50", {**stored, "note_id": "n50"}) is True
        assert notes.get("n50") == {**stored, "note_id": "n50"}
        assert backend.delete_if("n50", stored) is False and notes.get("n50") is not None
        assert backend.delete_if("n50", {**stored, "note_id": "n50"}) is True
        assert notes.get("n50") is None

    def test_put_replaces_the_whole_document(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        notes.put(note(1, tags=["a", "b"]))
        notes.put(note(1, tags=[], author="zed"))
        stored = notes.get("n01")
        assert stored is not None and (stored["tags"], stored["author"]) == ([], "zed")
        assert notes.count() == 1

    def test_invalid_document_names_the_field_and_writes_nothing(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        with pytest.raises(PayloadValidationError, match="score"):
            notes.put(note(1, score=-1))
        assert notes.count() == 0

    def test_forbidden_field_names_are_refused(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        with pytest.raises(PayloadValidationError, match=r"\$where"):
            free.put({"id": "x", "$where": "1"})
        with pytest.raises(PayloadValidationError, match=r"nested\.a\.b"):
            free.put({"id": "x", "nested": {"a.b": 1}})
        with pytest.raises(PayloadValidationError, match="id"):
            free.put({"name": "no key"})
        assert free.count() == 0

    def test_partial_update_set_unset_push(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        notes.put(note(1))
        assert notes.update(
            "n01", set={"score": 50, "meta.source.kind": "edited"}, push={"tags": "pinned"}
        )
        assert notes.update("n01", unset=["meta.rank"])
        stored = notes.get("n01")
        assert stored is not None
        assert stored["score"] == 50
        assert stored["tags"] == ["odd", "pinned"]
        assert stored["meta"] == {"source": {"kind": "edited"}}
        assert notes.update("missing", set={"score": 1}) is False

    def test_update_that_breaks_the_schema_changes_nothing(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        notes.put(note(1))
        before = notes.get("n01")
        with pytest.raises(PayloadValidationError, match="score"):
            notes.update("n01", set={"score": -5})
        with pytest.raises(PayloadValidationError, match="note_id"):
            notes.update("n01", set={"note_id": "other"})
        with pytest.raises(QueryError):
            notes.update("n01")
        assert notes.get("n01") == before

    def test_find_with_every_operator(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        for i in range(10):
            notes.put(note(i))
        notes.put({"note_id": "n10", "author": "dee", "score": 10})
        assert ids(notes.find({"author": "bob"}, sort="note_id")) == ["n01", "n04", "n07"]
        assert ids(notes.find({"author": {"$in": ["ann", "dee"]}}, sort="-score")) == [
            "n10",
            "n09",
            "n06",
            "n03",
            "n00",
        ]
        assert ids(notes.find({"score": {"$gt": 3, "$lte": 6}}, sort="score")) == [
            "n04",
            "n05",
            "n06",
        ]
        assert ids(notes.find({"score": {"$gte": 8}}, sort="score")) == ["n08", "n09", "n10"]
        assert ids(notes.find({"score": {"$lt": 2}}, sort="score")) == ["n00", "n01"]
        assert ids(notes.find({"meta.source.kind": "user", "meta.rank": 1}, sort="score")) == [
            "n05",
            "n09",
        ]
        assert ids(notes.find({"created_at": None})) == ["n10"]
        assert len(notes.find({"meta.rank": {"$exists": True}})) == 10
        cutoff = T0 + timedelta(days=8)
        assert ids(notes.find({"created_at": {"$gte": cutoff}}, sort="score")) == ["n08", "n09"]
        assert notes.count({"author": "cid"}) == 3

    def test_exists_tells_missing_from_null(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        free.put({"id": "a", "x": 1})
        free.put({"id": "b", "x": None})
        free.put({"id": "c"})

        def keys(where: dict[str, object]) -> list[object]:
            return [d["id"] for d in free.find(where, sort="id")]

        assert keys({"x": {"$exists": True}}) == ["a", "b"]
        assert keys({"x": {"$exists": False}}) == ["c"]
        assert keys({"x": None}) == ["b", "c"]

    def test_find_sorts_and_limits(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        for i in range(6):
            notes.put(note(i))
        assert ids(notes.find(sort=["author", "-score"])) == [
            "n03",
            "n00",
            "n04",
            "n01",
            "n05",
            "n02",
        ]
        assert ids(notes.find(sort="-score", limit=2)) == ["n05", "n04"]
        notes.put({"note_id": "n99", "author": "zz", "score": 1, "created_at": None})
        assert ids(notes.find(sort="created_at", limit=1)) == ["n99"]

    def test_filters_outside_the_language_are_rejected(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        for bad in (
            {"score": {"$where": "this.score > 1"}},
            {"author": {"$regex": "^a"}},
            {"$or": [{"author": "ann"}]},
            {"score": {"$in": "ann"}},
            {"score": {"$exists": "yes"}},
        ):
            with pytest.raises(QueryError):
                notes.find(bad)
        with pytest.raises(QueryError):
            notes.find(sort="score; DROP TABLE x")
        with pytest.raises(QueryError):
            notes.find(limit=0)

    def test_hostile_values_are_only_data(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        hostile = "x'); DROP TABLE doc_notes; --"
        notes.put(note(1, author=hostile))
        assert ids(notes.find({"author": hostile})) == ["n01"]

    def test_apply_is_idempotent(self, dl: DataLayer) -> None:
        dl.documents("notes").put(note(1))
        dl.apply()
        dl.apply()
        assert dl.documents("notes").count() == 1

    def test_values_no_store_keeps_exactly_are_refused_before_writing(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        free.put({"id": "big", "n": 2**63 - 1, "nested": {"list": [-(2**63)]}})
        assert free.get("big") == {"id": "big", "n": 2**63 - 1, "nested": {"list": [-(2**63)]}}
        for bad in (2**63, float("nan"), float("inf"), float("-inf"), Decimal("NaN")):
            with pytest.raises(PayloadValidationError) as caught:
                free.put({"id": "bad", "nested": {"list": [1, bad]}})
            assert caught.value.store is None  # refused before the store was asked
            with pytest.raises(PayloadValidationError):
                free.update("big", set={"n": bad})
        assert free.get("bad") is None
        assert free.get("big") == {"id": "big", "n": 2**63 - 1, "nested": {"list": [-(2**63)]}}

    def test_queries_out_of_any_store_s_range_are_query_errors(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        free.put({"id": "a", "n": 1})
        for call in (
            lambda: free.find(sort=7),  # type: ignore[arg-type]
            lambda: free.find(limit=2**63),
            lambda: free.find(limit=10**30),
            lambda: free.find({"n": 10**30}),
            lambda: free.count({"n": {"$in": [1, 2**64]}}),
            lambda: free.find({"n": float("inf")}),
            lambda: free.find({"n": {"$in": list(range(10_001))}}),
            lambda: free.find({"n": {"$in": list(range(70_001))}}),
            lambda: free.find({"n": object()}),
        ):
            with pytest.raises(QueryError) as caught:
                call()
            assert caught.value.store is None  # refused before the store was asked
        assert free.find({"n": 1}, limit=2**63 - 1) == [{"id": "a", "n": 1}]

    def test_update_of_a_field_outside_the_schema_is_refused(self, dl: DataLayer) -> None:
        notes = dl.documents("notes")
        notes.put(note(1))
        before = notes.get("n01")
        for update in (
            {"set": {"unknown": 1}},
            {"push": {"labels": "x"}},
            {"unset": ["nothing_here"]},
        ):
            with pytest.raises(PayloadValidationError, match="not a field of schema Note"):
                notes.update("n01", **update)
        assert notes.get("n01") == before
        assert notes.update("n01", set={"meta.anything.goes": 1})  # meta is a free-form dict

    def test_datetimes_compare_and_sort_as_instants(self, dl: DataLayer) -> None:
        notes, free = dl.documents("notes"), dl.documents("free")
        written = {  # id: when, each written with another offset or precision
            "ist": "2026-03-01T12:00:00+05:30",  # 06:30:00 UTC
            "half": "2026-03-01T06:30:00.5Z",
            "seven": "2026-03-01T07:00:00+00:00",
            "naive": "2026-03-01T06:00:00",  # read as UTC
            "early": "0999-06-01T00:00:00+00:00",  # a year of three digits still sorts first
        }
        for name, when in written.items():
            notes.put(note(0, note_id=name, created_at=when))
            free.put({"id": name, "at": datetime.fromisoformat(when.replace("Z", "+00:00"))})
        after = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
        for docs, key, field in ((notes, "note_id", "created_at"), (free, "id", "at")):
            assert [d[key] for d in docs.find(sort=field)] == [
                "early",
                "naive",
                "ist",
                "half",
                "seven",
            ]
            assert [d[key] for d in docs.find({field: {"$gt": after}}, sort=field)] == [
                "half",
                "seven",
            ]
            assert [d[key] for d in docs.find({field: after})] == ["ist"]
        assert notes.get("ist")["created_at"] == "2026-03-01T06:30:00.000000Z"  # type: ignore[index]
        assert free.get("half") == {"id": "half", "at": "2026-03-01T06:30:00.500000Z"}

    def test_a_document_past_the_size_every_store_takes_is_refused(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        with pytest.raises(PayloadValidationError, match="at most 15,728,640"):
            free.put({"id": "huge", "text": "x" * (16 * 2**20)})
        assert free.get("huge") is None
        free.put({"id": "large", "text": "x" * (2**20)})
        assert len(free.get("large")["text"]) == 2**20  # type: ignore[index]

    def test_text_with_nul_is_refused_not_cut_short(self, dl: DataLayer) -> None:
        free = dl.documents("free")
        free.put({"id": "plain", "v": "'; DROP TABLE x; --"})
        with pytest.raises(PayloadValidationError, match="NUL"):
            free.put({"id": "nul", "v": "'; DROP TABLE x; --\x00tail"})
        with pytest.raises(PayloadValidationError, match="NUL"):
            free.update("plain", set={"w": ["ok", "a\x00b"]})
        with pytest.raises(QueryError, match="NUL"):
            free.find({"v": "'; DROP TABLE x; --\x00tail"})
        assert free.get("nul") is None
        assert free.find({"v": "'; DROP TABLE x; --"}) == [
            {"id": "plain", "v": "'; DROP TABLE x; --"}
        ]

    def test_nesting_past_100_levels_is_refused(self, dl: DataLayer) -> None:
        """MongoDB refuses documents nesting deeper than 100 levels (and Python's recursion
        ended the walk of 1,000): every store refuses them the same way, whole."""
        free, notes = dl.documents("free"), dl.documents("notes")

        def nested(depth: int, *, as_list: bool = False) -> object:
            value: object = "leaf"
            for _ in range(depth):
                value = [value] if as_list else {"a": value}
            return value

        kept = {"id": "deep", "v": nested(99)}  # the document and 99 levels below it
        free.put(kept)
        assert free.get("deep") == kept
        for depth in (100, 150, 5000):
            for as_list in (False, True):
                with pytest.raises(PayloadValidationError, match="deeper than 100 levels"):
                    free.put({"id": "deeper", "v": nested(depth, as_list=as_list)})
        with pytest.raises(PayloadValidationError, match="deeper than 100 levels"):
            free.update("deep", set={"w": nested(150)})
        with pytest.raises(PayloadValidationError):
            notes.put(note(1, meta={"m": nested(5000)}))
        assert free.count() == 1 and free.get("deep") == kept and notes.count() == 0

    def test_a_value_matches_values_of_its_type_only(self, dl: DataLayer) -> None:
        """As MongoDB compares: a bool is no number, an object no text, a range never crosses
        types; None matches null or missing, in ``$in`` too. The embedded store matched
        ``true`` with 1, objects with their JSON text, and numbers with any text range."""
        free = dl.documents("free")
        values: dict[str, object] = {
            "one": 1, "one-float": 1.0, "true": True, "false": False, "zero": 0, "text-1": "1",
            "text-a": "a", "object": {"w": 1}, "null": None,
        }  # fmt: skip
        for key, value in values.items():
            free.put({"id": key, "v": value})
        free.put({"id": "missing"})

        def ids(where: dict[str, object]) -> list[object]:
            return sorted(d["id"] for d in free.find(where))

        assert ids({"v": 1}) == ["one", "one-float"]
        assert ids({"v": True}) == ["true"]
        assert ids({"v": 0}) == ["zero"] and ids({"v": False}) == ["false"]
        assert ids({"v": '{"w":1}'}) == [] and ids({"v": '{"w": 1}'}) == []
        assert ids({"v": {"$gt": ""}}) == ["text-1", "text-a"]
        assert ids({"v": {"$gte": 0, "$lt": 5}}) == ["one", "one-float", "zero"]
        assert ids({"v": {"$lt": "~"}}) == ["text-1", "text-a"]
        assert ids({"v": {"$in": ["1", True, None]}}) == ["missing", "null", "text-1", "true"]
        assert ids({"v": {"$in": [0, "a"]}}) == ["text-a", "zero"]
        assert free.count({"v": None}) == 2 and free.count({"v": {"$exists": True}}) == 9
        with pytest.raises(QueryError):
            free.find({"v": {1, 2}})  # a set is no scalar

    def test_field_names_that_would_poison_a_collection_are_refused(self, dl: DataLayer) -> None:
        """FerretDB writes a field name holding a backslash, a double quote or a control
        character unescaped in its JSON, and from then on every find and count of the
        collection fails: one document stopped them all. Refused on every store."""
        free = dl.documents("free")
        free.put({"id": "ok", "v": "\\'\"\x01 values are fine"})
        for name in ("a\\b", "\\'", '"', "a\x01", "\n", "x\\"):
            for doc in ({"id": "bad", name: 1}, {"id": "bad", "n": {name: 1}}):
                with pytest.raises(PayloadValidationError, match="backslash"):
                    free.put(doc)
            with pytest.raises(PayloadValidationError):
                free.update("ok", set={"n": {name: 1}})
        assert free.count() == 1
        assert free.find() == [{"id": "ok", "v": "\\'\"\x01 values are fine"}]

    def test_a_filter_compares_a_field_not_the_elements_of_a_list(self, dl: DataLayer) -> None:
        """MongoDB matched ``{"v": 1}`` with ``v: [1, 2]`` (any element); the embedded store
        compares the field's value. Filters compare field values on every store."""
        free = dl.documents("free")
        free.put({"id": "list", "v": [1, 2, None, "a"]})
        free.put({"id": "one", "v": 1})

        def ids(where: dict[str, object]) -> list[object]:
            return sorted(d["id"] for d in free.find(where))

        assert ids({"v": 1}) == ["one"] and ids({"v": "a"}) == []
        assert ids({"v": {"$in": [2, "a"]}}) == [] and ids({"v": {"$gte": 1}}) == ["one"]
        assert ids({"v": None}) == [] and ids({"v": {"$exists": True}}) == ["list", "one"]

    def test_integers_read_back_as_int(self, dl: DataLayer) -> None:
        """pymongo reads a BSON int64 as its own ``Int64`` type: documents hold plain ints."""
        free = dl.documents("free")
        free.put({"id": "k", "v": 2**62, "n": {"m": [-(2**63)]}})
        assert free.update("k", inc={"v": 1})
        [found] = free.find({"v": 2**62 + 1})
        assert type(found["v"]) is int and type(found["n"]["m"][0]) is int
        assert found == {"id": "k", "v": 2**62 + 1, "n": {"m": [-(2**63)]}}

    def test_mongodb_s_id_is_no_field(self, dl: DataLayer) -> None:
        """``_id`` is MongoDB's own key: a document field of that name clashed with it there
        (a generic error) and was kept on the embedded store; a filter on it matched the key on
        MongoDB only. Now refused everywhere; ``_id`` below the top level is an ordinary name."""
        free = dl.documents("free")
        free.put({"id": "k", "n": {"_id": 1}})
        assert free.get("k") == {"id": "k", "n": {"_id": 1}}
        with pytest.raises(PayloadValidationError, match="_id"):
            free.put({"id": "other", "_id": "k"})
        for update in ({"set": {"_id": "x"}}, {"unset": ["_id"]}, {"set": {"_id.a": 1}}):
            with pytest.raises(PayloadValidationError, match="_id"):
                free.update("k", **update)
        with pytest.raises(QueryError, match="_id"):
            free.find({"_id": "k"})
        with pytest.raises(QueryError, match="_id"):
            free.find(sort="-_id")
        assert free.find() == [{"id": "k", "n": {"_id": 1}}]

    def test_an_update_of_the_wrong_shape_changes_nothing(self, dl: DataLayer) -> None:
        """``set``, ``push`` and ``inc`` map paths to values and ``unset`` lists paths: text
        given instead raised ValueError or AttributeError, and ``unset="ab"`` removed the
        fields ``a`` and ``b``."""
        free = dl.documents("free")
        doc = {"id": "k", "a": 1, "b": 2, "v": [1]}
        free.put(doc)
        updates: list[dict[str, Any]] = [
            {"set": "a"},
            {"set": [("a", 2)]},
            {"unset": "ab"},
            {"unset": {"a": 1}},
            {"push": "v"},
            {"inc": "a"},
            {"set": {5: 1}},
            {"unset": [None]},
        ]
        for update in updates:
            with pytest.raises(QueryError):
                free.update("k", **update)
        assert free.get("k") == doc

    def test_a_key_is_text_or_a_number(self, dl: DataLayer) -> None:
        """A document's key is the text of its stored form: an object or a list is refused
        (it was kept under its Python repr), and a datetime or bytes key finds its document."""
        free = dl.documents("free")
        for key in ({"a": 1}, ["a"], ("a",)):
            with pytest.raises(PayloadValidationError, match="id"):
                free.put({"id": key})
            with pytest.raises(QueryError):
                free.get(key)
        at = datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        assert free.put({"id": at, "v": 1}) == "2026-03-01T06:30:00.000000Z"
        assert free.get(at) == {"id": "2026-03-01T06:30:00.000000Z", "v": 1}
        assert free.put({"id": b"raw", "v": 2}) == "raw" and free.get(b"raw") is not None
        with pytest.raises(PayloadValidationError):
            free.put({"id": "k", "v": b"\xff\x00"})  # bytes no UTF-8 text holds
        assert free.count() == 2

    def test_text_with_a_lone_surrogate_is_refused_everywhere(self, dl: DataLayer) -> None:
        """A lone surrogate has no UTF-8 form: refused in values, field names, keys, updates
        and filters, with nothing written (the drivers raised UnicodeEncodeError)."""
        free, notes = dl.documents("free"), dl.documents("notes")
        free.put({"id": "plain", "v": 1})
        for bad in ({"id": "s", "v": "a\ud800"}, {"id": "s", "n": {"\udfff": 1}}, {"id": "\ud800"}):
            with pytest.raises(PayloadValidationError, match="surrogate"):
                free.put(bad)
        with pytest.raises(PayloadValidationError, match="author"):
            notes.put(note(1, author="\udc80"))
        with pytest.raises(PayloadValidationError, match="surrogate"):
            free.update("plain", set={"v": ["\ud800"]})
        for call in (
            lambda: free.get("\ud800"),
            lambda: free.delete("\ud800"),
            lambda: free.update("\ud800", set={"v": 2}),
            lambda: free.find({"v": "\ud800"}),
            lambda: free.count({"v": {"$in": ["x", "\udfff"]}}),
        ):
            with pytest.raises(QueryError, match="surrogate"):
                call()
        assert free.find() == [{"id": "plain", "v": 1}] and notes.count() == 0

    def test_inc_adds_to_numbers(self, dl: DataLayer) -> None:
        notes, free = dl.documents("notes"), dl.documents("free")
        notes.put(note(1))
        assert notes.update("n01", inc={"score": 4}, set={"author": "zed"})
        assert notes.update("n01", inc={"meta.rank": 2})  # meta is a free-form dict
        stored = notes.get("n01")
        assert stored is not None
        assert (stored["score"], stored["author"], stored["meta"]["rank"]) == (5, "zed", 3)
        assert notes.update("missing", inc={"score": 1}) is False
        free.put({"id": "c", "label": "x", "nested": {}})
        assert free.update("c", inc={"n": 1, "nested.f": 0.5})  # a missing field counts as 0
        assert free.update("c", inc={"n": -3, "nested.f": 2})
        assert free.get("c") == {"id": "c", "label": "x", "n": -2, "nested": {"f": 2.5}}

    def test_inc_refuses_what_it_cannot_add_and_writes_nothing(self, dl: DataLayer) -> None:
        notes, free = dl.documents("notes"), dl.documents("free")
        notes.put(note(1))
        free.put({"id": "t", "label": "x", "flag": True, "big": 2**63 - 1})
        before = notes.get("n01"), free.get("t")
        for bad in (
            {"author": 1},  # text
            {"tags": 1},  # a list
            {"meta": 1},  # an object
            {"created_at": 1},  # a datetime
            {"unknown": 1},  # not in the schema
            {"score": 1.5},  # an int field takes integers only
            {"score": True},
            {"score": "1"},
            {"score": float("nan")},
            {"score": 2**63},
        ):
            with pytest.raises(QueryError):
                notes.update("n01", inc=bad)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="same path twice"):
            notes.update("n01", set={"score": 1}, inc={"score": 1})
        with pytest.raises(PayloadValidationError, match="score"):
            notes.update("n01", inc={"score": -5})  # the schema says ge=0
        for bad in ({"label": 1}, {"flag": 1}):
            with pytest.raises(QueryError, match="not a number"):
                free.update("t", inc=bad)
        with pytest.raises(PayloadValidationError, match="big"):
            free.update("t", inc={"big": 1})  # past 64 bits
        assert (notes.get("n01"), free.get("t")) == before

    def test_concurrent_increments_all_count(self, dl: DataLayer) -> None:
        """8 threads and 4 processes add 1 to one field of one document."""
        dl.documents("notes").put(note(0, note_id="counter", score=0))
        run_together(dl, add_one_by_inc, "notes", "counter", self.increments)
        counter = dl.documents("notes").get("counter")
        assert counter is not None and counter["score"] == 12 * self.increments

    def test_a_collection_never_applied_says_to_apply(self, open_layer: OpenLayer) -> None:
        notes = open_layer({"notes": NOTES}, apply=False).documents("notes")
        for call in (
            lambda: notes.put(note(1)),
            lambda: notes.get("n01"),
            lambda: notes.find({"author": "ann"}, sort="-score", limit=5),
            lambda: notes.count(),
            lambda: notes.update("n01", set={"score": 2}),
            lambda: notes.delete("n01"),
        ):
            with pytest.raises(NotApplied, match="run 'datalayer apply'") as caught:
                call()
            assert caught.value.store == "main"

    def test_decimals_are_kept_as_their_exact_text(self, dl: DataLayer) -> None:
        free, amounts = dl.documents("free"), dl.documents("amounts")
        values = [
            Decimal("12345678901234567890.123456789"),
            Decimal("0.1"),
            Decimal("-0." + "0" * 30 + "7"),
            Decimal("3." + "1415926535" * 6),
            Decimal("1.50"),
        ]
        free.put({"id": "d", "values": values, "one": Decimal("0.1")})
        assert free.get("d") == {"id": "d", "values": [str(v) for v in values], "one": "0.1"}
        assert free.find({"one": "0.1"}) == [free.get("d")]
        for where in (
            {"one": Decimal("0.1")},
            {"one": {"$gt": Decimal("0")}},
            {"one": {"$in": ["0.1", Decimal("0.1")]}},
        ):
            with pytest.raises(QueryError, match="exact text"):
                free.find(where)
        amounts.put({"amount_id": "a", "value": values[0], "price": "1.5", "rate": values[1]})
        assert amounts.get("a") == {
            "amount_id": "a",
            "value": "12345678901234567890.123456789",
            "price": "1.5",
            "rate": "0.1",
        }
        with pytest.raises(PayloadValidationError, match="price: "):
            amounts.put({"amount_id": "b", "value": 1, "price": Decimal("1.234")})
        with pytest.raises(PayloadValidationError, match="value: "):
            amounts.update("a", set={"value": Decimal("Infinity")})
        assert amounts.count() == 1

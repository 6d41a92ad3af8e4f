"""``mongodb``: the document contract on MongoDB (pymongo); tested on FerretDB.

Documents are stored as their schema's JSON form with the key as ``_id``, exactly as the
embedded store keeps them, so filters compare the same values on both. Filters are translated
from the shared language into a MongoDB query document; nothing else reaches the server.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datalayer.categories.document import (
    DocumentBackend,
    DocumentCollection,
    DocumentPattern,
    DocumentUpdate,
    utc_text,
)
from datalayer.errors import NotApplied, redact
from datalayer.query import Condition, SortKey
from datalayer.stores.base import Store, StoreConfig, classified, require_driver


class MongoDBConfig(StoreConfig):
    """A MongoDB URL (``mongodb://user:pass@host:port``) and the database to use."""

    type: Literal["mongodb"]
    url: str = Field(pattern=r"^mongodb(\+srv)?://")
    database: str = Field(default="datalayer", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    server_selection_timeout_ms: int = Field(default=5000, ge=100, le=3_600_000)

    def target(self) -> str:
        return f"{redact(self.url)} db={self.database}"

    def connect(self, name: str, base_dir: Path) -> MongoDBStore:
        pymongo = require_driver("pymongo", "mongodb", self.type)
        client = pymongo.MongoClient(
            self.url,
            serverSelectionTimeoutMS=self.server_selection_timeout_ms,
            connectTimeoutMS=self.server_selection_timeout_ms,
            # one deadline for the whole operation (pymongo's socket timeout is per read)
            timeoutMS=self.resilience.timeout.total_seconds() * 1000,
            retryReads=False,  # the resilience policy retries, and counts
            retryWrites=False,
        )
        return MongoDBStore(name, self, client)


class MongoDBStore(Store[DocumentPattern, DocumentCollection]):
    def __init__(self, name: str, config: MongoDBConfig, client: Any) -> None:
        super().__init__(name, config)
        self.client = client
        self.db = client[config.database]
        self.codec = date_codec()
        self._applied: set[str] = set()

    def errors(self) -> AbstractContextManager[None]:
        """pymongo's errors as datalayer's, naming this store."""
        from bson.errors import BSONError
        from pymongo import errors

        unavailable = (errors.ConnectionFailure,)
        # No server found, no reply, or the operation's deadline passed (timeoutMS) in time.
        timeouts = (
            errors.ServerSelectionTimeoutError,
            errors.NetworkTimeout,
            errors.ExecutionTimeout,
            errors.WaitQueueTimeoutError,
        )
        return classified(self.label, unavailable, (errors.PyMongoError, BSONError), timeouts)

    def handle(self, pattern: DocumentPattern) -> DocumentCollection:
        return DocumentCollection(pattern, MongoCollection(pattern.collection, self))

    def apply(self, patterns: list[DocumentPattern]) -> list[str]:
        done = []
        with self.errors():
            existing = set(self.db.list_collection_names())
            for pattern in patterns:
                if pattern.collection not in existing:
                    self.db.create_collection(pattern.collection)
                    done.append(f"collection '{pattern.collection}' created")
                else:
                    done.append(f"collection '{pattern.collection}' exists")
                self._applied.add(pattern.collection)
                collection = self.db[pattern.collection]
                for spec in pattern.indexes:
                    field = spec.lstrip("-")
                    name = f"ix_{pattern.collection}_{field.replace('.', '_')}"
                    collection.create_index([(field, -1 if spec.startswith("-") else 1)], name=name)
                    done.append(f"index '{name}' on {pattern.collection}({spec}) ready")
        return done

    def ping(self) -> None:
        with self.errors():
            self.client.admin.command("ping")

    def problem(self) -> str | None:
        """The error pymongo's monitor last got from a server, if any."""
        servers = self.client.topology_description.server_descriptions().values()
        errors = [str(server.error) for server in servers if server.error is not None]
        return errors[0] if errors else None

    def check_applied(self, collection: str) -> None:
        """Raise ``NotApplied`` for a collection ``apply`` never created (MongoDB would create
        it on the first write, without its indexes); asked once per collection."""
        if collection in self._applied:
            return
        with self.errors():
            found = self.db.list_collection_names(filter={"name": collection})
        if not found:
            raise NotApplied(
                f"{self.label}: collection '{collection}' does not exist; run 'datalayer apply'",
                store=self.name,
            )
        self._applied.add(collection)

    def close(self) -> None:
        self.client.close()


#: A datetime as documents store it (``utc_text``), which a BSON date may also stand for.
_UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
#: A range on an instant with microseconds, on a BSON date (whole milliseconds): ``d > t`` and
#: ``d >= t`` both hold when ``d`` is past ``t`` cut to its millisecond; ``d < t`` and
#: ``d <= t`` when ``d`` is at or before it.
_ON_MILLISECONDS = {"$gt": "$gt", "$gte": "$gt", "$lt": "$lte", "$lte": "$lte"}


class ForeignDate(str):
    """A BSON date another program wrote (pymongo writes a ``datetime`` as one), read as the UTC
    text datalayer stores datetimes as (``utc_text``): it reads, filters and sorts like one."""


def date_codec() -> Any:
    """pymongo's codec options that read every BSON date as a ``ForeignDate``, and a BSON
    int64 as a plain ``int`` (pymongo's ``Int64`` would leak a driver type into documents)."""
    from bson.codec_options import CodecOptions, TypeDecoder, TypeRegistry
    from bson.int64 import Int64

    class DateAsText(TypeDecoder):
        bson_type = datetime

        def transform_bson(self, value: datetime) -> ForeignDate:
            return ForeignDate(utc_text(value))

    class PlainInt(TypeDecoder):
        bson_type = Int64

        def transform_bson(self, value: Int64) -> int:
            return int(value)

    return CodecOptions(type_registry=TypeRegistry([DateAsText(), PlainInt()]))


def bson_date(value: Any) -> datetime | None:
    """The instant a filter value stands for when it is a datetime in stored form."""
    if isinstance(value, str) and _UTC_TEXT.fullmatch(value):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return None


def same_date(value: Any) -> datetime | None:
    """The BSON date equal to a filter value: its instant, if it is in whole milliseconds."""
    date = bson_date(value)
    return date if date is not None and date.microsecond % 1000 == 0 else None


def mongo_filter(conditions: list[Condition]) -> dict[str, Any]:
    """The shared filter language as a MongoDB query document.

    A datetime (its UTC text) also matches the same instant held as a BSON date, which another
    program may have written: MongoDB compares values of one type only, so each comparison asks
    for the text or the date. A comparison also asks that the field not be an array: MongoDB
    would match any element (``{"tags": "a"}`` finds ``["a", "b"]``), which the contract's
    filters, comparing field values, do not (the embedded store never did)."""
    query: dict[str, Any] = {}
    either: list[dict[str, Any]] = []
    for field in dict.fromkeys(c.field for c in conditions if c.op != "$exists"):
        either.append({field: {"$not": {"$type": "array"}}})
    for cond in conditions:
        field, op, value = cond.field, cond.op, cond.value
        if op == "$eq" and (date := same_date(value)) is not None:
            either.append({field: {"$in": [value, date]}})
            continue
        if op == "$in":
            value = [*value, *(d for d in map(same_date, value) if d is not None)]
        elif op in _ON_MILLISECONDS and (date := bson_date(value)) is not None:
            cut = date.replace(microsecond=date.microsecond // 1000 * 1000)
            on_date = op if cut == date else _ON_MILLISECONDS[op]
            either.append({"$or": [{field: {op: value}}, {field: {on_date: cut}}]})
            continue
        query.setdefault(field, {})[op] = value
    if either:
        query["$and"] = either
    return query


def _both(query: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    return {"$and": [query, more]} if query else more


def _value(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _has_date(value: Any) -> bool:
    return isinstance(value, ForeignDate) or (
        isinstance(value, list) and any(isinstance(v, ForeignDate) for v in value)
    )


def _place(value: Any) -> tuple[int, Any]:
    """Where a value sorts in MongoDB's order of types (null, numbers, text, objects, binary,
    ObjectId, booleans), with BSON dates (``ForeignDate``) among texts as their UTC text."""
    if value is None:
        return (1, 0)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, str(value))
    if isinstance(value, Mapping):
        return (4, tuple((str(k), _place(v)) for k, v in value.items()))
    if isinstance(value, bytes):
        return (6, value)
    return (7, str(value))


def _sort_place(value: Any, descending: bool) -> tuple[int, Any]:
    """A sort key's place: an array sorts by its least element ascending, its greatest
    descending, and an empty one before null."""
    if isinstance(value, list):
        if not value:
            return (0, 0)
        places = [_place(v) for v in value]
        return max(places) if descending else min(places)
    return _place(value)


def sort_documents(docs: list[dict[str, Any]], sort: list[SortKey]) -> list[dict[str, Any]]:
    """Documents in the order ``sort`` gives them, then by ``_id``, as MongoDB would order them
    if BSON dates sorted among texts (it puts every date after every text)."""
    docs = sorted(docs, key=lambda d: _place(d.get("_id")))
    for key in reversed(sort):
        docs.sort(
            key=lambda d: _sort_place(_value(d, key.field), key.descending), reverse=key.descending
        )
    return docs


class MongoCollection(DocumentBackend):
    def __init__(self, collection: str, store: MongoDBStore) -> None:
        self.store = store
        self.name = collection
        self.collection = store.db.get_collection(collection, codec_options=store.codec)

    def write(self, key: str, doc: dict[str, Any]) -> None:
        self.store.check_applied(self.name)
        with self.store.errors():
            self.collection.replace_one({"_id": key}, {"_id": key, **doc}, upsert=True)

    def get(self, key: str) -> dict[str, Any] | None:
        self.store.check_applied(self.name)
        with self.store.errors():
            found = self.collection.find_one({"_id": key}, projection={"_id": False})
        return None if found is None else dict(found)

    def delete(self, key: str) -> bool:
        self.store.check_applied(self.name)
        with self.store.errors():
            return bool(self.collection.delete_one({"_id": key}).deleted_count)

    def update(
        self, key: str, update: DocumentUpdate, merged: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        """Validate the merged document, then send MongoDB's own atomic operators.

        The values sent are taken from the validated document, so they are in stored form;
        ``inc`` amounts are sent as they are, with ``$inc``, so the server adds them to the
        value it holds then, not to the one read here.
        """
        current = self.get(key)
        if current is None:
            return False
        document = merged(current)
        operators: dict[str, dict[str, Any]] = {}
        for path in update.set:
            operators.setdefault("$set", {})[path] = _at(document, path)
        for path in update.unset:
            operators.setdefault("$unset", {})[path] = ""
        for path in update.push:
            operators.setdefault("$push", {})[path] = _at(document, path)[-1]
        if update.inc:
            operators["$inc"] = dict(update.inc)
        with self.store.errors():
            return bool(self.collection.update_one({"_id": key}, operators).matched_count)

    def _find(
        self, query: dict[str, Any], order: list[tuple[str, int]], limit: int | None
    ) -> list[dict[str, Any]]:
        with self.store.errors():
            cursor = self.collection.find(query, sort=order)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [dict(doc) for doc in cursor]

    def find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        """MongoDB's sort, unless BSON dates are among the sorted values: MongoDB puts them
        after every text, so those documents are placed again among the texts.

        When the limit cut the result short, dates may lie past it. On one descending key they
        would have come first, so a result without one is whole; otherwise one more query asks
        whether any document of the filter holds a date in a sort field (none does unless
        another program wrote one). If some do, the documents are asked for again in groups in
        which each sort field holds dates only or no date at all, where MongoDB's order is the
        contract's; the groups' first ``limit`` documents, merged, are the answer.
        """
        self.store.check_applied(self.name)
        query = mongo_filter(conditions)
        order = [(k.field, -1 if k.descending else 1) for k in sort] + [("_id", 1)]
        docs = self._find(query, order, limit)
        if sort and limit is not None and len(docs) == limit:
            fields = list(dict.fromkeys(k.field for k in sort))
            mixed = any(_has_date(_value(doc, field)) for doc in docs for field in fields)
            if not mixed and not (len(sort) == 1 and sort[0].descending):
                dated = {"$or": [{field: {"$type": "date"}} for field in fields]}
                with self.store.errors():
                    found = self.collection.find_one(_both(query, dated), projection={"_id": 1})
                mixed = found is not None
            if mixed:
                docs = []
                for has_date in itertools.product((True, False), repeat=len(fields)):
                    group = {
                        field: {"$type": "date"} if date else {"$not": {"$type": "date"}}
                        for field, date in zip(fields, has_date, strict=True)
                    }
                    docs += self._find(_both(query, group), order, limit)
                docs = sort_documents(docs, sort)[:limit]
        elif sort and any(_has_date(_value(doc, k.field)) for doc in docs for k in sort):
            docs = sort_documents(docs, sort)
        for doc in docs:
            del doc["_id"]
        return docs

    def count(self, conditions: list[Condition]) -> int:
        self.store.check_applied(self.name)
        with self.store.errors():
            return int(self.collection.count_documents(mongo_filter(conditions)))

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        """Keys are text ``_id`` s: MongoDB orders them by their UTF-8 bytes, as SQLite does."""
        self.store.check_applied(self.name)
        with self.store.errors():
            found = self.collection.find({"_id": {"$gt": cursor}}, projection={"_id": True})
            keys = [str(doc["_id"]) for doc in found.sort("_id", 1).limit(count)]
        return keys, keys[-1] if len(keys) == count else ""

    def add(self, key: str, doc: dict[str, Any]) -> bool:
        import pymongo.errors

        self.store.check_applied(self.name)
        with self.store.errors():
            try:
                self.collection.insert_one({"_id": key, **doc})
            except pymongo.errors.DuplicateKeyError:
                return False
        return True

    def delete_if(self, key: str, doc: dict[str, Any]) -> bool:
        """A delete whose filter is the whole document: every top-level field ``$eq`` (a
        subdocument matches only field for field, in order, as it was written). A stored
        document with fields ``doc`` lacks would match too; ``update`` and ``put`` of the
        same pattern write whole documents of its schema."""
        self.store.check_applied(self.name)
        with self.store.errors():
            filter_ = {"_id": key, **{name: {"$eq": value} for name, value in doc.items()}}
            return bool(self.collection.delete_one(filter_).deleted_count)


def _at(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node[part]
    return node

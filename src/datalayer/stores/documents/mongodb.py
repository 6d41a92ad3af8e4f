"""``mongodb``: the document contract on MongoDB (pymongo); tested on FerretDB.

Documents are stored as their schema's JSON form with the key as ``_id``, exactly as the
embedded store keeps them, so filters compare the same values on both. Filters are translated
from the shared language into a MongoDB query document; nothing else reaches the server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datalayer.categories.document import (
    DocumentBackend,
    DocumentCollection,
    DocumentPattern,
    DocumentUpdate,
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
    socket_timeout_ms: int = Field(default=10000, ge=100, le=3_600_000)

    def target(self) -> str:
        return f"{redact(self.url)} db={self.database}"

    def connect(self, name: str, base_dir: Path) -> MongoDBStore:
        pymongo = require_driver("pymongo", "mongodb", self.type)
        client = pymongo.MongoClient(
            self.url,
            serverSelectionTimeoutMS=self.server_selection_timeout_ms,
            connectTimeoutMS=self.server_selection_timeout_ms,
            socketTimeoutMS=self.socket_timeout_ms,
        )
        return MongoDBStore(name, self, client)


class MongoDBStore(Store[DocumentPattern, DocumentCollection]):
    def __init__(self, name: str, config: MongoDBConfig, client: Any) -> None:
        super().__init__(name, config)
        self.client = client
        self.db = client[config.database]
        self._applied: set[str] = set()

    def errors(self) -> AbstractContextManager[None]:
        """pymongo's errors as datalayer's, naming this store."""
        from bson.errors import BSONError
        from pymongo import errors

        unavailable = (errors.ConnectionFailure, errors.ServerSelectionTimeoutError)
        return classified(self.label, unavailable, (errors.PyMongoError, BSONError))

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


def mongo_filter(conditions: list[Condition]) -> dict[str, Any]:
    """The shared filter language as a MongoDB query document."""
    query: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        query.setdefault(cond.field, {})[cond.op] = cond.value
    return query


class MongoCollection(DocumentBackend):
    def __init__(self, collection: str, store: MongoDBStore) -> None:
        self.store = store
        self.name = collection
        self.collection = store.db[collection]

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

        The values sent are taken from the validated document, so they are in stored form.
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
        with self.store.errors():
            return bool(self.collection.update_one({"_id": key}, operators).matched_count)

    def find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        self.store.check_applied(self.name)
        order = [(k.field, -1 if k.descending else 1) for k in sort] + [("_id", 1)]
        with self.store.errors():
            cursor = self.collection.find(
                mongo_filter(conditions), projection={"_id": False}, sort=order
            )
            if limit is not None:
                cursor = cursor.limit(limit)
            return [dict(doc) for doc in cursor]

    def count(self, conditions: list[Condition]) -> int:
        self.store.check_applied(self.name)
        with self.store.errors():
            return int(self.collection.count_documents(mongo_filter(conditions)))


def _at(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node[part]
    return node

"""``embedded-documents``: the document contract on SQLite, one JSON table per collection.

Filters become ``json_extract`` comparisons with bound values; field paths are checked against
the safe field-path rule before they are written into an expression, so indexes can match them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datalayer.categories.document import (
    DocumentBackend,
    DocumentCollection,
    DocumentPattern,
    DocumentUpdate,
)
from datalayer.query import Condition, SortKey
from datalayer.stores.base import Store, StoreConfig
from datalayer.stores.shared.paths import resolve_path
from datalayer.stores.shared.sqlite_file import SQLiteFile

_COMPARE = {"$eq": "=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
#: JSON types (as ``json_type`` names them) a filter value matches, as SQL lists.
_NUMBER, _TEXT, _NULL, _TRUE, _FALSE = (
    "('integer', 'real')",
    "('text')",
    "('null')",
    "('true')",
    "('false')",
)
#: Conditions on values with one JSON form: no parameter, the type says it all.
_NO_PARAMETER: dict[str, Callable[[str, str], str]] = {
    _NULL: lambda expr, _kind: f"{expr} IS NULL",  # null, or missing
    _TRUE: lambda _expr, kind: f"{kind} = 'true'",
    _FALSE: lambda _expr, kind: f"{kind} = 'false'",
}


def _json_types(value: Any) -> str:
    """The JSON types a filter value (already in stored form) can equal."""
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    return _NUMBER if isinstance(value, int | float) else _TEXT


def _by_type(values: list[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for value in values:
        groups.setdefault(_json_types(value), []).append(value)
    return groups


class EmbeddedDocumentsConfig(StoreConfig):
    """An SQLite file holding each collection as a table of JSON documents."""

    type: Literal["embedded-documents"]
    path: str = ".datalayer/docs.db"
    busy_timeout: float = Field(default=30.0, gt=0, le=3600)

    def target(self) -> str:
        return self.path

    def connect(self, name: str, base_dir: Path) -> EmbeddedDocumentsStore:
        return EmbeddedDocumentsStore(name, self, resolve_path(self.path, base_dir))


class EmbeddedDocumentsStore(Store[DocumentPattern, DocumentCollection]):
    def __init__(self, name: str, config: EmbeddedDocumentsConfig, path: Path) -> None:
        super().__init__(name, config)
        self.db = SQLiteFile(path, self.label, config.busy_timeout)

    def handle(self, pattern: DocumentPattern) -> DocumentCollection:
        return DocumentCollection(pattern, EmbeddedCollection(pattern.collection, self))

    def apply(self, patterns: list[DocumentPattern]) -> list[str]:
        done = []
        for pattern in patterns:
            table = table_of(pattern.collection)
            with self.db.write() as conn:
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{table}" (id TEXT PRIMARY KEY, body TEXT NOT NULL)'
                )
            done.append(f"collection '{pattern.collection}' ready")
            with self.db.write() as conn:
                for spec in pattern.indexes:
                    field = spec.lstrip("-")
                    name = f"ix_{pattern.collection}_{field.replace('.', '_')}"
                    order = "DESC" if spec.startswith("-") else "ASC"
                    conn.execute(
                        f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" '
                        f"({json_path_expr(field)} {order})"
                    )
                    done.append(f"index '{name}' on {pattern.collection}({spec}) ready")
        return done

    def ping(self) -> None:
        self.db.ping()

    def close(self) -> None:
        self.db.close()


def table_of(collection: str) -> str:
    """The table holding a collection; ``apply`` creates it, and until then every call on the
    collection is ``NotApplied``."""
    return f"doc_{collection}"


def json_path_expr(field: str) -> str:
    """``json_extract(body, '$.a.b')`` for a field path already checked by the query parser."""
    return f"json_extract(body, '$.{field}')"


class EmbeddedCollection(DocumentBackend):
    def __init__(self, collection: str, store: EmbeddedDocumentsStore) -> None:
        self.store = store
        self.table = table_of(collection)

    def write(self, key: str, doc: dict[str, Any]) -> None:
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        with self.store.db.write() as conn:
            conn.execute(
                f'INSERT INTO "{self.table}"(id, body) VALUES (?, ?) '
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                (key, body),
            )

    def get(self, key: str) -> dict[str, Any] | None:
        with self.store.db.read() as conn:
            row = conn.execute(f'SELECT body FROM "{self.table}" WHERE id = ?', (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def delete(self, key: str) -> bool:
        with self.store.db.write() as conn:
            cursor = conn.execute(f'DELETE FROM "{self.table}" WHERE id = ?', (key,))
        return cursor.rowcount > 0

    def scan(self, cursor: str, count: int) -> tuple[list[str], str]:
        with self.store.db.read() as conn:
            rows = conn.execute(
                f'SELECT id FROM "{self.table}" WHERE id > ? ORDER BY id LIMIT ?', (cursor, count)
            ).fetchall()
        keys = [row[0] for row in rows]
        return keys, keys[-1] if len(keys) == count else ""

    def add(self, key: str, doc: dict[str, Any]) -> bool:
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        with self.store.db.write() as conn:
            cursor = conn.execute(
                f'INSERT INTO "{self.table}"(id, body) VALUES (?, ?) ON CONFLICT(id) DO NOTHING',
                (key, body),
            )
        return cursor.rowcount > 0

    def delete_if(self, key: str, doc: dict[str, Any]) -> bool:
        """In the write transaction: the stored document is read, compared and deleted at once."""
        with self.store.db.write() as conn:
            row = conn.execute(f'SELECT body FROM "{self.table}" WHERE id = ?', (key,)).fetchone()
            if row is None or json.loads(row[0]) != doc:
                return False
            conn.execute(f'DELETE FROM "{self.table}" WHERE id = ?', (key,))
        return True

    def update(
        self, key: str, update: DocumentUpdate, merged: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> bool:
        with self.store.db.write() as conn:
            row = conn.execute(f'SELECT body FROM "{self.table}" WHERE id = ?', (key,)).fetchone()
            if row is None:
                return False
            body = merged(json.loads(row[0]))
            conn.execute(
                f'UPDATE "{self.table}" SET body = ? WHERE id = ?',
                (json.dumps(body, separators=(",", ":"), ensure_ascii=False), key),
            )
        return True

    def _where(self, conditions: list[Condition]) -> tuple[str, list[Any]]:
        """Conditions as SQL. ``json_extract`` reads JSON true as 1 and an object as its
        text, so every comparison also asks for the JSON type of its value, as MongoDB
        compares values of one type only (a bool is no number, an object no text)."""
        clauses: list[str] = []
        params: list[Any] = []
        for cond in conditions:
            expr = json_path_expr(cond.field)
            kind = f"json_type(body, '$.{cond.field}')"
            if cond.op == "$exists":
                clauses.append(f"{kind} IS {'NOT ' if cond.value else ''}NULL")
            elif cond.op == "$in":
                groups = _by_type(cond.value)
                either = [
                    f"({expr} IN ({','.join('?' * len(values))}) AND {kind} IN {types})"
                    for types, values in groups.items()
                    if types not in _NO_PARAMETER
                ]
                either += [
                    _NO_PARAMETER[types](expr, kind) for types in groups if types in _NO_PARAMETER
                ]
                clauses.append(f"({' OR '.join(either)})" if either else "0")
                for types, values in groups.items():
                    if types not in _NO_PARAMETER:
                        params.extend(values)
            else:
                types = _json_types(cond.value)
                if types in _NO_PARAMETER and cond.op == "$eq":
                    clauses.append(_NO_PARAMETER[types](expr, kind))
                else:
                    clauses.append(f"{expr} {_COMPARE[cond.op]} ? AND {kind} IN {types}")
                    params.append(cond.value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def find(
        self, conditions: list[Condition], sort: list[SortKey], limit: int | None
    ) -> list[dict[str, Any]]:
        where, params = self._where(conditions)
        order = [f"{json_path_expr(k.field)} {'DESC' if k.descending else 'ASC'}" for k in sort]
        sql = f'SELECT body FROM "{self.table}"{where} ORDER BY {", ".join([*order, "id"])}'
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.store.db.read() as conn:
            return [json.loads(row[0]) for row in conn.execute(sql, params)]

    def count(self, conditions: list[Condition]) -> int:
        clause, params = self._where(conditions)
        with self.store.db.read() as conn:
            return int(
                conn.execute(f'SELECT count(*) FROM "{self.table}"{clause}', params).fetchone()[0]
            )

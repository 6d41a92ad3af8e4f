"""Store-specific checks of the embedded stores that the shared contract cannot see."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import datalayer
from datalayer.testing.registry import write_registry


def test_document_indexes_from_the_registry_are_created(tmp_path: Path) -> None:
    registry = write_registry(
        tmp_path,
        {"local": {"docs": {"type": "embedded-documents", "path": "docs.db"}}},
        {
            "incidents": {
                "category": "document",
                "store": "docs",
                "collection": "incidents",
                "key": "incident_id",
                "indexes": ["service_id", "-opened_at", "meta.source"],
            }
        },
    )
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        dl.apply()
    with sqlite3.connect(tmp_path / "docs.db") as conn:
        indexes = dict(
            conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall()
        )
        plan = " ".join(
            str(row)
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT body FROM doc_incidents "
                "WHERE json_extract(body, '$.service_id') = 's1'"
            )
        )
    assert set(indexes) >= {
        "ix_incidents_service_id",
        "ix_incidents_opened_at",
        "ix_incidents_meta_source",
    }
    assert "DESC" in indexes["ix_incidents_opened_at"]
    assert "ix_incidents_service_id" in plan


def test_a_log_member_taken_for_dead_hands_out_nothing_its_successor_has(tmp_path: Path) -> None:
    """A member that missed its session timeout lost its partition's lease: its commit is
    refused, and the rest of the batch it fetched is not handed out (its successor has it)."""
    store = {"type": "embedded-log", "path": "events.db", "session_timeout": "1s"}
    pattern = {"category": "streaming", "store": "events", "topic": "events", "partitions": 1}
    registry = write_registry(tmp_path, {"local": {"events": store}}, {"events": pattern})
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        stream = dl.stream("events")
        stream.publish_many([{"n": n} for n in range(3)])
        slow = stream.consume("g", idle_timeout=0.5)
        first = next(slow)
        time.sleep(1.5)
        successor = []
        for message in stream.consume("g", idle_timeout=0.5):
            successor.append(message.value["n"])
            message.ack()
        first.ack()
        late = [m.value["n"] for m in slow]
    assert successor == [0, 1, 2]
    assert late == []


def test_connections_opening_a_new_file_at_once_all_get_in(tmp_path: Path) -> None:
    """Six connections that open a new file at the same moment: one switches it to WAL while
    the others find it locked, which SQLite answers without its busy timeout (the first
    writes of a rollout's concurrent writers failed so, about once in twenty)."""
    import threading

    from datalayer.errors import StoreLabel
    from datalayer.stores.shared.sqlite_file import SQLiteFile

    failures: list[BaseException] = []
    for round_ in range(150):
        path = tmp_path / f"new-{round_}.db"
        files = [SQLiteFile(path, StoreLabel("store s", "s")) for _ in range(6)]
        barrier = threading.Barrier(len(files))

        def first_write(file: SQLiteFile, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with file.write() as conn:
                    conn.execute("CREATE TABLE IF NOT EXISTS t(a)")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=first_write, args=(f,)) for f in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for file in files:
            file.close()
    assert failures == []

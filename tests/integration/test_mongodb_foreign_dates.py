"""Documents another program wrote with pymongo, holding BSON dates where datalayer writes a
datetime's UTC text: found by filters, placed by sorts and read back as that text."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer.categories import DocumentCollection
from datalayer.testing.registry import write_registry

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
OURS = {  # written through datalayer: the UTC text
    "o1": T0,
    "o3": T0 + timedelta(minutes=30, milliseconds=500),
    "o5": T0 + timedelta(hours=2),
}
THEIRS = {  # written with pymongo: BSON dates (milliseconds), naive or aware
    "t2": datetime(2026, 3, 1, 6, 15),
    "t4": T0 + timedelta(hours=1, milliseconds=250),
    "t6": datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
}


@pytest.fixture
def incidents(mongodb_url: str, tmp_path: Path) -> Iterator[tuple[DocumentCollection, Any]]:
    import pymongo

    collection = f"incidents_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "document",
        "store": "main",
        "collection": collection,
        "key": "id",
        "indexes": ["-at"],
    }
    file = write_registry(
        tmp_path, {"p": {"main": {"type": "mongodb", "url": mongodb_url}}}, {"incidents": pattern}
    )
    client: Any = pymongo.MongoClient(mongodb_url)
    raw = client["datalayer"][collection]
    with datalayer.open(file, "p") as dl:
        dl.apply()
        docs = dl.documents("incidents")
        for n, (key, at) in enumerate(OURS.items()):
            docs.put({"id": key, "at": at, "team": "ab"[n % 2]})
        for n, (key, at) in enumerate(THEIRS.items()):
            raw.insert_one({"_id": key, "id": key, "at": at, "team": "ba"[n % 2], "seen": [at]})
        docs.put({"id": "none", "at": None, "team": "a"})
        docs.put({"id": "missing", "team": "b"})
        yield docs, raw
    raw.drop()
    client.close()


def ids(found: list[dict[str, Any]]) -> list[str]:
    return [doc["id"] for doc in found]


def test_a_bson_date_reads_as_the_utc_text(incidents: tuple[DocumentCollection, Any]) -> None:
    docs, _ = incidents
    assert docs.get("t2") == {
        "id": "t2",
        "at": "2026-03-01T06:15:00.000000Z",
        "team": "b",
        "seen": ["2026-03-01T06:15:00.000000Z"],
    }
    assert docs.get("t6")["at"] == "2026-03-01T09:00:00.000000Z"  # type: ignore[index]
    assert docs.get("o3")["at"] == "2026-03-01T06:30:00.500000Z"  # type: ignore[index]
    assert docs.update("t4", set={"note": "seen"})
    assert docs.get("t4") == {
        "id": "t4",
        "at": "2026-03-01T07:00:00.250000Z",
        "team": "a",
        "seen": ["2026-03-01T07:00:00.250000Z"],
        "note": "seen",
    }


def test_filters_match_bson_dates_as_instants(incidents: tuple[DocumentCollection, Any]) -> None:
    docs, _ = incidents
    at = {**OURS, **THEIRS}

    def where(**ops: Any) -> list[str]:
        return ids(docs.find({"at": {f"${op}": v for op, v in ops.items()}}, sort="at"))

    assert where(gt=at["t2"]) == ["o3", "t4", "o5", "t6"]
    assert where(gte=at["t2"]) == ["t2", "o3", "t4", "o5", "t6"]
    assert where(lt=at["t4"]) == ["o1", "t2", "o3"]
    assert where(lte=at["t4"], gt=at["o1"]) == ["t2", "o3", "t4"]
    assert ids(docs.find({"at": at["t2"]})) == ["t2"]
    assert ids(docs.find({"at": {"$in": [at["t6"], at["o1"]]}}, sort="at")) == ["o1", "t6"]
    assert docs.count({"at": {"$gte": T0}}) == 6
    assert docs.count({"at": {"$exists": True}}) == 7
    # An instant between two milliseconds, against a date held to the millisecond.
    between = at["t4"] + timedelta(microseconds=500)
    assert where(gt=between) == ["o5", "t6"]
    assert where(gte=between) == ["o5", "t6"]
    assert where(lt=between, gt=at["o3"]) == ["t4"]
    assert where(lte=between, gt=at["o3"]) == ["t4"]
    assert ids(docs.find({"at": between})) == []


def test_sorts_place_bson_dates_among_the_texts(incidents: tuple[DocumentCollection, Any]) -> None:
    docs, _ = incidents
    by_time = ["o1", "t2", "o3", "t4", "o5", "t6"]
    assert ids(docs.find(sort="at")) == ["missing", "none", *by_time]
    assert ids(docs.find(sort="-at")) == [*by_time[::-1], "missing", "none"]
    assert ids(docs.find({"at": {"$gte": T0}}, sort="at", limit=3)) == ["o1", "t2", "o3"]
    assert ids(docs.find(sort="-at", limit=3)) == ["t6", "o5", "t4"]
    assert ids(docs.find(sort=["team", "-at"], limit=4)) == ["o5", "t4", "o1", "none"]
    assert ids(docs.find(sort=["-team", "at"], limit=3)) == ["missing", "t2", "o3"]
    assert ids(docs.find({"team": "a"}, sort="-at", limit=2)) == ["o5", "t4"]
    team_b, team_a = ["missing", "t2", "o3", "t6"], ["none", "o1", "t4", "o5"]
    assert ids(docs.find(sort=["-team", "at"])) == [*team_b, *team_a]

"""Training sets on parquet sources (the local profile's fast path) equal Feast's own
``get_historical_features``: ties on (keys, time) won by the latest created time, a missing
created time losing, rows without keys or time ignored, two join keys, integer keys, a view
without TTL or created column, the TTL boundary, unknown entities, rows before any data,
entity times naive or in another zone, the entity DataFrame's order, columns and dtypes kept,
and a rewritten file read again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import datalayer
from datalayer import DataLayer, QueryError
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.store import FeastStore
from datalayer.stores.feast.training import ParquetTrainingSet
from datalayer.testing.feast_repo import feature_store_yaml, write_feast_repo
from datalayer.testing.registry import write_registry

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DEVICES = 40
HOURS = 30

DEFINITIONS = """
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String

DATA = Path(__file__).parent / "data"
device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.STRING)
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

readings = FeatureView(
    name="readings",
    entities=[device],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="device_id", dtype=String),
        Field(name="count", dtype=Int64),
        Field(name="ratio", dtype=Float64),
        Field(name="label", dtype=String),
        Field(name="flag", dtype=Bool),
    ],
    source=FileSource(
        name="readings",
        path=str(DATA / "readings.parquet"),
        timestamp_field="ts",
        created_timestamp_column="created",
    ),
)
pairs = FeatureView(
    name="pairs",
    entities=[device, user],
    ttl=timedelta(0),
    schema=[
        Field(name="device_id", dtype=String),
        Field(name="user_id", dtype=Int64),
        Field(name="score", dtype=Float64),
    ],
    source=FileSource(name="pairs", path=str(DATA / "pairs.parquet"), timestamp_field="ts"),
)
levels = FeatureView(
    name="levels",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name="user_id", dtype=Int64), Field(name="level", dtype=Int64)],
    source=FileSource(
        name="levels",
        path=str(DATA / "levels.parquet"),
        timestamp_field="ts",
        created_timestamp_column="created",
    ),
)
"""

REFERENCES = [
    "readings:count",
    "readings:ratio",
    "readings:label",
    "readings:flag",
    "pairs:score",
    "levels:level",
]
COLUMNS = [r.replace(":", "__") for r in REFERENCES]


def stamps(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = frame[column].astype("datetime64[us, UTC]")
    return frame


def readings(salt: int) -> pd.DataFrame:
    """Hourly rows of many devices, about one in ten duplicated at the same hour with a
    later or earlier created time; dev-0's rows are hand-made (see the checks)."""
    rng = np.random.default_rng(salt)
    rows: list[dict[str, Any]] = []
    for d in range(1, DEVICES):
        for h in rng.choice(HOURS, HOURS * 3 // 4, replace=False):
            at = T - timedelta(hours=int(h))
            copies = 2 if rng.random() < 0.1 else 1
            # Distinct created times: Feast's pick among equal ones is arbitrary.
            for minutes in rng.choice(50, copies, replace=False):
                i = int(rng.integers(0, 1000))
                rows.append(
                    {
                        "device_id": f"dev-{d}",
                        "count": None if i % 11 == 0 else i + salt,
                        "ratio": None if i % 13 == 0 else i / 7,
                        "label": None if i % 5 == 0 else f"l{i}",
                        "flag": None if i % 7 == 0 else bool(i % 2),
                        "ts": at,
                        "created": at + timedelta(minutes=int(minutes)),
                    }
                )

    def made(count: int, at: datetime, created: datetime | None) -> dict[str, Any]:
        return {
            "device_id": "dev-0",
            "count": count,
            "ratio": count / 2,
            "label": f"c{count}",
            "flag": True,
            "ts": at,
            "created": created,
        }

    rows += [
        made(1 + salt, T - timedelta(hours=3), T - timedelta(hours=3)),
        made(20 + salt, T - timedelta(hours=1), T - timedelta(minutes=30)),  # wins the tie
        made(2 + salt, T - timedelta(hours=1), T - timedelta(hours=1)),
        made(3 + salt, T, None),  # no created time: loses the tie
        made(30 + salt, T, T),
        {**made(99, T + timedelta(hours=5), T), "device_id": None},  # no key: never read
        {**made(98, T - timedelta(hours=2), T), "ts": None},  # no time: never read
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=salt).reset_index(drop=True)
    frame["count"] = frame["count"].astype("Int64")
    frame["flag"] = frame["flag"].astype("boolean")
    return stamps(frame, "ts", "created")


def write_data(data: Path, salt: int) -> None:
    readings(salt).to_parquet(data / "readings.parquet", index=False)
    pairs = pd.DataFrame(
        [
            {
                "device_id": f"dev-{d}",
                "user_id": u,
                "score": d * 100 + u + h + salt,
                "ts": T - timedelta(hours=h, minutes=d),
            }
            for d in range(8)
            for u in range(-2, 3)
            for h in range(0, HOURS, 5)
        ]
    )
    pairs["ts"] = pairs["ts"].dt.tz_localize(None)  # naive times: read as UTC
    pairs.to_parquet(data / "pairs.parquet", index=False)
    levels = pd.DataFrame(
        [
            {"user_id": u, "level": u * 10 + h + salt, "ts": T - timedelta(hours=h)}
            for u in range(-2, 5)
            for h in range(0, 48, 12)
        ]
    )
    levels["created"] = levels["ts"]
    stamps(levels, "ts", "created").to_parquet(data / "levels.parquet", index=False)


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[DataLayer]:
    repo = tmp_path / "repo"
    write_feast_repo(repo, {"local": feature_store_yaml("sqlite", "duckdb")}, DEFINITIONS)
    write_data(repo / "data", salt=0)
    project = f"h{uuid.uuid4().hex[:10]}"
    store = {"type": "feast", "repo": str(repo), "profile": "local", "project": project}
    write_registry(
        tmp_path,
        {"local": {"features": store}},
        {"training": {"category": "feature", "store": "features", "features": REFERENCES}},
    )
    dl = datalayer.open(tmp_path / "datalayer.yaml", "local")
    dl.apply()
    yield dl
    dl.close()


def entity_frame() -> pd.DataFrame:
    """Every device (and two unknown ones) with every user at times from before any data to
    past the TTL, dev-0 at the hand-made instants; rows shuffled, on a shuffled index."""
    instants = [T - timedelta(hours=h, minutes=m) for h in range(-3, HOURS + 2, 2) for m in (0, 17)]
    rows = [
        {"device_id": f"dev-{d}", "user_id": u, "event_timestamp": at, "note": f"n{d}"}
        for d in range(DEVICES + 2)
        for u in (-2, 0, 4, 7)
        for at in instants[(d + u) % 3 :: 3]
    ]
    edges = [
        T - timedelta(hours=4),  # before any data
        T - timedelta(hours=1),  # the tie at T-1h
        T - timedelta(minutes=30),
        T,  # the tie at T
        T + timedelta(hours=2),  # exactly the TTL after the last row: kept
        T + timedelta(hours=2, microseconds=1),  # just past it: missing
    ]
    rows += [
        {"device_id": "dev-0", "user_id": 1, "event_timestamp": at, "note": "edge"} for at in edges
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3)
    frame.insert(0, "row_id", np.arange(len(frame)))
    frame.index = np.arange(len(frame))[::-1] * 3
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def feasts(dl: DataLayer, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Feast's own training set, rows back in the entity DataFrame's order."""
    store = dl.store("features")
    assert isinstance(store, FeastStore)
    job = store.feature_store.get_historical_features(
        entity_df=entity_df.reset_index(drop=True), features=REFERENCES, full_feature_names=True
    )
    return job.to_df().sort_values("row_id").reset_index(drop=True)


def same(value: Any) -> Any:
    """One spelling for a missing value; numbers compared as floats."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    return float(value) if isinstance(value, int | float | np.number) else value


def assert_equal_to_feast(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    assert len(ours) == len(theirs)
    for column in COLUMNS:
        assert [same(v) for v in ours[column]] == [same(v) for v in theirs[column]], column


def edge_values(result: pd.DataFrame) -> list[Any]:
    edges = result[result["note"] == "edge"].sort_values("event_timestamp")
    return [same(v) for v in edges["readings__count"]]


def test_training_set_equals_feasts_own(layer: DataLayer) -> None:
    entity_df = entity_frame()
    before = entity_df.copy()
    features = layer.features("training")
    assert isinstance(features.backend, FeastFeatures)
    assert isinstance(features.backend.training_set, ParquetTrainingSet)
    ours = features.historical(entity_df)
    pd.testing.assert_frame_equal(entity_df, before)  # the input is left as it was
    assert list(ours.columns) == [*entity_df.columns, *COLUMNS]
    assert list(ours.index) == list(range(len(entity_df)))
    assert list(ours["row_id"]) == list(entity_df["row_id"])
    assert list(ours["note"]) == list(entity_df["note"])
    assert str(ours["readings__count"].dtype) == "Int64"
    assert str(ours["levels__level"].dtype) == "Int64"
    assert str(ours["readings__ratio"].dtype) == "float64"
    assert_equal_to_feast(ours, feasts(layer, entity_df))
    assert edge_values(ours) == [None, 20.0, 20.0, 30.0, 30.0, None]
    for column in COLUMNS:  # every kind of outcome occurs
        assert ours[column].notna().any() and ours[column].isna().any(), column


def test_entity_times_naive_or_in_another_zone_read_as_utc(layer: DataLayer) -> None:
    entity_df = entity_frame()
    features = layer.features("training")
    expected = features.historical(entity_df)
    naive = entity_df.assign(event_timestamp=entity_df["event_timestamp"].dt.tz_localize(None))
    zoned = entity_df.assign(
        event_timestamp=entity_df["event_timestamp"].dt.tz_convert("America/New_York")
    )
    for variant in (naive, zoned):
        got = features.historical(variant)
        assert list(got["event_timestamp"]) == list(expected["event_timestamp"])
        pd.testing.assert_frame_equal(got[COLUMNS], expected[COLUMNS])


def test_times_finer_than_a_microsecond_are_refused_never_shifted(layer: DataLayer) -> None:
    """The stores keep microseconds: a time 500 ns past the TTL's edge, truncated, would read
    as within it. Such a time is refused, naming its row; one microsecond past it is past."""
    last = pd.Timestamp(T + timedelta(hours=2))
    times = [last, last + pd.Timedelta(1, "us"), last + pd.Timedelta(nanoseconds=500)]
    entity_df = pd.DataFrame(
        {"device_id": ["dev-0"] * 3, "user_id": [1] * 3, "event_timestamp": times}
    )
    features = layer.features("training")
    with pytest.raises(QueryError, match=r"entity row 2 .*finer than a microsecond"):
        features.historical(entity_df)
    result = features.historical(entity_df.head(2))
    assert [same(v) for v in result["readings__count"]] == [30.0, None]
    assert list(result["event_timestamp"]) == times[:2]


def test_a_rewritten_file_is_read_again(layer: DataLayer, tmp_path: Path) -> None:
    entity_df = entity_frame()
    features = layer.features("training")
    first = features.historical(entity_df)
    pd.testing.assert_frame_equal(features.historical(entity_df), first)
    write_data(tmp_path / "repo" / "data", salt=1000)
    second = features.historical(entity_df)
    assert edge_values(second) == [None, 1020.0, 1020.0, 1030.0, 1030.0, None]
    assert_equal_to_feast(second, feasts(layer, entity_df))


def test_concurrent_calls_share_the_indexes(layer: DataLayer) -> None:
    entity_df = entity_frame()
    features = layer.features("training")
    results: list[pd.DataFrame] = []
    threads = [
        threading.Thread(target=lambda: results.append(features.historical(entity_df)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results[1:]:
        pd.testing.assert_frame_equal(result, results[0])
    assert edge_values(results[0]) == [None, 20.0, 20.0, 30.0, 30.0, None]


def test_no_entity_rows_give_an_empty_training_set(layer: DataLayer) -> None:
    entity_df = entity_frame().iloc[:0]
    result = layer.features("training").historical(entity_df)
    assert list(result.columns) == [*entity_df.columns, *COLUMNS]
    assert len(result) == 0

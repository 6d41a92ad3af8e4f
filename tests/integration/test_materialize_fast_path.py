"""Direct materialization into Feast's Redis layout writes byte for byte what Feast's own
``materialize`` writes: same keys, fields, value encodings and event times, from parquet and
from PostgreSQL, with nulls, NaN, ties broken by created time, rows outside the window, integer
entity keys, and the rule that an older or equal event time never overwrites."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import redis
import sqlalchemy as sa

import datalayer
from datalayer import DataLayer
from datalayer.stores.feast.materialize_redis import RedisLayoutWriter
from datalayer.testing.feast_repo import feature_store_yaml, write_feast_repo
from datalayer.testing.registry import write_registry

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DEVICES = 120

DEFINITIONS = """
import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float32, Float64, Int32, Int64, String

device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.STRING)
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)


def source(name):
    if os.environ["DATALAYER_FEAST_PROFILE"] == "pg":
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        return PostgreSQLSource(
            name=name, table=name, timestamp_field="ts", created_timestamp_column="created"
        )
    path = str(Path(__file__).parent / "data" / f"{name}.parquet")
    return FileSource(name=name, path=path, timestamp_field="ts", created_timestamp_column="created")


typed = FeatureView(
    name="typed",
    entities=[device],
    ttl=timedelta(days=1),
    schema=[
        Field(name="device_id", dtype=String),
        Field(name="count", dtype=Int64),
        Field(name="sparse_count", dtype=Int64),
        Field(name="small", dtype=Int32),
        Field(name="ratio", dtype=Float64),
        Field(name="ratio32", dtype=Float32),
        Field(name="label", dtype=String),
        Field(name="flag", dtype=Bool),
    ],
    source=source("typed"),
)
scores = FeatureView(
    name="scores",
    entities=[user],
    ttl=timedelta(days=1),
    schema=[Field(name="user_id", dtype=Int64), Field(name="score", dtype=Float64)],
    source=source("scores"),
)
"""


def typed_rows(hours: list[int], salt: int) -> pd.DataFrame:
    """Rows of every type with their edge values; ``hours`` are offsets from T."""
    labels = ["", "é" * 70, "plain", None, "ünï ☃", "ü" * 200]
    ratios = [0.5, float("nan"), float("inf"), -0.0, None, -1e300, 1.0 / 3]
    rows = []
    for d in range(DEVICES):
        for h in hours:
            i = d * 7 + h + salt
            rows.append(
                {
                    "device_id": f"dev-{d}",
                    "count": [-(2**62) - 3, -1, 0, 127, 128, 2**62 + 1, i][i % 7],
                    "sparse_count": None if i % 5 == 0 else 2**60 + i,
                    "small": [-(2**31), -5, 0, 2**31 - 1, i][i % 5],
                    "ratio": ratios[i % len(ratios)],
                    "ratio32": [1.25, float("nan"), None, -3.5][i % 4],
                    "label": labels[i % len(labels)],
                    "flag": [True, False, None][i % 3],
                    "ts": T + timedelta(hours=h),
                    "created": T + timedelta(hours=h, minutes=salt),
                }
            )
    frame = pd.DataFrame(rows)
    frame["count"] = frame["count"].astype("int64")
    frame["sparse_count"] = frame["sparse_count"].astype("Int64")
    frame["small"] = frame["small"].astype("int32")
    frame["ratio32"] = frame["ratio32"].astype("float32")
    frame["flag"] = frame["flag"].astype("boolean")
    return frame


def frames(hours: list[int], salt: int) -> dict[str, pd.DataFrame]:
    typed = typed_rows(hours, salt)
    scores = pd.DataFrame(
        [
            {
                "user_id": u - 20,
                "score": u / 7 if u % 9 else None,
                "ts": T + timedelta(hours=h),
                "created": T + timedelta(hours=h, minutes=salt),
            }
            for u in range(60)
            for h in hours
        ]
    )
    for frame in (typed, scores):
        for column in ("ts", "created"):
            frame[column] = frame[column].astype("datetime64[us, UTC]")
    return {"typed": typed, "scores": scores}


def write(source: str, repo: Path, data: dict[str, pd.DataFrame], url: str | None) -> None:
    if source == "pg":
        assert url
        engine = sa.create_engine("postgresql+psycopg://" + url.split("://", 1)[1])
        with engine.begin() as con:
            for name, frame in data.items():
                frame.to_sql(name, con, if_exists="replace", index=False)
        engine.dispose()
    else:
        for name, frame in data.items():
            frame.to_parquet(repo / "data" / f"{name}.parquet", index=False)


@pytest.fixture(params=["parquet", "pg"])
def case(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> Iterator[tuple[DataLayer, str, str | None]]:
    source = request.param
    url = request.getfixturevalue("postgres_database") if source == "pg" else None
    repo = tmp_path / "repo"
    offline = "postgres" if source == "pg" else "duckdb"
    write_feast_repo(repo, {source: feature_store_yaml("redis", offline)}, DEFINITIONS)
    project = f"m{uuid.uuid4().hex[:10]}"
    store = {
        "type": "feast",
        "repo": str(repo),
        "profile": source,
        "project": project,
        "redis_url": redis_url,
    }
    if url:
        store["postgres_url"] = url
    write_registry(
        tmp_path,
        {"p": {"features": store}},
        {
            "everything": {
                "category": "feature",
                "store": "features",
                "features": [
                    *(f"typed:{f}" for f in ("count", "sparse_count", "small", "ratio")),
                    *(f"typed:{f}" for f in ("ratio32", "label", "flag")),
                    "scores:score",
                ],
            }
        },
    )
    # Several rows per entity, a tie at +0h won by the later created time, one row past T.
    data = frames([-3, -1, 0, 1], salt=0)
    ties = frames([0], salt=5)
    write(source, repo, {k: pd.concat([data[k], ties[k]]) for k in data}, url)
    dl = datalayer.open(tmp_path / "datalayer.yaml", "p")
    dl.apply()
    yield dl, project, url
    dl.close()


def dump(client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    return {key: client.hgetall(key) for key in client.scan_iter(match=f"*{project}", count=1000)}


def clear(client: redis.Redis, project: str) -> None:
    for key in client.scan_iter(match=f"*{project}", count=1000):
        client.delete(key)


def test_direct_materialization_writes_what_feast_writes(
    case: tuple[DataLayer, str, str | None], redis_url: str
) -> None:
    dl, project, _ = case
    features = dl.features("everything")
    fs = dl.store("features").feature_store  # type: ignore[attr-defined]
    client = redis.Redis.from_url(redis_url)
    windows = [(T - timedelta(days=1), T), (T - timedelta(days=2), T + timedelta(hours=2))]
    results = {}
    for who in ("feast", "ours"):
        clear(client, project)
        snapshots = []
        for start, end in windows:
            if who == "feast":
                fs.materialize(start, end)
            else:
                features.materialize(start, end)
            snapshots.append(dump(client, project))
        results[who] = snapshots
    for ours, theirs in zip(results["ours"], results["feast"], strict=True):
        assert len(ours) == DEVICES + 60
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key] == theirs[key], key
    assert results["ours"][0] != results["ours"][1]  # the second window brought newer rows
    view = fs.get_feature_view("typed")
    assert view.most_recent_end_time == T + timedelta(hours=2)
    client.close()


def test_older_rows_never_overwrite_newer_ones(case: tuple[DataLayer, str, str | None]) -> None:
    dl, _, _ = case
    features = dl.features("everything")
    features.materialize(T - timedelta(days=1), T + timedelta(hours=2))
    rows = [{"device_id": "dev-3", "user_id": 1}]
    newest = features.online(rows, as_of=T + timedelta(hours=1))
    features.materialize(T - timedelta(days=1), T - timedelta(hours=2))  # only older rows
    assert features.online(rows, as_of=T + timedelta(hours=1)) == newest
    assert newest["typed__label"] != [None] or newest["typed__count"] != [None]


@pytest.mark.parametrize("case", ["parquet"], indirect=True)
def test_event_times_compare_exactly_across_the_epoch(
    case: tuple[DataLayer, str, str | None], redis_url: str
) -> None:
    """The compare-and-set decodes stored Timestamps in Redis: negative seconds (10-byte
    varints), sub-second ties and the unset time all order as Feast orders them."""
    dl, _, _ = case
    fs = dl.store("features").feature_store  # type: ignore[attr-defined]
    client = redis.Redis.from_url(redis_url)
    writer = RedisLayoutWriter(fs, fs.get_feature_view("scores"), client)
    at = datetime(1969, 12, 31, 23, 59, 50, tzinfo=UTC)
    steps = [  # (event time, expected write)
        (at, True),
        (at - timedelta(seconds=10), False),
        (at, False),
        (at + timedelta(microseconds=1), True),
        (datetime(1970, 1, 1, tzinfo=UTC), True),  # stored seconds 0, nanos 0: unset
        (at, True),
        (T, True),
        (T - timedelta(microseconds=1), False),
    ]
    for i, (instant, expected) in enumerate(steps):
        batch = pa.RecordBatch.from_pydict(
            {
                "user_id": pa.array([7], pa.int64()),
                "score": pa.array([float(i)]),
                "ts": pa.array([instant], pa.timestamp("us", "UTC")),
            }
        )
        assert writer.write(batch) == int(expected), (i, instant)
    online = dl.features("everything").online([{"device_id": "none", "user_id": 7}], as_of=T)
    assert online["scores__score"] == [6.0]
    client.close()

"""A Feast repo datalayer did not write: a plain ``feature_store.yaml`` with its own project
name and a literal Redis connection string, no ``${DATALAYER_FEAST_*}`` variable, and a
registry that names nothing but the repo. The fast online read connects from the yaml and
answers what Feast answers; a ``redis_url`` that names another server is refused up front."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

import datalayer
from datalayer.errors import ConfigError, QueryError
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.online import RedisOnlineRead
from datalayer.stores.feast.repo_yaml import connection_string
from datalayer.stores.feast.store import FeastStore
from datalayer.testing.registry import write_registry
from tests.integration.test_online_fast_path import (
    DEFINITIONS,
    INSTANTS,
    Setup,
    _rows,
    _through_feast,
    _write,
    canon_columns,
)

REFERENCES = ["scalars:i64", "scalars:s", "scalars:f64s", "short:n", "forever:label"]


def foreign_repo(folder: Path, redis_url: str, project: str) -> Path:
    repo = folder / "drivers_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFINITIONS)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{connection_string(redis_url)}"\n'
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    return repo


def test_a_plain_feature_store_yaml_feeds_the_fast_read_its_own_connection(
    tmp_path: Path, redis_url: str
) -> None:
    foreign_repo(tmp_path, redis_url, f"drivers_{uuid.uuid4().hex[:8]}")
    registry = write_registry(
        tmp_path,
        {"local": {"features": {"type": "feast", "repo": "drivers_repo"}}},
        {"things": {"category": "feature", "store": "features", "features": REFERENCES}},
    )
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        store = dl.store("features")
        assert isinstance(store, FeastStore)
        assert store.yaml_file.name == "feature_store.yaml"
        fs = store.feature_store
        try:
            _write(fs, np.random.default_rng(5))
            features = dl.features("things")
            backend = features.backend
            assert isinstance(backend, FeastFeatures)
            assert isinstance(backend.online_read, RedisOnlineRead)  # the fast path engaged
            setup = Setup(features, fs, features.references(), registry)
            rows = _rows([*range(35), 1000])
            for at in INSTANTS.values():
                ours = features.online(rows, as_of=at)
                assert canon_columns(ours) == canon_columns(_through_feast(setup, rows, at))
            served = features.online(_rows(list(range(10))), as_of=INSTANTS["at T"])
            assert sum(v is not None for v in served["scalars__s"]) >= 5  # not all None
        finally:
            fs.teardown()


def test_a_redis_url_naming_another_server_is_refused_at_validate(
    tmp_path: Path, redis_url: str
) -> None:
    foreign_repo(tmp_path, redis_url, "drivers")
    url = urlsplit(redis_url)
    elsewhere = redis_url.replace(f":{url.port}", f":{url.port + 1 if url.port else 6380}")
    registry = write_registry(
        tmp_path,
        {"local": {"features": {"type": "feast", "repo": "drivers_repo", "redis_url": elsewhere}}},
    )
    with pytest.raises(ConfigError, match=r"features\.redis_url: redis_url names .* but"):
        datalayer.open(registry, "local")
    registry = write_registry(
        tmp_path,
        {"local": {"features": {"type": "feast", "repo": "drivers_repo", "redis_url": redis_url}}},
    )
    with datalayer.open(registry, "local") as dl:  # the same server, spelled as a URL: fine
        assert dl.store("features").config.type == "feast"


DRIVERS = '''\
"""A repo in the shape ``feast init`` writes: a relative FileSource path."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
stats = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(hours=5),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
    ],
    source=stats,
)
'''
DRIVER_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
]


def test_relative_file_sources_are_the_repo_s_whatever_the_working_directory(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from datalayer.stores.feast.online import FeastOnlineRead
    from datalayer.stores.feast.training import FeastTrainingSet, ParquetTrainingSet

    repo = foreign_repo(tmp_path, redis_url, f"drv_{uuid.uuid4().hex[:8]}")
    (repo / "definitions.py").write_text(DRIVERS)
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2026-11-01T00:00:00Z")
    hours = pd.date_range(start, periods=24, freq="h")
    frame = pd.DataFrame(
        [
            {
                "driver_id": d,
                "event_timestamp": t,
                "created": t,
                "conv_rate": rng.random(),
                "acc_rate": rng.random(),
                "avg_daily_trips": int(rng.integers(0, 500)),
            }
            for d in range(1001, 1041)
            for t in hours
            if rng.random() < 0.6
        ]
    )
    frame["conv_rate"] = frame["conv_rate"].astype("float32")
    frame["acc_rate"] = frame["acc_rate"].astype("float32")
    frame.to_parquet(repo / "data" / "driver_stats.parquet")
    registry = write_registry(
        tmp_path,
        {"local": {"features": {"type": "feast", "repo": "drivers_repo"}}},
        {"drivers": {"category": "feature", "store": "features", "features": DRIVER_FEATURES}},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        store = dl.store("features")
        assert isinstance(store, FeastStore)
        fs = store.feature_store
        try:
            view = dl.features("drivers")
            backend = view.backend
            assert isinstance(backend, FeastFeatures)
            entity_df = pd.DataFrame(
                {
                    "driver_id": rng.integers(1000, 1042, 300),
                    "event_timestamp": start + pd.to_timedelta(rng.integers(-3, 32, 300), "h"),
                }
            ).drop_duplicates(ignore_index=True)  # Feast's file store folds repeated rows
            assert isinstance(backend.training_set, ParquetTrainingSet)  # the fast path
            ours = view.historical(entity_df)
            feasts = FeastTrainingSet(backend).build(entity_df, backend.references())
            # Feast's file (dask) offline store leaves out the entity rows that find no value
            # (before the data, past the TTL); ours keeps each, with nulls, as Feast's DuckDB
            # and PostgreSQL offline stores do. Every row Feast returns is equal.
            keys = ["driver_id", "event_timestamp"]
            kept = ours.merge(feasts[keys], on=keys)
            pd.testing.assert_frame_equal(
                kept.sort_values(keys, ignore_index=True),
                feasts.sort_values(keys, ignore_index=True),
                check_dtype=False,
            )
            left_out = ours.merge(feasts[keys], on=keys, how="left", indicator=True)
            left_out = left_out[left_out["_merge"] == "left_only"]
            assert left_out[view.columns(DRIVER_FEATURES)].isna().all().all()
            assert kept["driver_hourly_stats__conv_rate"].notna().sum() > 150
            # A time finer than a microsecond would be compared shifted: refused, by row.
            finer = entity_df.head(3).copy()
            finer.loc[1, "event_timestamp"] += pd.Timedelta(nanoseconds=1)
            with pytest.raises(QueryError, match=r"entity row 1 .*finer than a microsecond"):
                view.historical(finer)

            end = start + pd.Timedelta(hours=24)
            view.materialize(start.to_pydatetime(), end.to_pydatetime())
            rows = [{"driver_id": d} for d in range(1000, 1042)]
            at = (start + pd.Timedelta(hours=26)).to_pydatetime()
            served = view.online(rows, as_of=at)
            checked = view.entity_rows(rows, DRIVER_FEATURES)
            expected = {
                "driver_id": [row["driver_id"] for row in checked],
                **FeastOnlineRead(backend).read(checked, DRIVER_FEATURES, at),
            }
            assert canon_columns(served) == canon_columns(expected)
            assert sum(v is not None for v in served["driver_hourly_stats__avg_daily_trips"]) > 20
            # One dtype per feature, serving and training (driver 1000 is unknown: a null).
            trips = "driver_hourly_stats__avg_daily_trips"
            online_df = view.online_df(rows, as_of=at)
            assert online_df[trips].isna().any()
            assert str(online_df[trips].dtype) == str(ours[trips].dtype) == "Int64"
        finally:
            fs.teardown()

"""Feast repositories generated from a seed, each unlike the last: views over one entity or a
compound key of two (an integer and a string join key), TTLs of 0 (no expiry), an hour or two
days, with and without a created-time column, features of random Feast types (every scalar and
list type, Map, Json, Struct) with nulls, a push source and an on-demand view over request data.

On each, datalayer's fast paths must answer what Feast's own paths answer: the Redis
materializer writes byte for byte what Feast's ``materialize`` writes (a map's entries in any
order), the direct Redis read
equals Feast's read (with the TTL rule applied), the parquet training set equals Feast's, and a
pushed row reads back the same through both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

import datalayer
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.materialize import FeastMaterializer, RedisMaterializer
from datalayer.stores.feast.online import FeastOnlineRead, RedisOnlineRead
from datalayer.stores.feast.online_redis import decode_raw
from datalayer.stores.feast.repo_yaml import connection_string
from datalayer.stores.feast.training import ParquetTrainingSet
from datalayer.testing.registry import write_registry
from tests.integration.test_materialize_fast_path import clear, dump
from tests.unit.test_feast_decoders import canon_deep

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
THINGS = 30
REGIONS = ["eu", "us", "日本", "a b", ""]

#: Feast type -> a generator of one value (rng, i) and the pandas dtype of the column.
TYPES: dict[str, tuple[Any, str | None]] = {
    "Int64": (lambda r, i: int(r.integers(-(2**62), 2**62)), "Int64"),
    "Int32": (lambda r, i: int(r.integers(-(2**31), 2**31 - 1)), "Int32"),
    "Float64": (lambda r, i: float(r.normal() * 1e3), "float64"),
    "Float32": (lambda r, i: float(r.normal()), "float32"),
    "String": (lambda r, i: ["", "é", "日本語", f"s{i}", "x" * 100][i % 5], None),
    "Bool": (lambda r, i: bool(r.integers(2)), "boolean"),
    "Bytes": (lambda r, i: r.bytes(int(r.integers(0, 12))), None),
    "UnixTimestamp": (
        lambda r, i: NOW - timedelta(seconds=int(r.integers(0, 10**7))),
        "datetime64[us, UTC]",
    ),
    "Array(Int64)": (lambda r, i: [int(v) for v in r.integers(-(10**12), 10**12, i % 4)], None),
    "Array(Int32)": (lambda r, i: [int(v) for v in r.integers(-1000, 1000, i % 3 + 1)], None),
    "Array(Float64)": (lambda r, i: [float(v) for v in r.normal(size=i % 4)], None),
    "Array(Float32)": (lambda r, i: [float(np.float32(v)) for v in r.normal(size=2)], None),
    "Array(String)": (lambda r, i: [f"t{j}" for j in range(i % 3 + 1)], None),
    "Array(Bool)": (lambda r, i: [bool(v) for v in r.integers(0, 2, 3)], None),
    "Array(Bytes)": (lambda r, i: [r.bytes(3), b""], None),
    "Map": (lambda r, i: {"kind": ["a", "b"][i % 2], "rating": str(i % 5)}, None),
    "Json": (lambda r, i: json.dumps({"n": i, "zones": ["n", "s"][: i % 3]}), None),
    'Struct({"name": String, "age": String})': (
        lambda r, i: {"name": f"n{i}", "age": str(20 + i % 50)},
        None,
    ),
}
TTLS = ["timedelta(0)", "timedelta(hours=1)", "timedelta(days=2)"]
#: Seeds whose repos, between them, use every type and TTL, with and without created times.
SEEDS = [1, 2, 3]


@dataclass
class View:
    name: str
    keys: list[str]
    ttl: str
    created: bool
    features: dict[str, str]  # name -> Feast type
    push: bool = False


def plan(seed: int) -> list[View]:
    """Three views of random shape; the first always has a Float64 feature (the on-demand
    view reads it), the last a push source."""
    rng = np.random.default_rng(seed)
    kinds = sorted(TYPES)
    views = []
    for v, keys in enumerate([["thing_id"], ["thing_id", "region"], ["region"]]):
        chosen = list(rng.choice(kinds, size=int(rng.integers(4, 8)), replace=False))
        if v == 0 and "Float64" not in chosen:
            chosen.append("Float64")
        views.append(
            View(
                name=f"view_{v}",
                keys=keys,
                ttl=TTLS[int(rng.integers(len(TTLS)))],
                created=bool(rng.integers(2)),
                features={f"f{j}_{k.split('(')[0].lower()}": k for j, k in enumerate(chosen)},
                push=v == 2,
            )
        )
    return views


def definitions(views: list[View]) -> str:
    lines = [
        "from datetime import timedelta",
        "import pandas as pd",
        "from feast import (Entity, FeatureService, FeatureView, Field, FileSource, PushSource,",
        "    RequestSource, ValueType)",
        "from feast.on_demand_feature_view import on_demand_feature_view",
        "from feast.types import (Array, Bool, Bytes, Float32, Float64, Int32, Int64, Json, Map,",
        "    String, Struct, UnixTimestamp)",
        'thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)',
        'region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING)',
    ]
    for view in views:
        created = ', created_timestamp_column="created"' if view.created else ""
        lines.append(
            f'{view.name}_file = FileSource(name="{view.name}_file", path="data/{view.name}.parquet",'
            f' timestamp_field="ts"{created})'
        )
        source = f"{view.name}_file"
        if view.push:
            lines.append(
                f'{view.name}_push = PushSource(name="{view.name}_push", batch_source={source})'
            )
            source = f"{view.name}_push"
        entities = ", ".join("thing" if k == "thing_id" else "region" for k in view.keys)
        fields = ", ".join(f'Field(name="{n}", dtype={t})' for n, t in view.features.items())
        lines.append(
            f'{view.name} = FeatureView(name="{view.name}", entities=[{entities}], '
            f"ttl={view.ttl}, schema=[{fields}], source={source})"
        )
    first = views[0]
    number = next(n for n, t in first.features.items() if t == "Float64")
    lines += [
        'extra = RequestSource(name="extra", schema=[Field(name="bonus", dtype=Float64)])',
        "@on_demand_feature_view(",
        f'    sources=[{first.name}, extra], schema=[Field(name="boosted", dtype=Float64)])',
        "def boosted(inputs: pd.DataFrame) -> pd.DataFrame:",
        "    out = pd.DataFrame()",
        f'    out["boosted"] = inputs["{number}"] + inputs["bonus"]',
        "    return out",
        'everything = FeatureService(name="everything", features=['
        + ", ".join(v.name for v in views)
        + ", boosted])",
    ]
    return "\n".join(lines) + "\n"


def entity_values(view: View, i: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "thing_id" in view.keys:
        values["thing_id"] = i % THINGS
    if "region" in view.keys:
        values["region"] = REGIONS[(i // THINGS + i) % len(REGIONS)]
    return values


def data(view: View, rng: np.random.Generator) -> pd.DataFrame:
    """One to three rows per entity over the last three days, a null in one value of ten."""
    rows = []
    for i in range(THINGS * 2):
        for _ in range(int(rng.integers(1, 4))):
            row = entity_values(view, i)
            row["ts"] = NOW - timedelta(seconds=int(rng.integers(0, 3 * 86_400)))
            if view.created:
                row["created"] = row["ts"] + timedelta(seconds=int(rng.integers(0, 60)))
            for j, (name, kind) in enumerate(view.features.items()):
                make = TYPES[kind][0]
                row[name] = None if rng.random() < 0.1 else make(rng, i + j)
            rows.append(row)
    frame = pd.DataFrame(rows).drop_duplicates(subset=[*view.keys, "ts"])
    for column in ("ts", "created"):
        if column in frame:
            frame[column] = frame[column].astype("datetime64[us, UTC]")
    for name, kind in view.features.items():
        dtype = TYPES[kind][1]
        if dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


@dataclass
class Generated:
    dl: datalayer.DataLayer
    fs: Any
    views: list[View]
    client: redis.Redis
    project: str

    @property
    def backend(self) -> FeastFeatures:
        backend = self.dl.features("everything").backend
        assert isinstance(backend, FeastFeatures)
        return backend


@pytest.fixture(scope="module", params=SEEDS)
def generated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Generated]:
    seed = request.param
    folder = tmp_path_factory.mktemp(f"generated_{seed}")
    repo = folder / "repo"
    (repo / "data").mkdir(parents=True)
    views = plan(seed)
    (repo / "definitions.py").write_text(definitions(views))
    rng = np.random.default_rng(seed)
    for view in views:
        data(view, rng).to_parquet(repo / "data" / f"{view.name}.parquet", index=False)
    project = f"gen{seed}_{uuid.uuid4().hex[:6]}"
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\nprovider: local\nregistry: data/registry.db\n"
        f'online_store:\n  type: redis\n  connection_string: "{connection_string(redis_url)}"\n'
        "entity_key_serialization_version: 3\n"
    )
    registry = write_registry(
        folder,
        # pushes go online only: Feast's own offline push into a parquet file fails for list
        # columns (its arrow type map lacks them)
        {"local": {"features": {"type": "feast", "repo": "repo", "push_mode": "online"}}},
        {
            "everything": {
                "category": "feature",
                "store": "features",
                "feature_service": "everything",
            }
        },
    )
    client = redis.Redis.from_url(redis_url)
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        fs = dl.store("features").feature_store
        yield Generated(dl, fs, views, client, project)
        clear(client, project)
    client.close()


def test_materialization_writes_what_feast_writes(generated: Generated) -> None:
    backend = generated.backend
    assert isinstance(backend.materializer, RedisMaterializer)
    start, end = NOW - timedelta(days=4), NOW
    clear(generated.client, generated.project)
    FeastMaterializer(backend).materialize(start, end, None)
    theirs = dump(generated.client, generated.project)
    clear(generated.client, generated.project)
    backend.materializer.materialize(start, end, None)
    ours = dump(generated.client, generated.project)
    assert len(ours) > THINGS
    assert ours.keys() == theirs.keys()
    for key, fields in ours.items():
        assert fields.keys() == theirs[key].keys(), key
        for field, raw in fields.items():
            if raw != theirs[key][field]:
                # a map's entries: protobuf orders them by its hash table, so only the
                # decoded maps compare
                mine, feast = decode_raw(raw), decode_raw(theirs[key][field])
                assert isinstance(mine, dict) and mine == feast, (key, field, mine, feast)


def rows(count: int) -> list[dict[str, Any]]:
    """Entity rows over every key shape, unknown entities among them."""
    return [
        {"thing_id": i % (THINGS + 3), "region": REGIONS[i % len(REGIONS)], "bonus": i / 4}
        for i in range(count)
    ]


def test_online_read_equals_feast_s(generated: Generated) -> None:
    backend = generated.backend
    generated.dl.features("everything").materialize(NOW - timedelta(days=4), NOW)
    assert isinstance(backend.online_read, RedisOnlineRead)
    references = backend.stored_references(backend.references())
    wanted = rows(45)
    for at in (NOW, NOW + timedelta(minutes=50), NOW + timedelta(days=1)):
        ours = backend.online_read.read(wanted, references, at)
        theirs = FeastOnlineRead(backend).read(
            [{k: r[k] for k in ("thing_id", "region")} for r in wanted], references, at
        )
        for column, values in ours.items():
            assert canon_deep(values) == canon_deep(theirs[column]), (
                at,
                column,
                values,
                theirs[column],
            )
    # the on-demand view: Feast's value wherever its input is within the TTL, else None
    # (Feast's online read ignores the TTL)
    served = generated.dl.features("everything").online(wanted, as_of=NOW)
    feast = generated.fs.get_online_features(
        features=generated.fs.get_feature_service("everything"),
        entity_rows=wanted,
        full_feature_names=True,
    ).to_dict()
    first = generated.views[0]
    number = next(n for n, t in first.features.items() if t == "Float64")
    inputs = served[f"{first.name}__{number}"]
    expected = [
        value if present is not None else None
        for value, present in zip(feast["boosted__boosted"], inputs, strict=True)
    ]
    assert canon_deep(served["boosted__boosted"]) == canon_deep(expected)
    assert any(value is not None for value in expected)


def test_training_set_equals_feast_s(generated: Generated) -> None:
    backend = generated.backend
    assert isinstance(backend.training_set, ParquetTrainingSet)
    rng = np.random.default_rng(5)
    entity_df = pd.DataFrame(rows(60)).assign(
        event_timestamp=[NOW - timedelta(seconds=int(s)) for s in rng.integers(0, 4 * 86_400, 60)]
    )
    entity_df["event_timestamp"] = entity_df["event_timestamp"].astype("datetime64[us, UTC]")
    ours = generated.dl.features("everything").historical(entity_df)
    # Feast's file offline store leaves out entity rows that find no value in some view: each
    # view is compared alone, so that most rows are compared
    compared = 0
    for view in generated.views:
        job = generated.fs.get_historical_features(
            entity_df=entity_df.assign(row=range(len(entity_df))),
            features=[f"{view.name}:{name}" for name in view.features],
            full_feature_names=True,
        )
        theirs = job.to_df().set_index("row").sort_index()
        for row, found in theirs.iterrows():
            for name in view.features:
                column = f"{view.name}__{name}"
                got, want = ours[column].iloc[row], found[column]
                assert same_cell(got, want), (row, column, got, want)
                compared += not same_cell(want, None)
    assert compared >= 100


def same_cell(got: Any, want: Any) -> bool:
    """One training-set cell against Feast's: nulls alike, arrays as lists, floats exactly."""
    if isinstance(want, np.ndarray):
        want = want.tolist()
    if isinstance(got, np.ndarray):
        got = got.tolist()
    if not isinstance(want, list | dict) and pd.isna(want):
        return not isinstance(got, list | dict) and bool(pd.isna(got))
    return bool(canon_deep(_plain(got)) == canon_deep(_plain(want)))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_a_pushed_row_reads_back_through_both(generated: Generated) -> None:
    pushed = generated.views[2]
    rng = np.random.default_rng(9)
    row: dict[str, Any] = {"region": "pushed ☃"}
    for j, (name, kind) in enumerate(pushed.features.items()):
        row[name] = TYPES[kind][0](rng, j)
    frame = pd.DataFrame([row])
    for name, kind in pushed.features.items():
        if TYPES[kind][1]:
            frame[name] = frame[name].astype(TYPES[kind][1])
    features = generated.dl.features("everything")
    features.push(frame, view=pushed.name)
    references = [f"{pushed.name}:{name}" for name in pushed.features]
    backend = generated.backend
    ours = backend.online_read.read([{"region": "pushed ☃"}], references, datetime.now(UTC))
    theirs = FeastOnlineRead(backend).read([{"region": "pushed ☃"}], references, datetime.now(UTC))
    assert canon_deep(ours) == canon_deep(theirs)
    assert sum(v[0] is not None for v in ours.values()) >= len(references) - 1


def test_the_seeds_cover_every_type_ttl_and_created_column() -> None:
    views = [view for seed in SEEDS for view in plan(seed)]
    assert {kind for view in views for kind in view.features.values()} == set(TYPES)
    assert {view.ttl for view in views} == set(TTLS)
    assert {view.created for view in views} == {True, False}

"""The direct Redis read decodes whole columns at once: it must answer exactly what Feast's
``get_online_features`` answers (with the view TTLs applied as ``online`` applies them), for
every value type, with nulls, unknown entities, views never written for an entity, features
absent from a hash, expired values and event times with and without fractions of a second.

The batch decoders are also checked, value for value, against protobuf's own parser on edge
values: a float is compared by its bits, so NaN, -0.0 and infinities count."""

from __future__ import annotations

import math
import struct
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

import datalayer
from datalayer.categories.feature import FeatureView
from datalayer.stores.feast import compat, wire
from datalayer.stores.feast import online_redis as feast_redis
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.materialize import FeastMaterializer
from datalayer.stores.feast.online import FeastOnlineRead, RedisOnlineRead
from datalayer.stores.feast.online_redis import (
    batch_decoder,
    decode,
    decode_column,
    decode_raw,
    entity_keys,
    event_nanos,
    read_plan,
)
from datalayer.stores.feast.store import FeastStore

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SHORT_TTL = timedelta(hours=1)
ON_THE_EDGE = timedelta(microseconds=250)
THINGS = 40
#: Things 0..29 have every view written; 30..39 only "scalars"; 1000+ are never written.
WRITTEN = 30

BIG = 2**63 - 1
#: A quiet NaN with a payload: its bits must survive too.
PAYLOAD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0001))[0]
EDGES: dict[str, tuple[str, list[Any]]] = {
    "INT64": ("int64_val", [0, 1, -1, 127, 128, 300, -300, 2**31, -(2**31) - 1, BIG, -BIG - 1]),
    "INT32": ("int32_val", [0, 1, -1, 127, 128, 2**31 - 1, -(2**31), -300]),
    "DOUBLE": (
        "double_val",
        [
            0.0,
            -0.0,
            0.1,
            -1.5,
            math.nan,
            -math.nan,
            math.inf,
            -math.inf,
            5e-324,
            1.7976931348623157e308,
            PAYLOAD_NAN,
        ],
    ),
    "FLOAT": ("float_val", [0.0, -0.0, 0.1, -1.5, math.nan, math.inf, -math.inf, 1e-45, 3.4e38]),
    "STRING": ("string_val", ["", "a", "é", "日本語", "🙂 emoji", "x" * 300, "\x00nul"]),
    "BOOL": ("bool_val", [True, False, False, True]),
    "BYTES": ("bytes_val", [b"", b"\x00", bytes(range(256)), b"\xff" * 200]),
}


def canon(value: Any) -> Any:
    """A value where equal means identical: floats by their bits, and types kept
    (``True == 1`` and ``nan != nan`` would hide differences)."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canon(v) for v in value])
    return (type(value).__name__, value)


def canon_columns(columns: dict[str, list[Any]]) -> dict[str, Any]:
    return {name: canon(values) for name, values in columns.items()}


# -- the batch decoders against protobuf's parser ------------------------------------------


@pytest.mark.parametrize("kind", sorted(EDGES))
def test_batch_decoder_equals_protobuf_on_edge_values(kind: str) -> None:
    field, values = EDGES[kind]
    raws = [Value(**{field: v}).SerializeToString() for v in values]
    decoded = batch_decoder(kind)(raws)
    assert decoded is not None, "uniform values of the column's type decode in one batch"
    by_protobuf = [getattr(Value.FromString(raw), field) for raw in raws]
    assert canon(decoded) == canon(by_protobuf)
    assert canon(decoded) == canon([decode(Value.FromString(raw)) for raw in raws])
    if kind == "DOUBLE":
        assert math.copysign(1.0, decoded[1]) == -1.0 and math.isnan(decoded[4])


@pytest.mark.parametrize(
    ("kind", "raws"),
    [
        ("INT64", [Value(int64_val=5).SerializeToString(), None]),
        ("INT64", [Value(int64_val=5).SerializeToString(), b""]),
        ("INT64", [Value(int64_val=5).SerializeToString(), Value(int32_val=5).SerializeToString()]),
        (
            "INT64",
            [Value(string_val="5").SerializeToString(), Value(int64_val=-5).SerializeToString()],
        ),
        (
            "DOUBLE",
            [Value(double_val=1.0).SerializeToString(), Value(float_val=1.0).SerializeToString()],
        ),
        (
            "DOUBLE",
            [Value(double_val=1.0).SerializeToString(), Value(int64_val=2**60).SerializeToString()],
        ),
        ("DOUBLE", [None, Value(double_val=-0.0).SerializeToString(), b""]),
        # another type of the same length as the column's values: only the tag tells
        ("DOUBLE", [Value(int64_val=2**50).SerializeToString()]),
        ("FLOAT", [Value(string_val="abc").SerializeToString()]),
        (
            "FLOAT",
            [Value(float_val=0.5).SerializeToString(), Value(double_val=0.5).SerializeToString()],
        ),
        (
            "STRING",
            [Value(string_val="a").SerializeToString(), Value(bytes_val=b"a").SerializeToString()],
        ),
        (
            "BOOL",
            [Value(bool_val=True).SerializeToString(), Value(int64_val=1).SerializeToString()],
        ),
        ("BYTES", [Value(bytes_val=b"").SerializeToString(), b"", None]),
        (
            "INT64",
            [
                Value(int64_list_val={"val": [1, 2]}).SerializeToString(),
                Value(int64_val=3).SerializeToString(),
            ],
        ),
    ],
)
def test_batch_decoder_refuses_any_other_layout(kind: str, raws: list[bytes | None]) -> None:
    """A null, an absent field or a value of another type never decodes as the column's type:
    the column falls back to Feast's decoding, value by value."""
    assert batch_decoder(kind)(raws) is None
    expected = [decode_raw(raw) for raw in raws]
    assert canon(decode_column(batch_decoder(kind), raws)) == canon(expected)
    assert expected.count(None) == sum(1 for raw in raws if not raw)


@pytest.mark.parametrize("kind", sorted(EDGES))
def test_the_wire_table_tags_values_as_protobuf_does(kind: str) -> None:
    field, values = EDGES[kind]
    for value in values:
        raw = Value(**{field: value}).SerializeToString()
        assert not raw or raw.startswith(wire.VALUE[kind].tag)
    stamp = Timestamp(seconds=5, nanos=7).SerializeToString()
    assert stamp == wire.SECONDS.tag + b"\x05" + wire.NANOS.tag + b"\x07"


def test_a_corrupt_value_raises_as_protobuf_does() -> None:
    truncated = Value(double_val=1.0).SerializeToString()[:5]
    for kind in ("DOUBLE", "INT64"):
        with pytest.raises(DecodeError):
            decode_column(batch_decoder(kind), [Value(int64_val=1).SerializeToString(), truncated])


@pytest.mark.parametrize(
    "stamps",
    [
        [(1_763_640_000, 0), (1_763_640_001, 0), (2**40, 0)],
        [(1_763_640_000, 123_456_000), (1_763_640_001, 999_999_999), (1, 1)],
        [(1_763_640_000, 0), (1_763_640_001, 500), (1_763_640_002, 0)],
        [(0, 5), (1_763_640_000, 0)],
        [(-1, 999_999_999), (-(2**40), 0)],
        [(0, 0), (1_763_640_000, 7)],
    ],
)
def test_event_times_equal_protobufs_timestamps(stamps: list[tuple[int, int]]) -> None:
    raws: list[bytes | None] = [
        Timestamp(seconds=s, nanos=n).SerializeToString() for s, n in stamps
    ]
    expected = [s * 1_000_000_000 + n for s, n in stamps]
    assert event_nanos(raws) == expected
    assert event_nanos([None, *raws, None]) == [0, *expected, 0]
    assert event_nanos([None, None]) == [0, 0]


def test_entity_keys_are_feasts_and_the_cache_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64, String

    thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)
    region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING)
    source = FileSource(path="unused.parquet", timestamp_field="event_timestamp")
    views = {
        "one": FeatureView(
            name="one",
            entities=[thing],
            schema=[Field(name="thing_id", dtype=Int64), Field(name="x", dtype=Int64)],
            source=source,
        ),
        "two": FeatureView(
            name="two",
            entities=[thing, region],
            schema=[
                Field(name="thing_id", dtype=Int64),
                Field(name="region", dtype=String),
                Field(name="y", dtype=Int64),
            ],
            source=source,
        ),
    }
    project = f"p{uuid.uuid4().hex[:8]}"
    plans = read_plan(views, ["one:x", "two:y"], project, 3)
    assert [plan.keys for plan in plans] == [("thing_id",), ("region", "thing_id")]

    def feasts(values: dict[str, Any]) -> bytes:
        key = EntityKey(
            join_keys=list(values),
            entity_values=[
                Value(int64_val=int(v)) if k == "thing_id" else Value(string_val=v)
                for k, v in values.items()
            ],
        )
        return serialize_entity_key(key, 3) + project.encode()

    rows = [
        {"thing_id": 7, "region": "eu"},
        {"thing_id": np.int64(7), "region": "eu"},
        {"thing_id": -(2**40), "region": "日本"},
        {"thing_id": 7, "region": "eu"},
    ]
    for _ in range(2):  # cold, then from the cache
        assert entity_keys(plans[0], rows) == [feasts({"thing_id": r["thing_id"]}) for r in rows]
        assert entity_keys(plans[1], rows) == [feasts(r) for r in rows]
    assert len(plans[0].key_cache) == 3  # 7 and np.int64(7) are kept apart, as typed values

    monkeypatch.setattr(feast_redis, "KEY_CACHE_SIZE", 2)
    many = [{"thing_id": i} for i in range(10)]
    assert entity_keys(plans[0], many) == [feasts(r) for r in many]
    assert list(plans[0].key_cache) == [(int, 8), (int, 9)]  # the most recently used


# -- the whole read against Feast's, on Redis ----------------------------------------------


@dataclass
class Setup:
    features: FeatureView
    fs: Any
    references: list[str]
    registry: Path

    @property
    def backend(self) -> FeastFeatures:
        assert isinstance(self.features.backend, FeastFeatures)
        return self.features.backend


DEFINITIONS = '''\
"""Generated by tests/integration/test_online_fast_path.py."""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import (
    Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp,
)

thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)
region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING)
source = FileSource(path="unused.parquet", timestamp_field="event_timestamp")

scalars = FeatureView(
    name="scalars",
    entities=[thing],
    ttl=timedelta(days=1),
    schema=[
        Field(name="thing_id", dtype=Int64),
        Field(name="i64", dtype=Int64),
        Field(name="f64", dtype=Float64),
        Field(name="f32", dtype=Float32),
        Field(name="i32", dtype=Int32),
        Field(name="s", dtype=String),
        Field(name="b", dtype=Bool),
        Field(name="raw", dtype=Bytes),
        Field(name="i64s", dtype=Array(Int64)),
        Field(name="strs", dtype=Array(String)),
        Field(name="f64s", dtype=Array(Float64)),
        Field(name="at", dtype=UnixTimestamp),
    ],
    source=source,
)
short = FeatureView(
    name="short",
    entities=[thing],
    ttl=timedelta(hours=1),
    schema=[
        Field(name="thing_id", dtype=Int64),
        Field(name="n", dtype=Int64),
        Field(name="x", dtype=Float64),
    ],
    source=source,
)
forever = FeatureView(
    name="forever",
    entities=[thing, region],
    ttl=timedelta(0),
    schema=[
        Field(name="thing_id", dtype=Int64),
        Field(name="region", dtype=String),
        Field(name="label", dtype=String),
        Field(name="on", dtype=Bool),
    ],
    source=source,
)
'''

STORE_YAML = """\
project: ${DATALAYER_FEAST_PROJECT}
provider: local
registry: data/registry.db
online_store:
  type: redis
  connection_string: "${DATALAYER_FEAST_REDIS}"
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


def _value(kind: str, rng: np.random.Generator, i: int) -> Value:
    """A value of the kind, an edge value now and then, a null (empty Value) for every 7th."""
    if i % 7 == 3:
        return Value()
    field, edges = EDGES[kind]
    if i % 5 == 0:
        return Value(**{field: edges[(i // 5) % len(edges)]})
    if kind in ("INT64", "INT32"):
        return Value(**{field: int(rng.integers(-(10**9), 10**9))})
    if kind in ("DOUBLE", "FLOAT"):
        return Value(**{field: float(rng.normal() * 1000)})
    if kind == "STRING":
        return Value(string_val=f"v{rng.integers(10**6)}-ü")
    if kind == "BOOL":
        return Value(bool_val=bool(rng.integers(2)))
    return Value(bytes_val=rng.bytes(int(rng.integers(0, 40))))


def _scalars_row(rng: np.random.Generator, i: int) -> dict[str, Value]:
    row = {
        "i64": _value("INT64", rng, i),
        "f64": _value("DOUBLE", rng, i + 1),
        "f32": _value("FLOAT", rng, i + 2),
        "i32": _value("INT32", rng, i + 3),
        "s": _value("STRING", rng, i + 4),
        "b": _value("BOOL", rng, i + 5),
        "raw": _value("BYTES", rng, i + 6),
        "i64s": Value(int64_list_val={"val": [i, -i, BIG]}),
        "strs": Value(string_list_val={"val": ["", f"s{i}", "ß"]}),
        "f64s": Value(double_list_val={"val": [0.5, -0.0, float(i)]}),
        "at": Value(unix_timestamp_val=1_763_640_000 + i),
    }
    if i % 11 == 9:
        del row["f64"]  # a feature absent from the hash: written before the feature existed
    return row


def _write(fs: Any, rng: np.random.Generator) -> None:
    """Feast's own Redis writer, with ValueProtos built here (edge values, nulls)."""
    provider = fs._get_provider()

    def thing(i: int, region: str | None = None) -> EntityKey:
        keys, values = ["thing_id"], [Value(int64_val=i)]
        if region is not None:
            keys.append("region")
            values.append(Value(string_val=region))
        return EntityKey(join_keys=keys, entity_values=values)

    def when(i: int) -> datetime:
        """2 to 50 minutes before T, in whole seconds for some rows and microseconds for
        others; thing 5 one short TTL before T + 250 microseconds."""
        if i == 5:
            return T - SHORT_TTL + ON_THE_EDGE
        fraction = timedelta(microseconds=int(rng.integers(1, 10**6))) if i % 3 else timedelta()
        return T - timedelta(minutes=int(rng.integers(2, 50))) + fraction

    scalars = [(thing(i), _scalars_row(rng, i), when(i), None) for i in range(THINGS)]
    short = [
        (thing(i), {"n": _value("INT64", rng, i + 1), "x": _value("DOUBLE", rng, i)}, when(i), None)
        for i in range(WRITTEN)
    ]
    forever = [
        (
            thing(i, "eu" if i % 2 else "日本"),
            {"label": _value("STRING", rng, i), "on": _value("BOOL", rng, i + 1)},
            T - timedelta(days=400),
            None,
        )
        for i in range(WRITTEN)
    ]
    for name, data in (("scalars", scalars), ("short", short), ("forever", forever)):
        provider.online_write_batch(fs.config, fs.get_feature_view(name), data, None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Setup]:
    """A generated repo (file registry, Redis online store) with data written by Feast."""
    tmp_path = tmp_path_factory.mktemp("fast_path")
    repo = tmp_path / "feature_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFINITIONS)
    (repo / "feature_store.fast.yaml").write_text(STORE_YAML)
    project = f"fast_{uuid.uuid4().hex[:8]}"
    (tmp_path / "datalayer.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            profiles:
              fast:
                features:
                  type: feast
                  repo: feature_repo
                  profile: fast
                  project: {project}
                  redis_url: "{redis_url}"
            patterns:
              things:
                category: feature
                store: features
                features:
                  - scalars:i64
                  - short:n
                  - scalars:f64
                  - scalars:f32
                  - scalars:i32
                  - forever:label
                  - scalars:s
                  - scalars:b
                  - scalars:raw
                  - scalars:i64s
                  - scalars:strs
                  - scalars:f64s
                  - scalars:at
                  - short:x
                  - forever:on
            """
        )
    )
    dl = datalayer.open(tmp_path / "datalayer.yaml", "fast")
    dl.apply()
    store = dl.store("features")
    assert isinstance(store, FeastStore)
    fs = store.feature_store
    _write(fs, np.random.default_rng(11))
    features = dl.features("things")
    assert isinstance(features.backend, FeastFeatures)
    assert isinstance(features.backend.online_read, RedisOnlineRead)
    try:
        yield Setup(features, fs, features.references(), tmp_path / "datalayer.yaml")
    finally:
        fs.teardown()
        dl.close()


def _rows(things: list[int]) -> list[dict[str, Any]]:
    return [{"thing_id": i, "region": "eu" if i % 2 else "日本"} for i in things]


def _through_feast(
    setup: Setup, rows: list[dict[str, Any]], at: datetime, references: list[str] | None = None
) -> dict[str, Any]:
    """Feast's get_online_features, with the TTL rule ``online`` documents applied: the join
    keys, then Feast's online read's columns."""
    features, references = setup.features, references or setup.references
    checked = features.entity_rows(rows, references)
    keys = {k: [row[k] for row in checked] for k in features.join_keys(references)}
    return {**keys, **FeastOnlineRead(setup.backend).read(checked, references, at)}


REQUESTS = {
    "every view written": list(range(WRITTEN)),
    "one entity": [12],
    "unknown entities": [1000, 3, 1001, 17],
    "views missing for some": list(range(25, THINGS)),
    "all unknown": [1000, 1001],
    "repeated": [4, 4, 9, 4],
    "no rows": [],
}
INSTANTS = {
    "at T": T,
    "thing 5 on the short TTL": T + ON_THE_EDGE,
    "thing 5 just past it": T + ON_THE_EDGE + timedelta(microseconds=1),
    "before some event times": T - timedelta(minutes=25),
    "short view partly expired": T + timedelta(minutes=30),
    "short view expired": T + SHORT_TTL + timedelta(hours=1),
    "day view expired": T + timedelta(days=1, hours=1),
}


@pytest.mark.parametrize("instant", sorted(INSTANTS))
@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_online_equals_feasts_read_with_ttl(setup: Setup, request_name: str, instant: str) -> None:
    rows, at = _rows(REQUESTS[request_name]), INSTANTS[instant]
    ours = setup.features.online(rows, as_of=at)
    expected = _through_feast(setup, rows, at)
    assert canon_columns(ours) == canon_columns(expected)
    assert list(ours) == ["thing_id", "region", *setup.features.columns(setup.references)]


def test_the_data_covers_what_it_claims(setup: Setup) -> None:
    """Guards the comparison above against vacuous data: every case occurs."""
    ours = setup.features.online(_rows([*range(THINGS), 1000]), as_of=T)
    assert ours["short__n"][WRITTEN:THINGS] == [None] * (THINGS - WRITTEN)  # never written
    assert ours["scalars__i64"][-1] is None and ours["forever__label"][-1] is None  # unknown
    assert ours["scalars__i64"][3] is None  # a null
    assert ours["scalars__f64"][9] is None and ours["scalars__f32"][9] is not None  # absent
    edge = setup.features.online(_rows([5]), as_of=T + ON_THE_EDGE)
    assert edge["short__n"] != [None]  # on the TTL boundary: still fresh
    past = setup.features.online(_rows([5]), as_of=T + ON_THE_EDGE + timedelta(microseconds=1))
    assert past["short__n"] == [None] and past["scalars__i64"] == edge["scalars__i64"]
    floats = [v for v in ours["scalars__f64"] if isinstance(v, float)]
    assert any(math.isnan(v) for v in floats) and -math.inf in floats
    assert any(v == 0.0 and math.copysign(1.0, v) < 0 for v in floats)
    assert {type(v) for v in ours["scalars__b"]} == {bool, type(None)}
    assert "" in ours["scalars__s"] and any("🙂" in v for v in ours["scalars__s"] if v)
    assert ours["scalars__i64s"][1] == [1, -1, BIG]
    assert isinstance(ours["scalars__at"][0], datetime)
    later = setup.features.online(_rows(list(range(WRITTEN))), as_of=T + timedelta(minutes=30))
    assert None in later["short__n"] and set(later["short__n"]) != {None}  # some expired
    assert set(later["forever__label"]) - {None}  # ttl 0: never expires


def test_online_equals_feasts_own_dictionary(setup: Setup) -> None:
    """At an instant where nothing is expired the TTL rule drops nothing: ours is then exactly
    ``get_online_features(...).to_dict()``, Feast's own decoding, value for value."""
    rows = _rows([*range(THINGS), 1000, 7])
    ours = setup.features.online(rows, as_of=T)
    feast = setup.fs.get_online_features(
        features=setup.references, entity_rows=rows, full_feature_names=True
    ).to_dict()
    columns = setup.features.columns(setup.references)
    assert canon_columns({c: ours[c] for c in columns}) == canon_columns(
        {c: feast[c] for c in columns}
    )
    assert ours["short__n"][5] is not None
    assert setup.features.online(rows, as_of=T + timedelta(seconds=1))["short__n"][5] is None


def test_a_subset_of_features_in_another_order(setup: Setup) -> None:
    """A request shape of its own (its own plan): the columns come in the order asked for."""
    subset = ["short:x", "forever:on", "scalars:s", "short:n"]
    rows = _rows([1, 2, 1000, 35])
    expected = _through_feast(setup, rows, T, subset)
    ours = setup.features.online(rows, as_of=T, features=subset)
    assert canon_columns(ours) == canon_columns(expected)
    assert list(ours) == ["thing_id", "region", "short__x", "forever__on", "scalars__s", "short__n"]


def test_integer_join_keys_of_other_int_types_read_the_same_entity(setup: Setup) -> None:
    rows = _rows([3, 8])
    plain = setup.features.online(rows, as_of=T)
    numpy_keys = [{**row, "thing_id": np.int64(row["thing_id"])} for row in rows]
    from_numpy = setup.features.online(numpy_keys, as_of=T)
    assert canon_columns({k: v for k, v in from_numpy.items() if k != "thing_id"}) == (
        canon_columns({k: v for k, v in plain.items() if k != "thing_id"})
    )
    assert plain["scalars__s"][1] is not None


def test_the_redis_read_equals_feasts_read_as_strategies(setup: Setup) -> None:
    """The two online strategies, side by side on the same checked rows."""
    rows = setup.features.entity_rows(_rows([*range(THINGS), 1000]), setup.references)
    fast = RedisOnlineRead(setup.backend, setup.backend.store.redis_client())
    feast = FeastOnlineRead(setup.backend)
    for at in INSTANTS.values():
        assert canon_columns(fast.read(rows, setup.references, at)) == canon_columns(
            feast.read(rows, setup.references, at)
        )


# -- the self-check and ``fast_paths`` -----------------------------------------------------


def test_a_layout_that_differs_from_feasts_turns_the_fast_paths_off(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Our field names made wrong: the self-check sees it, says so once, and the store reads
    through Feast, with Feast's right answers."""
    real = compat.field_name
    monkeypatch.setattr(compat, "field_name", lambda view, feature: real(view, feature) + b"!")
    rows = _rows([*range(THINGS), 1000])
    with datalayer.open(setup.registry, "fast") as dl, caplog.at_level("WARNING"):
        features = dl.features("things")
        assert isinstance(features.backend, FeastFeatures)
        for at in (T, T + timedelta(minutes=30)):
            assert canon_columns(features.online(rows, as_of=at)) == canon_columns(
                _through_feast(setup, rows, at)
            )
        assert isinstance(features.backend.online_read, FeastOnlineRead)
        assert isinstance(features.backend.materializer, FeastMaterializer)
        store = dl.store("features")
        assert isinstance(store, FeastStore)
        assert not store.fast_paths()
        assert not store.fast_paths()
    warnings = [r for r in caplog.records if "fast paths off" in r.getMessage()]
    assert len(warnings) == 1
    assert "field names differ from Feast's" in warnings[0].getMessage()


def test_the_self_check_passes_on_feasts_own_layout(setup: Setup) -> None:
    store = setup.backend.store
    assert store.fast_paths()
    from datalayer.stores.feast.selfcheck import layout_problem

    assert layout_problem(setup.fs) is None


def test_fast_paths_off_reads_through_feast_with_equal_answers(setup: Setup) -> None:
    text = setup.registry.read_text().replace(
        "profile: fast\n", 'profile: fast\n      fast_paths: "off"\n'
    )
    assert "fast_paths" in text
    registry = setup.registry.with_name("datalayer_off.yaml")
    registry.write_text(text)
    rows = _rows([*range(THINGS), 1000, 7])
    with datalayer.open(registry, "fast") as dl:
        features = dl.features("things")
        assert isinstance(features.backend, FeastFeatures)
        for at in INSTANTS.values():
            assert canon_columns(features.online(rows, as_of=at)) == canon_columns(
                setup.features.online(rows, as_of=at)
            )
        assert isinstance(features.backend.online_read, FeastOnlineRead)

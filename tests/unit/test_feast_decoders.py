"""The batch decoders of the direct Redis read are checked, value for value, against
protobuf's own parser on edge values: a float is compared by its bits, so NaN, -0.0 and
infinities count. Entity keys are checked against Feast's own serialization."""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from datalayer.stores.feast import online_redis as feast_redis
from datalayer.stores.feast import wire
from datalayer.stores.feast.online_redis import (
    batch_decoder,
    decode,
    decode_column,
    decode_raw,
    entity_keys,
    event_nanos,
    read_plan,
)

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


#: Values of the kinds decoded as messages (lists, maps, structs) or parsed afterwards (Json).
MESSAGE_EDGES: dict[str, list[Value]] = {
    "INT64_LIST": [Value(int64_list_val={"val": v}) for v in ([], [0], [1, -1, BIG, -BIG - 1])],
    "INT32_LIST": [Value(int32_list_val={"val": v}) for v in ([], [2**31 - 1, -(2**31)])],
    "DOUBLE_LIST": [
        Value(double_list_val={"val": v}) for v in ([], [0.5, -0.0, math.inf, PAYLOAD_NAN])
    ],
    "FLOAT_LIST": [Value(float_list_val={"val": v}) for v in ([], [0.1, -1.5, 3.4e38])],
    "STRING_LIST": [Value(string_list_val={"val": v}) for v in ([], ["", "日本語", "\x00"])],
    "BYTES_LIST": [Value(bytes_list_val={"val": v}) for v in ([], [b"", b"\xff" * 9])],
    "BOOL_LIST": [Value(bool_list_val={"val": v}) for v in ([], [True, False, True])],
    "MAP": [
        Value(map_val={"val": {}}),
        Value(map_val={"val": {"a": Value(string_val="x"), "b": Value(int64_val=BIG)}}),
        Value(
            map_val={
                "val": {
                    "nested": Value(map_val={"val": {"d": Value(double_val=-0.0)}}),
                    "list": Value(int64_list_val={"val": [1, 2]}),
                    "null": Value(),
                    "when": Value(unix_timestamp_val=1_763_640_000),
                }
            }
        ),
    ],
    "STRUCT": [
        Value(struct_val={"val": {"name": Value(string_val="ü"), "age": Value(string_val="40")}}),
        Value(struct_val={"val": {}}),
    ],
    "JSON": [
        Value(json_val=text)
        for text in ('{"a": [1, 2.5, null]}', "[]", '"s"', "12", "not json {", "", "null")
    ],
}


def canon_deep(value: Any) -> Any:
    """``canon`` through dicts too (maps and structs decode as dicts)."""
    if isinstance(value, dict):
        return ("dict", sorted((k, canon_deep(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canon_deep(v) for v in value])
    return canon(value)


@pytest.mark.parametrize("kind", sorted(MESSAGE_EDGES))
def test_message_kinds_decode_in_one_batch_as_feast_decodes_each(kind: str) -> None:
    raws: list[bytes | None] = [v.SerializeToString() for v in MESSAGE_EDGES[kind]]
    decoded = batch_decoder(kind)(raws * 3)
    assert decoded is not None, "uniform values of the column's type decode in one batch"
    assert canon_deep(decoded) == canon_deep([decode_raw(raw) for raw in raws * 3])
    # a null among them: the column still decodes, the null as None
    with_null = [*raws, None, b""]
    assert canon_deep(decode_column(batch_decoder(kind), with_null)) == canon_deep(
        [decode_raw(raw) for raw in with_null]
    )


@pytest.mark.parametrize(
    ("kind", "other"),
    [
        ("INT64_LIST", Value(int32_list_val={"val": [1]})),
        ("INT64_LIST", Value(int64_val=1)),
        ("MAP", Value(struct_val={"val": {"a": Value(int64_val=1)}})),
        ("STRUCT", Value(map_val={"val": {}})),
        ("JSON", Value(string_val="{}")),
        ("STRING_LIST", Value(string_val="a")),
    ],
)
def test_message_kinds_refuse_another_layout(kind: str, other: Value) -> None:
    raws: list[bytes | None] = [
        MESSAGE_EDGES[kind][0].SerializeToString(),
        other.SerializeToString(),
    ]
    assert batch_decoder(kind)(raws) is None
    assert canon_deep(decode_column(batch_decoder(kind), raws)) == canon_deep(
        [decode_raw(raw) for raw in raws]
    )


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

"""The direct materialization's value and timestamp encodings are Feast's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from datalayer.stores.feast.materialize_redis import encode_column, encode_timestamps

COLUMNS = [
    ("DOUBLE", pa.array([0.5, None, float("nan"), float("inf"), -0.0, -1e-310, 1e308])),
    ("FLOAT", pa.array([1.5, None, float("nan"), float("-inf"), -0.0], pa.float32())),
    ("INT64", pa.array([0, 1, -1, 127, 128, 2**63 - 1, -(2**63), 300], pa.int64())),
    ("INT64", pa.array([0, None, 2**60 + 1, -7], pa.int64())),
    ("INT64", pa.array([None, 2**53 + 1, -(2**53) - 1, 2**62 + 1, 1], pa.int64())),
    ("INT32", pa.array([0, 1, -1, 2**31 - 1, -(2**31), 16384], pa.int32())),
    ("INT32", pa.array([5, None, -(2**31), 2**31 - 1, -1], pa.int32())),
    ("STRING", pa.array(["", "a", None, "é" * 64, "x" * 128, "x" * 20000, "☃"])),
    ("STRING", pa.array(["big", None], pa.large_string())),
    ("BOOL", pa.array([True, False, None])),
    ("DOUBLE", pa.array([1, 2, None], pa.int64())),  # a type mismatch goes through Feast
    ("UNIX_TIMESTAMP", pa.array([0, 1_700_000_000_000_000, None], pa.timestamp("us", "UTC"))),
]


@pytest.mark.parametrize(("kind", "column"), COLUMNS, ids=lambda c: str(c)[:24])
def test_value_encoding_is_feasts(kind: str, column: Any) -> None:
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    value_type = ValueType[kind]
    expected = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    assert encode_column(column, value_type).rows() == [v.SerializeToString() for v in expected]


def test_timestamp_encoding_is_feasts() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    instants = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
        datetime(2026, 11, 20, 12, 0, 0, 123_456, tzinfo=UTC),
        datetime(2262, 4, 1, tzinfo=UTC),
    ]
    encoded = encode_timestamps(pa.array(instants, pa.timestamp("us", "UTC")))
    for instant, raw in zip(instants, encoded.rows(), strict=True):
        stamp = Timestamp()
        stamp.FromDatetime(instant)
        assert raw == stamp.SerializeToString()

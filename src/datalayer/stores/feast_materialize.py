"""Materialization straight into Feast's Redis layout, in bounded memory.

Feast's ``materialize`` pulls every latest row of a view into memory, then builds a protobuf
object per value in Python. Here the offline store picks the latest row per entity (DuckDB over
the parquet files, or PostgreSQL), the rows stream out in record batches, whole columns are
encoded at once, and each batch goes to Redis in two pipelines: one read of the stored event
times, one write of what is newer. What lands in Redis is byte for byte what Feast writes: the
same keys (Feast's ``serialize_entity_key``), fields (Feast's ``_mmh3``), value encoding (tested
against Feast's) and the same rule that an older or equal event time never overwrites a newer
one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from datalayer.stores.feast_offline import quoted

#: Rows per record batch: enough to amortize a Redis round trip, small enough to stay flat.
BATCH_ROWS = 5_000
#: DuckDB's own memory for the latest-row query; beyond it DuckDB spills to disk.
DUCKDB_MEMORY = "256MB"

_DOUBLE, _FLOAT, _INT64, _INT32, _STRING, _BOOL = 0x29, 0x35, 0x20, 0x18, 0x12, 0x38


def _varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _fixed(tag: int, values: Any, dtype: str) -> list[bytes]:
    """``tag`` + little-endian fixed-width value per row; NaN (Feast's null) as b''."""
    width = np.dtype(dtype).itemsize + 1
    count = len(values)
    buffer = np.empty((count, width), np.uint8)
    buffer[:, 0] = tag
    buffer[:, 1:] = np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(count, -1)
    blob = buffer.tobytes()
    out = [blob[i : i + width] for i in range(0, count * width, width)]
    for i in np.flatnonzero(np.isnan(values)).tolist():
        out[i] = b""
    return out


def _varints(tag: int, values: Any) -> list[bytes]:
    """``tag`` + varint per row for int64/int32 (negatives as 10-byte two's complement)."""
    unsigned = np.asarray(values, dtype=np.int64).view(np.uint64)
    count = len(unsigned)
    groups = np.empty((count, 10), np.uint8)
    lengths = np.ones(count, np.int64)
    for k in range(10):
        shifted = unsigned >> np.uint64(7 * k)
        groups[:, k] = (shifted & np.uint64(0x7F)).astype(np.uint8)
        if k:
            lengths += shifted != 0
    groups |= np.where(np.arange(10) < (lengths - 1)[:, None], 0x80, 0).astype(np.uint8)
    buffer = np.empty((count, 11), np.uint8)
    buffer[:, 0] = tag
    buffer[:, 1:] = groups
    blob = buffer.tobytes()
    return [blob[i * 11 : i * 11 + 1 + n] for i, n in enumerate(lengths.tolist())]


def encode_column(column: Any, value_type: Any) -> list[bytes]:
    """Serialized ValueProtos of one arrow column, as Feast's conversion would make them.

    Whole-column fast paths for the scalar types whose arrow type matches the feature's;
    anything else (and integers with nulls, which Feast routes through floats) goes through
    Feast's own ``python_values_to_proto_values``."""
    import pyarrow as pa
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    kind = column.type
    has_nulls = column.null_count > 0
    if value_type == ValueType.DOUBLE and kind == pa.float64():
        return _fixed(_DOUBLE, column.to_numpy(zero_copy_only=False), "<f8")
    if value_type == ValueType.FLOAT and kind == pa.float32():
        return _fixed(_FLOAT, column.to_numpy(zero_copy_only=False), "<f4")
    if value_type == ValueType.INT64 and kind == pa.int64() and not has_nulls:
        return _varints(_INT64, column.to_numpy())
    if value_type == ValueType.INT32 and kind == pa.int32() and not has_nulls:
        return _varints(_INT32, column.to_numpy())
    if value_type == ValueType.STRING and kind in (pa.string(), pa.large_string()):
        return [
            b"" if s is None else b"\x12" + _varint(len(e := s.encode())) + e
            for s in column.to_pylist()
        ]
    if value_type == ValueType.BOOL and kind == pa.bool_():
        return [b"" if b is None else (b"8\x01" if b else b"8\x00") for b in column.to_pylist()]
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos]


def encode_timestamps(column: Any) -> tuple[list[bytes], list[int]]:
    """Serialized protobuf Timestamps at microsecond precision (as Feast's ``FromDatetime`` of
    the row's datetime), and the same instants in nanoseconds."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from google.protobuf.timestamp_pb2 import Timestamp

    micros = pc.cast(pc.cast(column, pa.timestamp("us", "UTC"), safe=False), pa.int64())
    encoded, nanos = [], []
    for value in micros.to_numpy(zero_copy_only=False).tolist():
        seconds, micro = divmod(value, 1_000_000)
        encoded.append(Timestamp(seconds=seconds, nanos=micro * 1000).SerializeToString())
        nanos.append(value * 1000)
    return encoded, nanos


def _stamp_nanos(raw: bytes | None) -> int:
    if not raw:
        return 0
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(raw)
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


class RedisLayoutWriter:
    """Writes one feature view's latest rows as Feast's Redis online store would."""

    def __init__(self, feature_store: Any, view: Any, client: Any) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        config = feature_store.config
        self.view = view
        self.client = client
        self.project = feature_store.project.encode()
        self.version = config.entity_key_serialization_version
        self.key_ttl = getattr(config.online_store, "key_ttl_seconds", None)
        self.keys = list(view.join_keys)
        self.key_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        self.features = [(f.name, f.dtype.to_value_type()) for f in view.features]
        self.fields = [_mmh3(f"{view.name}:{name}") for name, _ in self.features]
        self.ts_field = f"_ts:{view.name}".encode()
        self.timestamp_column = view.batch_source.timestamp_field

    def entity_keys(self, batch: Any) -> list[bytes]:
        """Redis keys of a batch's rows through Feast's own entity key serialization."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        columns = [
            python_values_to_proto_values(
                batch.column(k).to_numpy(zero_copy_only=False), self.key_types[k]
            )
            for k in self.keys
        ]
        return [
            serialize_entity_key(
                EntityKey(join_keys=self.keys, entity_values=list(values)), self.version
            )
            + self.project
            for values in zip(*columns, strict=True)
        ]

    def write(self, batch: Any) -> int:
        """One record batch (one row per entity): write the rows newer than what is stored."""
        keys = self.entity_keys(batch)
        stamps, nanos = encode_timestamps(batch.column(self.timestamp_column))
        values = [encode_column(batch.column(name), kind) for name, kind in self.features]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, self.ts_field)
        stored = pipe.execute()
        written = 0
        for i, (key, stamp, previous) in enumerate(zip(keys, stamps, stored, strict=True)):
            latest = _stamp_nanos(previous)
            if latest and nanos[i] <= latest:
                continue  # Feast's rule: an older or equal event time never overwrites
            args: list[bytes] = [self.ts_field, stamp]
            for field, column in zip(self.fields, values, strict=True):
                args += (field, column[i])
            pipe.execute_command("HSET", key, *args)
            if self.key_ttl:
                pipe.expire(key, self.key_ttl)
            written += 1
        pipe.execute()
        return written


def parquet_latest(
    view: Any, path: str, start: datetime, end: datetime, batch_rows: int = BATCH_ROWS
) -> Iterator[Any]:
    """The latest row per entity with ``start <= event time <= end``, ties broken by the
    created time (Feast's rule), as record batches from DuckDB."""
    import duckdb

    source = view.batch_source
    keys = ", ".join(quoted(k) for k in view.join_keys)
    columns = [*view.join_keys, *(f.name for f in view.features), source.timestamp_field]
    order = [f"{quoted(source.timestamp_field)} DESC"]
    if source.created_timestamp_column:
        order.append(f"{quoted(source.created_timestamp_column)} DESC")
    sql = (
        f"SELECT {', '.join(quoted(c) for c in columns)} "
        f"FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}') "
        f"WHERE {quoted(source.timestamp_field)} BETWEEN ? AND ? "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {', '.join(order)}) = 1"
    )
    with duckdb.connect(config={"memory_limit": DUCKDB_MEMORY}) as con:
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET TimeZone = 'UTC'")
        naive = [t.astimezone(UTC).replace(tzinfo=None) for t in (start, end)]
        relation: Any = con.sql(sql, params=naive)
        # DuckDB 2 renamed ``fetch_record_batch`` to ``to_arrow_reader``.
        stream = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
        yield from stream(batch_rows)


def postgres_latest(
    view: Any, url: str, start: datetime, end: datetime, batch_rows: int = BATCH_ROWS
) -> Iterator[Any]:
    """The same from a PostgreSQL source, through a server-side cursor."""
    import psycopg
    import pyarrow as pa

    source = view.batch_source
    keys = ", ".join(quoted(k) for k in view.join_keys)
    columns = [*view.join_keys, *(f.name for f in view.features), source.timestamp_field]
    order = [f"{quoted(source.timestamp_field)} DESC"]
    if source.created_timestamp_column:
        order.append(f"{quoted(source.created_timestamp_column)} DESC")
    sql = (
        f"SELECT DISTINCT ON ({keys}) {', '.join(quoted(c) for c in columns)} "
        f"FROM {source.get_table_query_string()} AS s "
        f"WHERE {quoted(source.timestamp_field)} BETWEEN %s AND %s "
        f"ORDER BY {keys}, {', '.join(order)}"
    )
    with psycopg.connect(url) as con, con.cursor(name="datalayer_materialize") as cursor:
        cursor.itersize = batch_rows
        cursor.execute(sql, (start, end))
        while rows := cursor.fetchmany(batch_rows):
            yield pa.RecordBatch.from_arrays(
                [pa.array(list(values)) for values in zip(*rows, strict=True)], names=columns
            )


def materialize_view(
    feature_store: Any,
    view: Any,
    client: Any,
    batches: Iterator[Any],
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Write every batch of one view; the number of entities whose hash changed."""
    writer = RedisLayoutWriter(feature_store, view, client)
    written = 0
    for batch in batches:
        if batch.num_rows:
            written += writer.write(batch)
            if on_rows:
                on_rows(batch.num_rows)
    return written

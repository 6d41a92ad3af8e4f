"""Materialization straight into Feast's Redis layout, in bounded memory.

Feast's ``materialize`` pulls every latest row of a view into memory, then builds a protobuf
object per value in Python. Here the offline store picks the latest row per entity (DuckDB over
the parquet files, or PostgreSQL), the rows stream out in record batches, whole columns are
encoded at once, and each batch goes to Redis as one Lua compare-and-set call, two batches in
flight, so Redis is kept busy while the next is encoded. What lands in Redis is what Feast
writes: the same keys (Feast's ``serialize_entity_key``), fields (Feast's ``_mmh3``), value
encoding (the tags from ``wire``, checked against Feast's by the store's self-check), byte for
byte but for the order of a map's entries (protobuf's follows its hash table, which changes from
one process to the next), and the same rule that an older or equal event time never overwrites a
newer one.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from datalayer.stores.feast import compat, wire
from datalayer.stores.feast.online_redis import decode_column, decoder_of, event_nanos
from datalayer.stores.feast.training_parquet import quoted

if TYPE_CHECKING:
    from datalayer.stores.feast.packed import PackedWriter

#: Rows per record batch: enough to amortize a Redis round trip, small enough to stay flat.
BATCH_ROWS = 5_000
#: DuckDB's own memory for the latest-row query; beyond it DuckDB spills to disk.
DUCKDB_MEMORY = "256MB"
#: Batches sent to Redis and not yet answered (3 measured no faster than 2).
IN_FLIGHT = 2


class Cells(NamedTuple):
    """One byte string per row, stored end to end (``data``) with each one's length: columns
    of them are encoded, and joined row by row, by numpy without a Python step per value."""

    data: Any  # uint8, the rows' bytes end to end
    lengths: Any  # int64, one per row

    @classmethod
    def of(cls, items: list[bytes]) -> Cells:
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        return cls(np.frombuffer(b"".join(items), np.uint8), lengths)

    @classmethod
    def padded(cls, matrix: Any, lengths: Any) -> Cells:
        """Row i is ``matrix[i, :lengths[i]]``."""
        return cls(matrix[np.arange(matrix.shape[1]) < lengths[:, None]], lengths)

    @classmethod
    def constant(cls, value: bytes, rows: int) -> Cells:
        data = np.tile(np.frombuffer(value, np.uint8), rows)
        return cls(data, np.full(rows, len(value), np.int64))

    def rows(self) -> list[bytes]:
        blob = self.data.tobytes()
        ends = np.cumsum(self.lengths).tolist()
        return [blob[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def joined(blocks: list[Cells]) -> Cells:
    """Each row's cells of ``blocks``, concatenated in block order."""
    lengths = np.stack([b.lengths for b in blocks], axis=1)
    row_lengths = lengths.sum(axis=1)
    # Where each block's cell of each row starts in the output.
    starts = np.cumsum(lengths, axis=1) - lengths + (np.cumsum(row_lengths) - row_lengths)[:, None]
    out = np.empty(int(row_lengths.sum()), np.uint8)
    for k, block in enumerate(blocks):
        sizes = lengths[:, k]
        # Output position of each byte: its cell's start, plus its place within the cell.
        shift = starts[:, k] - (np.cumsum(sizes) - sizes)
        out[np.repeat(shift, sizes) + np.arange(len(block.data))] = block.data
    return Cells(out, row_lengths)


def _fixed(tag: bytes, values: Any, dtype: str) -> Cells:
    """``tag`` + little-endian fixed-width value per row; NaN (Feast's null) as b''."""
    head = len(tag)
    width = np.dtype(dtype).itemsize + head
    count = len(values)
    matrix = np.empty((count, width), np.uint8)
    matrix[:, :head] = np.frombuffer(tag, np.uint8)
    matrix[:, head:] = np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(count, -1)
    return Cells.padded(matrix, np.where(np.isnan(values), 0, width))


def _varints(tag: bytes, values: Any, skip: Any = None) -> Cells:
    """``tag`` + varint per row for int64/int32 (negatives as 10-byte two's complement); rows
    where ``skip`` is true are b''."""
    unsigned = np.asarray(values, dtype=np.int64).view(np.uint64)
    count = len(unsigned)
    head = len(tag)
    matrix = np.empty((count, head + 10), np.uint8)
    matrix[:, :head] = np.frombuffer(tag, np.uint8)
    groups = matrix[:, head:]
    lengths = np.ones(count, np.int64)
    for k in range(10):
        shifted = unsigned >> np.uint64(7 * k)
        groups[:, k] = (shifted & np.uint64(0x7F)).astype(np.uint8)
        if k:
            lengths += shifted != 0
    groups |= np.where(np.arange(10) < (lengths - 1)[:, None], 0x80, 0).astype(np.uint8)
    lengths += head
    return Cells.padded(matrix, np.where(skip, 0, lengths) if skip is not None else lengths)


def encode_column(column: Any, value_type: Any) -> Cells:
    """Serialized ValueProtos of one arrow column, as Feast's conversion would make them.

    Whole-column fast paths for the scalar types whose arrow type matches the feature's;
    anything else (and integers with nulls, which Feast routes through floats) goes through
    Feast's own ``python_values_to_proto_values``."""
    import pyarrow as pa
    from feast import ValueType

    kind = column.type
    has_nulls = column.null_count > 0
    if value_type == ValueType.DOUBLE and kind == pa.float64():
        return _fixed(wire.VALUE["DOUBLE"].tag, column.to_numpy(zero_copy_only=False), "<f8")
    if value_type == ValueType.FLOAT and kind == pa.float32():
        return _fixed(wire.VALUE["FLOAT"].tag, column.to_numpy(zero_copy_only=False), "<f4")
    ints = {ValueType.INT64: pa.int64(), ValueType.INT32: pa.int32()}
    if value_type in ints and kind == ints[value_type]:
        tag = wire.VALUE[value_type.name].tag
        if not has_nulls:
            return _varints(tag, column.to_numpy())
        # Feast sees such a column as floats (NaN for null), so big values lose precision as
        # they do there; beyond 2**62 its conversion is left to Feast itself.
        floats = column.to_numpy(zero_copy_only=False)
        missing = np.isnan(floats)
        filled = np.where(missing, 0.0, floats)
        if np.all(np.abs(filled) < 2.0**62):
            return _varints(tag, filled.astype(np.int64), skip=missing)
    if value_type == ValueType.STRING and kind in (pa.string(), pa.large_string()):
        tag, varint = wire.VALUE["STRING"].tag, wire.varint
        return Cells.of(
            [
                b"" if s is None else tag + varint(len(e := s.encode())) + e
                for s in column.to_pylist()
            ]
        )
    if value_type == ValueType.BOOL and kind == pa.bool_():
        true, false = (wire.VALUE["BOOL"].tag + wire.varint(v) for v in (1, 0))
        return Cells.of([b"" if b is None else (true if b else false) for b in column.to_pylist()])
    encoded = _encode_documents(column, value_type.name)
    if encoded is not None:
        return encoded
    protos = compat.to_protos(column.to_numpy(zero_copy_only=False), value_type)
    return Cells.of([p.SerializeToString() for p in protos])


def _encode_documents(column: Any, kind: str) -> Cells | None:
    """Json from a string column, and Map and Struct from a struct column of strings, as
    Feast's conversion makes them, a Python step per value but no protobuf object (the
    entries of a map in the dict's order: protobuf's own order follows its hash table, so
    only the decoded maps compare). None where another layout needs Feast's conversion."""
    import pyarrow as pa

    field = wire.VALUE.get(kind)
    if field is None:
        return None
    if kind == "JSON" and column.type in (pa.string(), pa.large_string()):
        values = column.to_pylist()
        try:
            for text in values:
                if text is not None:
                    json.loads(text)  # Feast refuses a value that is not Json: let it say so
        except ValueError:
            return None
        return Cells.of(
            [b"" if t is None else _length_delimited(field.tag, t.encode()) for t in values]
        )
    if kind in ("MAP", "STRUCT") and pa.types.is_struct(column.type):
        strings = (pa.string(), pa.large_string())
        if all(column.type.field(i).type in strings for i in range(column.type.num_fields)):
            return Cells.of([b"" if d is None else _map(field.tag, d) for d in column.to_pylist()])
    return None


#: Tags inside a serialized ``Map``: its entries, an entry's key and value, a string Value.
_ENTRY, _KEY, _ENTRY_VALUE = b"\x0a", b"\x0a", b"\x12"


def _map(tag: bytes, entries: dict[str, str | None]) -> bytes:
    """A Value holding a map (or struct) of string values; a None value is an empty Value."""
    string = wire.VALUE["STRING"].tag
    body = b"".join(
        _length_delimited(
            _ENTRY,
            _length_delimited(_KEY, key.encode())
            + _length_delimited(
                _ENTRY_VALUE, b"" if value is None else _length_delimited(string, value.encode())
            ),
        )
        for key, value in entries.items()
    )
    return _length_delimited(tag, body)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + wire.varint(len(payload)) + payload


def encode_timestamps(column: Any) -> Cells:
    """Serialized protobuf Timestamps at microsecond precision, as Feast's ``FromDatetime`` of
    the row's datetime makes them (``seconds`` and ``nanos`` as varints, each left out when
    zero)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    micros = pc.cast(pc.cast(column, pa.timestamp("us", "UTC"), safe=False), pa.int64())
    seconds, micro = np.divmod(micros.to_numpy(zero_copy_only=False), 1_000_000)
    nanos = micro * 1000
    parts = [
        _varints(wire.SECONDS.tag, seconds, skip=seconds == 0),
        _varints(wire.NANOS.tag, nanos, skip=nanos == 0),
    ]
    return joined(parts)


#: Compare-and-set of one batch, run by Redis: per key, HSET the view's event time and values
#: unless the stored event time is as new or newer, with Feast's exception that an unset (zero)
#: stored time never blocks a write. ARGV: the key TTL (0: none), the ``_ts:view`` field, then
#: per key HSET's arguments (``_ts:view``, the new Timestamp, then field, value pairs) as one
#: MessagePack blob: one argument per key instead of two per field cuts the work of packing,
#: sending and parsing them (in C, by Redis's ``cmsgpack``). Both Timestamps are protobuf,
#: decoded here only when the key already has one (the tags of their two fields are read from
#: ``wire``, one byte each). Returns how many keys were written.
_WRITE_NEWER = """
local function seconds_nanos(blob)
  local seconds, nanos, i = 0, 0, 1
  while i <= #blob do
    local tag = string.byte(blob, i)
    i = i + 1
    local bytes = {}
    repeat
      local b = string.byte(blob, i)
      i = i + 1
      bytes[#bytes + 1] = b % 128
    until b < 128
    local value = 0
    if #bytes == 10 then
      for k = 9, 1, -1 do value = value * 128 + (127 - bytes[k]) end
      value = -(value + 1)
    else
      for k = #bytes, 1, -1 do value = value * 128 + bytes[k] end
    end
    if tag == SECONDS then seconds = value elseif tag == NANOS then nanos = value end
  end
  return seconds, nanos
end
local ttl, ts_field = tonumber(ARGV[1]), ARGV[2]
local written = 0
for k, key in ipairs(KEYS) do
  local stored = redis.call('HGET', key, ts_field)
  local write = true
  if stored then
    local s0, n0 = seconds_nanos(stored)
    local fields = {cmsgpack.unpack(ARGV[k + 2])}
    local s1, n1 = seconds_nanos(fields[2])
    if (s0 ~= 0 or n0 ~= 0) and (s1 < s0 or (s1 == s0 and n1 <= n0)) then write = false end
    if write then redis.call('HSET', key, unpack(fields)) end
  else
    redis.call('HSET', key, cmsgpack.unpack(ARGV[k + 2]))
  end
  if write then
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
end
return written
""".replace("SECONDS", str(wire.SECONDS.key)).replace("NANOS", str(wire.NANOS.key))


def _string_headers(lengths: Any) -> Cells:
    """The MessagePack string header of each length (Redis's cmsgpack has no bin type; str is
    binary-safe): str8, str16 or str32, big-endian."""
    count = len(lengths)
    big_endian = lengths.astype(">u4").view(np.uint8).reshape(count, 4)
    small, medium = lengths < 256, (lengths >= 256) & (lengths < 65536)
    large = ~(small | medium)
    matrix = np.zeros((count, 5), np.uint8)
    matrix[:, 0] = np.where(small, 0xD9, np.where(medium, 0xDA, 0xDB))
    matrix[small, 1] = big_endian[small, 3]
    matrix[medium, 1:3] = big_endian[medium, 2:]
    matrix[large, 1:] = big_endian[large]
    return Cells.padded(matrix, np.where(small, 2, np.where(medium, 3, 5)))


def _packed(value: bytes) -> bytes:
    """One MessagePack string."""
    return _string_headers(np.array([len(value)])).rows()[0] + value


class RedisLayout:
    """One feature view's rows as Feast's Redis online store lays them out: keys, fields and
    encoded values."""

    def __init__(self, feature_store: Any, view: Any) -> None:
        self.project = feature_store.project.encode()
        self.version = feature_store.config.entity_key_serialization_version
        self.keys = list(view.join_keys)
        self.key_types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        self.features = [(f.name, f.dtype.to_value_type()) for f in view.features]
        self.ts_field = compat.timestamp_field(view.name)
        #: The event time's field, then each feature's: the order of ``cells``.
        self.fields = [
            self.ts_field,
            *(compat.field_name(view.name, name) for name, _ in self.features),
        ]
        self.timestamp_column = view.batch_source.timestamp_field

    def entity_keys(self, batch: Any) -> list[bytes]:
        """Redis keys of a batch's rows, as Feast's ``serialize_entity_key`` + project.

        A single string or int64 join key (the common case) serializes as a fixed head and
        the length-prefixed value: the head is taken from Feast's own serialization of the
        batch's first row and the result checked against Feast's on its last row; any other
        shape goes through Feast row by row."""
        import pyarrow as pa

        if len(self.keys) == 1:
            column = batch.column(self.keys[0])
            if column.null_count == 0 and column.type in (pa.string(), pa.large_string()):
                raw = [s.encode() for s in column.to_pylist()]
            elif column.null_count == 0 and column.type == pa.int64():
                raw = [struct.pack("<q", v) for v in column.to_pylist()]
            else:
                raw = []
            if raw:
                tail = struct.pack("<I", len(raw[0])) + raw[0] + self.project
                first = self._feast_keys(batch.slice(0, 1))[0]
                if first.endswith(tail):
                    head = first[: -len(tail)]
                    keys = [head + struct.pack("<I", len(r)) + r + self.project for r in raw]
                    if keys[-1] == self._feast_keys(batch.slice(len(raw) - 1, 1))[0]:
                        return keys
        return self._feast_keys(batch)

    def _feast_keys(self, batch: Any) -> list[bytes]:
        return compat.serialize_keys(
            self.keys,
            [self.key_types[k] for k in self.keys],
            [batch.column(k).to_numpy(zero_copy_only=False) for k in self.keys],
            self.version,
            self.project,
        )

    def cells(self, batch: Any) -> list[Cells]:
        """Each field's values for the batch's rows, in ``fields`` order."""
        stamps = encode_timestamps(batch.column(self.timestamp_column))
        return [stamps] + [encode_column(batch.column(name), kind) for name, kind in self.features]

    def hashes(self, batch: Any) -> dict[bytes, dict[bytes, bytes]]:
        """Each row's key and hash, as Feast would write them into an empty store."""
        columns = [cells.rows() for cells in self.cells(batch)]
        return {
            key: dict(zip(self.fields, values, strict=True))
            for key, values in zip(self.entity_keys(batch), zip(*columns, strict=True), strict=True)
        }


class RedisLayoutWriter:
    """Writes one feature view's latest rows as Feast's Redis online store would."""

    def __init__(self, feature_store: Any, view: Any, client: Any) -> None:
        self.layout = RedisLayout(feature_store, view)
        self.packed_fields = [_packed(f) for f in self.layout.fields]
        ttl = getattr(feature_store.config.online_store, "key_ttl_seconds", None) or 0
        self.head = [ttl, self.layout.ts_field]
        self.script = client.register_script(_WRITE_NEWER)

    def encode(self, keys: list[bytes], cells: list[Cells]) -> list[Any]:
        """One record batch (one row per entity), as its keys and ``RedisLayout.cells``, as
        the arguments of ``send``."""
        pairs: list[Cells] = []
        for field, column in zip(self.packed_fields, cells, strict=True):
            pairs += [Cells.constant(field, len(keys)), _string_headers(column.lengths), column]
        return [*self.head, *joined(pairs).rows()]

    def send(self, keys: list[bytes], args: list[Any]) -> int:
        """One compare-and-set script call: rows newer than what is stored are written; the
        number written."""
        return int(self.script(keys=keys, args=args))

    def write(self, batch: Any) -> int:
        keys = self.layout.entity_keys(batch)
        return self.send(keys, self.encode(keys, self.layout.cells(batch)))


def _latest_query(view: Any) -> tuple[list[str], str, str, str]:
    """What both sources select: the columns (and their quoted list), the quoted join keys,
    and the order that puts an entity's latest row first (event time, then created time)."""
    source = view.batch_source
    columns = [*view.join_keys, *(f.name for f in view.features), source.timestamp_field]
    order = [f"{quoted(source.timestamp_field)} DESC"]
    if source.created_timestamp_column:
        order.append(f"{quoted(source.created_timestamp_column)} DESC")
    keys = ", ".join(quoted(k) for k in view.join_keys)
    return columns, ", ".join(quoted(c) for c in columns), keys, ", ".join(order)


def parquet_latest(
    view: Any, path: str, start: datetime, end: datetime, batch_rows: int = BATCH_ROWS
) -> Iterator[Any]:
    """The latest row per entity with ``start <= event time <= end``, ties broken by the
    created time (Feast's rule), as record batches from DuckDB."""
    import duckdb

    _, selected, keys, order = _latest_query(view)
    sql = (
        f"SELECT {selected} FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}') "
        f"WHERE {quoted(view.batch_source.timestamp_field)} BETWEEN ? AND ? "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
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

    columns, selected, keys, order = _latest_query(view)
    sql = (
        f"SELECT DISTINCT ON ({keys}) {selected} "
        f"FROM {view.batch_source.get_table_query_string()} AS s "
        f"WHERE {quoted(view.batch_source.timestamp_field)} BETWEEN %s AND %s "
        f"ORDER BY {keys}, {order}"
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
    packed: Sequence[PackedWriter] = (),
) -> int:
    """Write every batch of one view, and its segments in ``packed`` layouts; the number of
    entities whose hash changed."""
    writer = RedisLayoutWriter(feature_store, view, client)
    written = 0
    # Batches in flight on their own connections: Redis starts the second as soon as the first
    # is done, while the first's reply and the third's arguments are still on the way. The
    # batches hold different entities (one row each), so their order does not matter.
    with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="materialize") as sender:
        pending: deque[Future[int]] = deque()
        for batch in batches:
            if not batch.num_rows:
                continue
            keys, cells = writer.layout.entity_keys(batch), writer.layout.cells(batch)
            args = writer.encode(keys, cells)
            if len(pending) == IN_FLIGHT:
                written += pending.popleft().result()
            pending.append(sender.submit(writer.send, keys, args))
            if packed:
                _pack(writer.layout, keys, cells, packed)
            if on_rows:
                on_rows(batch.num_rows)
        while pending:
            written += pending.popleft().result()
    return written


def _pack(
    layout: RedisLayout, keys: list[bytes], cells: list[Cells], packed: Sequence[PackedWriter]
) -> None:
    """A batch's segments: the values just encoded for the hashes, decoded as a read of the
    hashes decodes them, so both layouts answer the same."""
    raws: list[list[bytes | None]] = [list(column.rows()) for column in cells]
    stamps = event_nanos(raws[0])
    decoded = {
        name: decode_column(decoder_of(kind.name), column)
        for (name, kind), column in zip(layout.features, raws[1:], strict=True)
    }
    for writer in packed:
        writer.write(keys, stamps, [decoded[name] for name in writer.view.features])

"""Does our Redis layout code agree with Feast's? Checked once per store, before a fast path
is used.

Two small probe views (one keyed by a string, one by an int64) with a feature of every type the
fast paths encode and decode are written twice in memory: by the materializer's encoder, and by
Feast's own Redis online store (its writes recorded, see ``compat.redis_write``). Keys, field
names and bytes must be equal; then what Feast wrote must read back, through the online read's
key encoding, field names and decoders, as Feast's own decoding reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from datalayer.categories.feature import epoch_nanos
from datalayer.stores.feast import compat
from datalayer.stores.feast.materialize_redis import RedisLayout
from datalayer.stores.feast.online_redis import (
    batch_decoder,
    decode_column,
    entity_keys,
    event_nanos,
    read_plan,
)

#: The probe rows' values, per feature type.
_VALUES: dict[str, list[Any]] = {
    "Int64": [-5, 2**40],
    "Int32": [-3, 7],
    "Float64": [0.5, -1e300],
    "Float32": [1.5, -2.0],
    "String": ["é", ""],
    "Bool": [True, False],
}
_TIMES = [datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC), datetime(1969, 12, 31, tzinfo=UTC)]
_KEYS: dict[str, list[Any]] = {"String": ["probe-é", "p"], "Int64": [7, -(2**33)]}


def layout_problem(feature_store: Any) -> str | None:
    """What differs between our layout and Feast's on this store, None when nothing does."""
    if compat.versioned_views(feature_store.config):
        return "Feast names online tables by feature view version, which the fast paths do not"
    try:
        for view, batch in _probes():
            problem = _compare(feature_store, view, batch)
            if problem:
                return problem
    except Exception as exc:  # anything unexpected means the layout cannot be trusted
        return f"the layout check failed ({type(exc).__name__}: {exc})"
    return None


def _probes() -> Iterator[tuple[Any, Any]]:
    """(Feast feature view, record batch of its rows) per probe."""
    import pyarrow as pa
    from feast import Entity, FeatureView, Field, FileSource, ValueType, types

    arrow = {
        "Int64": pa.int64(),
        "Int32": pa.int32(),
        "Float64": pa.float64(),
        "Float32": pa.float32(),
        "String": pa.string(),
        "Bool": pa.bool_(),
    }
    source = FileSource(path="datalayer_probe.parquet", timestamp_field="ts")
    for kind, key_values in _KEYS.items():
        name = f"datalayer_probe_{kind.lower()}"
        entity = Entity(name=name, join_keys=[f"{name}_id"], value_type=ValueType[kind.upper()])
        schema = [Field(name=f"{name}_id", dtype=getattr(types, kind))]
        schema += [Field(name=f"f_{t.lower()}", dtype=getattr(types, t)) for t in _VALUES]
        view = FeatureView(name=name, entities=[entity], schema=schema, source=source)
        columns = {f"{name}_id": pa.array(key_values, arrow[kind])}
        columns.update({f"f_{t.lower()}": pa.array(v, arrow[t]) for t, v in _VALUES.items()})
        columns["ts"] = pa.array(_TIMES, pa.timestamp("us", "UTC"))
        yield view, pa.RecordBatch.from_pydict(columns)


def _compare(feature_store: Any, view: Any, batch: Any) -> str | None:
    config = feature_store.config
    key = view.join_keys[0]
    key_type = next(c.dtype.to_value_type() for c in view.entity_columns if c.name == key)
    protos = {
        f.name: compat.to_protos(
            batch.column(f.name).to_numpy(zero_copy_only=False), f.dtype.to_value_type()
        )
        for f in view.features
    }
    keys = compat.to_protos(batch.column(key).to_pylist(), key_type)
    feast_rows = [
        (compat.entity_key([key], [value]), {name: p[i] for name, p in protos.items()}, at)
        for i, (value, at) in enumerate(zip(keys, _TIMES, strict=True))
    ]
    theirs = compat.redis_write(config, view, feast_rows)
    ours = RedisLayout(feature_store, view).hashes(batch)
    if list(ours) != list(theirs):
        return f"entity keys differ from Feast's (view '{view.name}')"
    for ours_hash, theirs_hash in zip(ours.values(), theirs.values(), strict=True):
        if set(ours_hash) != set(theirs_hash):
            return f"hash field names differ from Feast's (view '{view.name}')"
        for field, raw in theirs_hash.items():
            if ours_hash[field] != raw:
                return f"encoded values differ from Feast's (view '{view.name}', field {field!r})"
    return _read_back(feature_store, view, batch, theirs)


def _read_back(
    feature_store: Any, view: Any, batch: Any, written: dict[bytes, dict[bytes, bytes]]
) -> str | None:
    """What Feast wrote, read by the online read's plan and decoders."""
    references = [f"{view.name}:{f.name}" for f in view.features]
    (plan,) = read_plan(
        {view.name: view},
        references,
        feature_store.project,
        feature_store.config.entity_key_serialization_version,
    )
    key = view.join_keys[0]
    rows = [{key: value} for value in batch.column(key).to_pylist()]
    keys = entity_keys(plan, rows)
    if keys != list(written):
        return f"the online read's entity keys differ from Feast's (view '{view.name}')"
    hashes = list(written.values())
    if any(set(plan.fields) != set(h) for h in hashes):
        return f"the online read's field names differ from Feast's (view '{view.name}')"
    kinds = {f.name: f.dtype.to_value_type() for f in view.features}
    value_class = compat.value_class()
    for position, column in enumerate(plan.columns):
        raws: list[bytes | None] = [h[plan.fields[position]] for h in hashes]
        kind = kinds[column.split("__", 1)[1]]
        ours = decode_column(batch_decoder(kind.name), raws)
        theirs = [
            compat.to_python(value_class.FromString(h[plan.fields[position]])) for h in hashes
        ]
        if ours != theirs:
            return f"decoded values differ from Feast's (column '{column}')"
    stamps = event_nanos([h[plan.fields[len(plan.columns)]] for h in hashes])
    if stamps != [epoch_nanos(t) for t in _TIMES]:
        return f"decoded event times differ from Feast's (view '{view.name}')"
    return None

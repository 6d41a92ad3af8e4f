"""Feast's Redis online layout, read directly.

Feast keeps one hash per entity key: the key is Feast's ``serialize_entity_key`` of the join
keys followed by the project name; each feature is a field named ``mmh3("view:feature")`` holding
a serialized ``ValueProto``, and ``_ts:view`` holds the view's event time as a ``Timestamp``.
Every encoding goes through Feast's own functions, so a Feast upgrade that changes the layout
fails the same-answer tests instead of serving wrong values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: (value proto or None, event time in nanoseconds; 0 when unknown) per column, one per row.
Stamped = dict[str, list[tuple[Any, int]]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Value kinds returned as they are by Feast's own decoding (the common scalar ones).
_SCALARS = frozenset(
    {"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"}
)


@dataclass(frozen=True)
class ViewPlan:
    """How to read one view's features from Feast's Redis hashes."""

    columns: list[str]
    fields: list[bytes]
    keys: tuple[str, ...]
    key_types: list[Any]


def read_plan(views: Mapping[str, Any], references: Sequence[str]) -> list[ViewPlan]:
    """Per view: its features, their hash fields and its entity key shape."""
    from feast.infra.online_stores.helpers import _mmh3

    by_view: dict[str, list[str]] = {}
    for reference in references:
        view, feature = reference.split(":", 1)
        by_view.setdefault(view, []).append(feature)
    plans = []
    for name, features in by_view.items():
        view = views[name]
        keys = tuple(sorted(view.join_keys))
        types = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        plans.append(
            ViewPlan(
                columns=[f"{name}__{f}" for f in features],
                fields=[_mmh3(f"{name}:{f}") for f in features] + [f"_ts:{name}".encode()],
                keys=keys,
                key_types=[types[k] for k in keys],
            )
        )
    return plans


def read_hashes(
    client: Any, project: str, version: int, rows: list[dict[str, Any]], plans: list[ViewPlan]
) -> Stamped:
    """Every planned column for every row, in one pipeline: one HMGET per entity and key
    shape, since Feast keeps all views of one entity in one hash."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from google.protobuf.timestamp_pb2 import Timestamp

    suffix = project.encode()
    groups: dict[tuple[str, ...], list[ViewPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.keys, []).append(plan)
    pipe = client.pipeline(transaction=False)
    for keys, members in groups.items():
        key_types = members[0].key_types
        encoded = [
            python_values_to_proto_values([row[k] for row in rows], value_type)
            for k, value_type in zip(keys, key_types, strict=True)
        ]
        fields = [field for plan in members for field in plan.fields]
        for i in range(len(rows)):
            entity = EntityKey(join_keys=keys, entity_values=[e[i] for e in encoded])
            pipe.hmget(serialize_entity_key(entity, version) + suffix, fields)
    replies = pipe.execute()
    stamped: Stamped = {c: [] for p in plans for c in p.columns}
    position = 0
    for members in groups.values():
        for reply in replies[position : position + len(rows)]:
            offset = 0
            for plan in members:
                width = len(plan.fields)
                part = reply[offset : offset + width]
                offset += width
                raw_ts = part[-1]
                nanos = 0
                if raw_ts is not None:
                    stamp = Timestamp()
                    stamp.ParseFromString(raw_ts)
                    nanos = stamp.seconds * 1_000_000_000 + stamp.nanos
                for column, raw in zip(plan.columns, part, strict=False):
                    value = None
                    if raw is not None:
                        value = Value()
                        value.ParseFromString(raw)
                    stamped[column].append((value, nanos))
        position += len(rows)
    return stamped


def nanos(at: datetime) -> int:
    """Nanoseconds since the epoch, exact (no float rounding)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


def decode(value: Any) -> Any:
    """Feast's decoding of a ValueProto, with a shortcut for plain scalars."""
    kind = value.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)

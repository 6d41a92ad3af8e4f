"""Every use of a Feast internal, in one place.

Feast's public API does not cover what the fast paths and ``apply`` need: the Redis online
layout (key encoding, hashed field names, the ``_ts:<view>`` field), its value conversions,
``feast apply`` as a function, the PostgreSQL source's table. Each is wrapped here, so a Feast
upgrade that moves one breaks this module only, and ``selfcheck`` compares what the fast paths
build from these functions with what Feast itself writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any


def value_class() -> Any:
    """Feast's ``ValueProto`` message class."""
    from feast.protos.feast.types.Value_pb2 import Value

    return Value


def field_name(view: str, feature: str) -> bytes:
    """The hash field of one feature in Feast's Redis layout."""
    from feast.infra.online_stores.helpers import _mmh3

    return bytes(_mmh3(f"{view}:{feature}"))


def timestamp_field(view: str) -> bytes:
    """The hash field holding a view's event time in Feast's Redis layout."""
    return f"_ts:{view}".encode()


def versioned_views(config: Any) -> bool:
    """Whether Feast names online tables by feature view version (``<view>_v<n>``)."""
    return bool(getattr(config.registry, "enable_online_feature_view_versioning", False))


def to_protos(values: Any, value_type: Any) -> list[Any]:
    """Feast's conversion of Python (or numpy) values of one type to ``ValueProto``."""
    from feast.type_map import python_values_to_proto_values

    return list(python_values_to_proto_values(values, value_type))


def to_python(value: Any) -> Any:
    """Feast's conversion of one ``ValueProto`` to a Python value."""
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def entity_key(join_keys: Sequence[str], values: Sequence[Any]) -> Any:
    """An ``EntityKey`` proto of join keys and their ``ValueProto``s."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    return EntityKey(join_keys=list(join_keys), entity_values=list(values))


def serialize_keys(
    keys: Sequence[str],
    key_types: Sequence[Any],
    columns: Sequence[Any],
    version: int,
    suffix: bytes,
) -> list[bytes]:
    """Redis keys of entities given as one value column per join key: Feast's
    ``serialize_entity_key`` of each, plus the project (``suffix``)."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    encoded = [
        to_protos(values, value_type) for values, value_type in zip(columns, key_types, strict=True)
    ]
    return [
        serialize_entity_key(entity_key(keys, values), version) + suffix
        for values in zip(*encoded, strict=True)
    ]


def is_postgres_source(source: Any) -> bool:
    """Whether a batch source is Feast's PostgreSQL source (a table or query)."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    return isinstance(source, PostgreSQLSource)


def postgres_table(source: Any) -> str | None:
    """The table of a PostgreSQL source, None for a query or another kind of source."""
    options = getattr(source, "_postgres_options", None)
    table = getattr(options, "_table", None)
    return str(table) if table else None


def apply_repo(feature_store: Any, repo: Path) -> list[str]:
    """``feast apply`` of every definition in ``repo`` (deletions included); the names of its
    feature views."""
    from feast import Project
    from feast.repo_operations import apply_total_with_repo_instance, parse_repo

    with _repo_imports(repo):
        contents = parse_repo(repo)
    if not contents.projects:
        contents.projects.append(Project(name=feature_store.project, description=""))
    apply_total_with_repo_instance(
        feature_store,
        feature_store.project,
        feature_store.registry,
        contents,
        skip_source_validation=True,
    )
    return [view.name for view in contents.feature_views]


@contextlib.contextmanager
def _repo_imports(repo: Path) -> Iterator[None]:
    """What ``parse_repo`` needs for its imports, only while it runs.

    It imports the repo's files by module name, relative to the working directory and through
    ``sys.path``: both are set for the call and restored after it. The repo's modules are not
    left in ``sys.modules``, and a same-named module imported before (another repo's, or
    another profile's) is put aside meanwhile, so it is neither reused nor lost."""
    root = repo.resolve()
    names = {".".join(p.relative_to(repo).with_suffix("").parts) for p in repo.rglob("*.py")}
    shadowed = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    before = set(sys.modules)
    path, cwd = list(sys.path), os.getcwd()
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for name in set(sys.modules) - before:
            if _inside(sys.modules[name], root):
                del sys.modules[name]
        sys.modules.update(shadowed)


def _inside(module: ModuleType, root: Path) -> bool:
    file = getattr(module, "__file__", None)
    places = [file] if file else list(getattr(module, "__path__", []))
    return any(Path(place).resolve().is_relative_to(root) for place in places)


def redis_write(
    config: Any, view: Any, rows: Sequence[tuple[Any, dict[str, Any], datetime]]
) -> dict[bytes, dict[bytes, bytes]]:
    """What Feast's Redis online store writes for rows of (entity key proto, feature
    ValueProtos, event time) into an empty store: each key's hash, recorded instead of sent."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    recorder = _Recorder()
    store = RedisOnlineStore()
    store._client = recorder  # type: ignore[assignment]
    store.online_write_batch(config, view, [(*row, None) for row in rows], None)
    return recorder.hashes


class _Recorder:
    """Stands in for redis-py's client and its pipeline: reads answer as from an empty store,
    writes to hashes are recorded."""

    def __init__(self) -> None:
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self._replies: list[Any] = []

    def pipeline(self, transaction: bool = True) -> _Recorder:
        return self

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hmget(self, name: bytes, keys: Any, *args: Any) -> _Recorder:
        fields = [keys, *args] if isinstance(keys, str | bytes) else [*keys, *args]
        self._replies.append([None] * len(fields))
        return self

    def hset(self, name: bytes, mapping: dict[Any, Any] | None = None, **_: Any) -> _Recorder:
        stored = self.hashes.setdefault(bytes(name), {})
        for field, value in (mapping or {}).items():
            stored[field.encode() if isinstance(field, str) else bytes(field)] = bytes(value)
        self._replies.append(len(mapping or {}))
        return self

    def expire(self, name: bytes, time: int) -> _Recorder:
        self._replies.append(True)
        return self

    def execute(self) -> list[Any]:
        replies, self._replies = self._replies, []
        return replies

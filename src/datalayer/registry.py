"""Store types by name: a plain map to dotted paths, imported only when a profile uses them.

Third-party packages add store types through the ``datalayer.stores`` entry-point group, e.g.
``[project.entry-points."datalayer.stores"] mystore = "mypkg.store:MyStoreConfig"``.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from datalayer.errors import ConfigError, did_you_mean
from datalayer.stores.base import StoreConfig

ENTRY_POINT_GROUP = "datalayer.stores"

BUILTIN_STORE_TYPES: dict[str, str] = {
    "sqlite": "datalayer.stores.sql.sqlite:SQLiteConfig",
    "postgres": "datalayer.stores.sql.postgres:PostgresConfig",
    "embedded-log": "datalayer.stores.streaming.embedded_log:EmbeddedLogConfig",
    "kafka": "datalayer.stores.streaming.kafka.config:KafkaConfig",
    "embedded-documents": "datalayer.stores.documents.embedded:EmbeddedDocumentsConfig",
    "mongodb": "datalayer.stores.documents.mongodb:MongoDBConfig",
    "embedded-kv": "datalayer.stores.kv.embedded:EmbeddedKVConfig",
    "redis": "datalayer.stores.kv.redis:RedisConfig",
    "feast": "datalayer.stores.feast.store:FeastConfig",
}


@cache
def store_types() -> dict[str, str]:
    """Every known store type name and its dotted path: built-ins, then entry points."""
    known = dict(BUILTIN_STORE_TYPES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(ep.name, ep.value)
    return known


def load_store_type(name: str) -> type[StoreConfig]:
    """Import the config class of store type ``name``."""
    known = store_types()
    if name not in known:
        raise KeyError(
            f"unknown store type '{name}'{did_you_mean(name, list(known))}; "
            f"known types: {', '.join(sorted(known))}"
        )
    module_name, _, attr = known[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"store type '{name}' cannot be loaded from '{known[name]}': {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, StoreConfig)):
        raise ConfigError(f"store type '{name}': '{known[name]}' is not a StoreConfig subclass")
    return cls

"""Store types by name: what each one serves and needs is known without importing it.

A plain table maps each built-in type to its config class's dotted path, the categories it
serves, the pip extra that brings its driver and the driver's module. The config class is
imported only when a profile in use names the type, and only once its driver is present, so a
base install loads any registry whose active profile needs no extra.

Third-party packages add store types through the ``datalayer.stores`` entry-point group, e.g.
``[project.entry-points."datalayer.stores"] mystore = "mypkg.store:MyStoreConfig"``; their
``serves`` and ``extra`` are read from the class.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from datalayer.errors import ConfigError, MissingDriver, did_you_mean
from datalayer.stores.base import StoreConfig

ENTRY_POINT_GROUP = "datalayer.stores"


@dataclass(frozen=True)
class StoreType:
    """A store type as the loader sees it before importing anything of it."""

    path: str  # "package.module:ConfigClass"
    serves: frozenset[str] | None = None  # None: read from the class (entry points)
    extra: str | None = None
    driver: str | None = None  # the module the extra installs


def _builtin(
    path: str, serves: str, extra: str | None = None, driver: str | None = None
) -> StoreType:
    return StoreType(f"datalayer.stores.{path}", frozenset({serves}), extra, driver)


BUILTIN_STORE_TYPES: dict[str, StoreType] = {
    "sqlite": _builtin("sql.sqlite:SQLiteConfig", "transactional"),
    "postgres": _builtin("sql.postgres:PostgresConfig", "transactional", "postgres", "psycopg"),
    "embedded-log": _builtin("streaming.embedded_log:EmbeddedLogConfig", "streaming"),
    "kafka": _builtin(
        "streaming.kafka.config:KafkaConfig", "streaming", "kafka", "confluent_kafka"
    ),
    "embedded-documents": _builtin("documents.embedded:EmbeddedDocumentsConfig", "document"),
    "mongodb": _builtin("documents.mongodb:MongoDBConfig", "document", "mongodb", "pymongo"),
    "embedded-kv": _builtin("kv.embedded:EmbeddedKVConfig", "key-value"),
    "redis": _builtin("kv.redis:RedisConfig", "key-value", "redis", "redis"),
    "feast": _builtin("feast.store:FeastConfig", "feature", "feast", "feast"),
}


@cache
def store_types() -> dict[str, StoreType]:
    """Every known store type: built-ins, then entry points."""
    known = dict(BUILTIN_STORE_TYPES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(ep.name, StoreType(ep.value))
    return known


def serves(name: str) -> frozenset[str]:
    """The categories a store type serves (an entry point's class is imported to tell)."""
    info = store_types()[name]
    if info.serves is not None:
        return info.serves
    try:
        return load_store_type(name).serves
    except Exception:
        return frozenset()


def load_store_type(name: str) -> type[StoreConfig]:
    """Import the config class of store type ``name``; ``MissingDriver`` names the extra when
    its driver is not installed, ``KeyError`` says what types exist."""
    known = store_types()
    if name not in known:
        raise KeyError(
            f"unknown store type '{name}'{did_you_mean(name, list(known))}; "
            f"known types: {', '.join(sorted(known))}"
        )
    info = known[name]
    if info.driver and importlib.util.find_spec(info.driver) is None:
        raise MissingDriver(
            f"store type '{name}' needs the '{info.driver}' package, which is not installed: "
            f"pip install 'datalayer[{info.extra}]'"
        )
    module_name, _, attr = info.path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"store type '{name}' cannot be loaded from '{info.path}': {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, StoreConfig)):
        raise ConfigError(f"store type '{name}': '{info.path}' is not a StoreConfig subclass")
    return cls

"""Backends for the contract suites: each category's suite runs once per store type here.

A later issue adds real servers by adding an entry per category (e.g. ``postgres``) whose
factory asks for the server's fixture through ``request``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import datalayer
from datalayer import DataLayer

StoreFactory = Callable[[pytest.FixtureRequest, Path], dict[str, Any]]

BACKENDS: dict[str, dict[str, StoreFactory]] = {
    "transactional": {
        "sqlite": lambda _req, tmp: {"type": "sqlite", "path": str(tmp / "sql.db")},
        "postgres": lambda req, _tmp: {
            "type": "postgres",
            "url": req.getfixturevalue("postgres_url"),
        },
    },
    "streaming": {
        "embedded-log": lambda _req, tmp: {
            "type": "embedded-log",
            "path": str(tmp / "log.db"),
            "session_timeout": "2s",
            "poll_interval": 0.01,
            "max_message_bytes": 65536,
        },
        "kafka": lambda req, _tmp: {
            "type": "kafka",
            "bootstrap_servers": req.getfixturevalue("kafka_bootstrap"),
            "session_timeout": "3s",
            "max_message_bytes": 65536,
            "delivery_timeout_ms": 10000,
        },
    },
    "document": {
        "embedded-documents": lambda _req, tmp: {
            "type": "embedded-documents",
            "path": str(tmp / "docs.db"),
        },
        "mongodb": lambda req, _tmp: {"type": "mongodb", "url": req.getfixturevalue("mongodb_url")},
    },
    "key-value": {
        "embedded-kv": lambda _req, tmp: {"type": "embedded-kv", "path": str(tmp / "kv.db")},
        "redis": lambda req, _tmp: {"type": "redis", "url": req.getfixturevalue("redis_url")},
    },
}


def write_registry(tmp_path: Path, store: dict[str, Any], patterns: dict[str, Any]) -> Path:
    """A registry with one profile ``test`` holding one store ``main``."""
    file = tmp_path / "datalayer.yaml"
    file.write_text(
        yaml.safe_dump({"version": 1, "profiles": {"test": {"main": store}}, "patterns": patterns})
    )
    return file


def _unique_targets(name: str, category: str, spec: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Suffix tables, topics, collections and prefixes so tests never share a server's names."""
    out = dict(spec)
    if category == "key-value":
        out.setdefault("prefix", name)
    for key in ("table", "topic", "collection", "dead_letter", "prefix"):
        if key in out:
            out[key] = f"{out[key]}_{suffix}"
    return out


OpenLayer = Callable[[dict[str, Any]], DataLayer]


def _open_layer(
    category: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[OpenLayer]:
    factory = BACKENDS[category][request.param]
    opened: list[DataLayer] = []

    suffix = uuid.uuid4().hex[:8]

    def open_with(patterns: dict[str, Any]) -> DataLayer:
        entries = {
            name: {
                "store": "main",
                "category": category,
                **_unique_targets(name, category, spec, suffix),
            }
            for name, spec in patterns.items()
        }
        file = write_registry(tmp_path, factory(request, tmp_path), entries)
        dl = datalayer.open(file, profile="test")
        dl.apply()
        opened.append(dl)
        return dl

    open_with.backend = request.param  # type: ignore[attr-defined]
    yield open_with
    for dl in opened:
        dl.close()


@pytest.fixture(params=list(BACKENDS["transactional"]))
def transactional_layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLayer]:
    yield from _open_layer("transactional", request, tmp_path)


@pytest.fixture(params=list(BACKENDS["streaming"]))
def streaming_layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLayer]:
    yield from _open_layer("streaming", request, tmp_path)


@pytest.fixture(params=list(BACKENDS["document"]))
def document_layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLayer]:
    yield from _open_layer("document", request, tmp_path)


@pytest.fixture(params=list(BACKENDS["key-value"]))
def kv_layer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenLayer]:
    yield from _open_layer("key-value", request, tmp_path)

"""Built-in store types for the contract suites of ``datalayer.testing.contracts``: each
category's suite runs once per entry of ``BACKENDS``.

A factory that needs a real server asks for its fixture through ``request``; the parameter is
then listed in ``SERVERS_BY_PARAM`` of tests/conftest.py, so the test carries the server's mark.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each contract class runs once per built-in store type of its category."""
    if metafunc.cls is not None and "datalayer_store" in metafunc.fixturenames:
        metafunc.parametrize(
            "datalayer_store", list(BACKENDS[metafunc.cls.category]), indirect=True
        )


@pytest.fixture
def datalayer_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return BACKENDS[request.cls.category][request.param](request, tmp_path)

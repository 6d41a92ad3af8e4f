"""Session-wide real servers, started on first use through the same launcher as scripts/services.

A test that needs PostgreSQL asks for ``postgres_url`` (likewise ``redis_url``, ``kafka_bootstrap``,
``mongodb_url``). URLs already in the environment are used as they are. A server that cannot be
started fails the tests that need it with the launcher's message; nothing is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.services.launcher import Launcher


@pytest.fixture(scope="session")
def launcher() -> Iterator[Launcher]:
    started = Launcher()
    yield started
    started.down()


@pytest.fixture(scope="session")
def postgres_url(launcher: Launcher) -> str:
    return launcher.start("postgres").url


@pytest.fixture(scope="session")
def redis_url(launcher: Launcher) -> str:
    return launcher.start("redis").url


@pytest.fixture(scope="session")
def kafka_bootstrap(launcher: Launcher) -> str:
    return launcher.start("kafka").url


@pytest.fixture(scope="session")
def mongodb_url(launcher: Launcher) -> str:
    return launcher.start("mongodb").url


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    base, _, _ = postgres_url.rpartition("/")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

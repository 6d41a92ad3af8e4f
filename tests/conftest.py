"""Session-wide real servers, started on first use through the same launcher as scripts/services,
and the marks that let a run leave them (or Feast, or slow tests) out.

A test that needs PostgreSQL asks for ``postgres_url`` (likewise ``redis_url``, ``kafka_bootstrap``,
``mongodb_url``), or ``private_postgres`` for a server of its own. URLs already in the
environment are used as they are. A server that cannot be started fails the tests that need it
with the launcher's message; nothing is skipped.

Marks are applied at collection, never written on tests: ``services`` and one per server
(``postgres``, ``redis``, ``kafka``, ``mongodb``) from the server fixtures a test uses and from
``SERVERS_BY_PARAM`` for fixtures that ask for a server inside; ``feast``, ``lint`` and
``slow`` from the tables below. A test that reaches a server its marks do not name fails, and
so does one that opens a Feast store without the ``feast`` mark, so a missing table entry
cannot go unnoticed. Fast loops: ``pytest -m "not slow"``,
``pytest -m "not services"``, ``pytest -m "not services and not feast"``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.services.base import LocalServer
from tests.services.launcher import Launcher, cache_dir, new_state_dir, server_class

SERVERS = ("postgres", "redis", "kafka", "mongodb")

#: The fixtures below that reach a server, and which one.
SERVER_FIXTURES = {
    "postgres_url": "postgres",
    "postgres_database": "postgres",
    "private_postgres": "postgres",
    "redis_url": "redis",
    "private_redis": "redis",
    "kafka_bootstrap": "kafka",
    "private_kafka": "kafka",
    "mongodb_url": "mongodb",
}

#: (fixture, parameter) of parametrized fixtures that ask for server fixtures inside, through
#: ``request.getfixturevalue``, when they have that parameter: the servers they reach.
SERVERS_BY_PARAM: dict[tuple[str, str], tuple[str, ...]] = {
    ("datalayer_store", "postgres"): ("postgres",),  # tests/contract/conftest.py BACKENDS
    ("datalayer_store", "kafka"): ("kafka",),
    ("datalayer_store", "mongodb"): ("mongodb",),
    ("datalayer_store", "redis"): ("redis",),
    ("registry", "kafka"): ("kafka",),  # test_stream_processes.py STORES
    ("project", "postgres"): ("postgres",),  # test_migrations.py
    ("sql_store", "postgres"): ("postgres",),  # test_sql_errors.py
    ("layer", "services"): SERVERS,  # test_features.py
    ("case", "pg"): ("postgres",),  # test_materialize_fast_path.py
}

#: Tests that use Feast, by module or by ``module::test`` (a prefix of the node id).
FEAST = (
    "tests/integration/test_features.py",
    "tests/integration/test_materialize_fast_path.py",
    "tests/integration/test_online_fast_path.py",
    "tests/integration/test_training_fast_path.py",
    "tests/integration/test_quickstart.py",
    "tests/integration/test_new_pattern.py",
    "tests/integration/test_migrations.py::test_the_shipped_revisions_build_the_example_tables",
    "tests/unit/test_cli.py::test_apply_is_idempotent",
    "tests/unit/test_cli.py::test_apply_creates_files_next_to_the_registry",
    "tests/unit/test_cli.py::test_doctor_example",
    "tests/unit/test_cli.py::test_quickstart",
    "tests/unit/test_feast_decoders.py",
    "tests/unit/test_feast_encoders.py",
)

LINT = ("tests/unit/test_code_quality.py",)

#: Tests that took more than 5 s in a run of the whole suite (``--durations=0``), by node id
#: or a prefix of it.
SLOW = (
    "tests/unit/test_code_quality.py::test_tool_passes[mypy]",
    "tests/integration/test_faults.py::test_stopped_kafka_fails_publish_within_the_delivery_timeout_then_recovers",
    "tests/integration/test_new_pattern.py::test_a_new_pattern_of_each_category_needs_only_config_and_a_schema",
    "tests/integration/test_quickstart.py::test_both_profiles_group_the_same_alerts_into_the_same_incidents",
    "tests/integration/test_stream_processes.py::test_killed_consumer_s_unacked_messages_go_to_the_group",
    "tests/integration/test_stream_processes.py::test_publisher_in_another_process[kafka]",
    *(
        f"tests/contract/test_streaming.py::TestStreaming::{test}"
        for test in (
            "test_replay_from_earliest_latest_offset_and_timestamp[kafka]",
            "test_committed_offsets_resume_the_group[kafka]",
            "test_nack_redelivers_then_dead_letters_with_headers[kafka]",
            "test_publish_then_consume_round_trips[kafka]",
            "test_unacknowledged_messages_are_delivered_again[kafka]",
            "test_two_consumers_in_one_group_share_the_partitions[embedded-log]",
        )
    ),
    # 8 threads and 4 processes incrementing one counter, every store of the category
    "tests/contract/test_transactional.py::TestTransactional::test_read_modify_write_with_for_update_loses_nothing",
    "tests/contract/test_document.py::TestDocument::test_concurrent_increments_all_count",
    "tests/contract/test_kv.py::TestKeyValue::test_concurrent_increments_all_count",
)


def _servers(item: pytest.Item) -> set[str]:
    names = set(getattr(item, "fixturenames", ()))
    found = {SERVER_FIXTURES[n] for n in names if n in SERVER_FIXTURES}
    callspec = getattr(item, "callspec", None)
    for argname, value in callspec.params.items() if callspec else ():
        if isinstance(value, str):
            found.update(SERVERS_BY_PARAM.get((argname, value), ()))
    return found


def _listed(item: pytest.Item, table: tuple[str, ...]) -> bool:
    return any(item.nodeid == p or item.nodeid.startswith((f"{p}::", f"{p}[")) for p in table)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        servers = _servers(item)
        for name in sorted(servers):
            item.add_marker(name)
        if servers or "launcher" in getattr(item, "fixturenames", ()):
            item.add_marker("services")
        for mark, table in (("feast", FEAST), ("lint", LINT), ("slow", SLOW)):
            if _listed(item, table):
                item.add_marker(mark)


@pytest.fixture(autouse=True)
def _servers_are_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that reached a server its marks do not name (a fixture asked for one inside
    and SERVERS_BY_PARAM lacks the parameter): ``-m "not services"`` would have started it."""
    yield
    reached = {SERVER_FIXTURES[n] for n in request.fixturenames if n in SERVER_FIXTURES}
    unmarked = sorted(s for s in reached if request.node.get_closest_marker(s) is None)
    if unmarked:
        pytest.fail(
            f"{request.node.nodeid} reached {', '.join(unmarked)} without the mark: add its "
            "parametrized fixture's parameter to SERVERS_BY_PARAM in tests/conftest.py",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _feast_is_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test that opens a Feast store in this process without the ``feast`` mark:
    ``-m "not feast"`` would have run it."""
    if request.node.get_closest_marker("feast") is not None:
        return
    from datalayer.stores.feast.store import FeastConfig

    def unmarked(*_args: object, **_kwargs: object) -> None:
        pytest.fail(
            f"{request.node.nodeid} opens a Feast store without the mark: add it to FEAST in "
            "tests/conftest.py",
            pytrace=False,
        )

    monkeypatch.setattr(FeastConfig, "connect", unmarked)


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


def _private(name: str) -> Iterator[LocalServer]:
    """A server of the test's own, so stopping it disturbs no other test."""
    server = server_class(name)(new_state_dir(), cache_dir())
    server.install()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres() -> Iterator[LocalServer]:
    yield from _private("postgres")


@pytest.fixture
def private_redis() -> Iterator[LocalServer]:
    yield from _private("redis")


@pytest.fixture
def private_kafka() -> Iterator[LocalServer]:
    yield from _private("kafka")

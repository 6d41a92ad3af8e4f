"""Session-wide real servers, started on first use through the same launcher as scripts/services,
and the marks that let a run leave them (or Feast, or slow tests) out.

A test that needs PostgreSQL asks for ``postgres_url`` (likewise ``redis_url``, ``kafka_bootstrap``,
``mongodb_url``), or ``private_postgres`` for a server of its own. URLs already in the
environment are used as they are. A server that cannot be started fails the tests that need it
with the launcher's message; nothing is skipped.

Network faults go through Toxiproxy: ``toxiproxy`` is a client of the session's server whose
proxies are deleted after each test, and ``postgres_proxy``, ``redis_proxy``, ``mongodb_proxy``
put a proxy in front of the shared servers, ``kafka_proxy`` in front of a private Kafka that
advertises it (see each fixture's docstring).

Marks are applied at collection, never written on tests: ``services`` and one per server
(``postgres``, ``redis``, ``kafka``, ``mongodb``, ``toxiproxy``) from the server fixtures a test
uses (its whole fixture closure, so a fixture built on ``postgres_url`` counts) and from
``SERVERS_BY_PARAM`` for fixtures that ask for a server inside; ``feast``, ``lint`` and
``slow`` from the tables below. A test that reaches a server its marks do not name fails, and
so does one that opens a Feast store without the ``feast`` mark, so a missing table entry
cannot go unnoticed. Fast loops: ``pytest -m "not slow"``,
``pytest -m "not services"``, ``pytest -m "not services and not feast"``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from tests.services.base import LocalServer
from tests.services.launcher import Launcher, cache_dir, new_state_dir, server_class
from tests.services.toxiproxy import (
    Proxied,
    ProxiedKafka,
    Toxiproxy,
    proxy_to,
    start_kafka_behind,
)

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
    "private_mongodb": "mongodb",
    "toxiproxy_url": "toxiproxy",
    "toxiproxy": "toxiproxy",
    "postgres_proxy": "postgres",
    "redis_proxy": "redis",
    "mongodb_proxy": "mongodb",
    "kafka_proxy": "kafka",
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
    ("proxied_store", "postgres"): ("postgres", "toxiproxy"),  # test_toxiproxy_faults.py
    ("proxied_store", "redis"): ("redis", "toxiproxy"),
    ("proxied_store", "mongodb"): ("mongodb", "toxiproxy"),
    ("sql_store", "postgres"): ("postgres",),  # test_sql_errors.py
    ("layer", "services"): SERVERS,  # test_features.py
    ("logged", "services"): SERVERS,  # test_skew.py
    ("case", "pg"): ("postgres",),  # test_materialize_fast_path.py
}

#: Tests that use Feast, by module or by ``module::test`` (a prefix of the node id).
FEAST = (
    "tests/integration/test_features.py",
    "tests/integration/test_feast_template.py",
    "tests/integration/test_foreign_repo.py",
    "tests/integration/test_generated_repos.py",
    "tests/integration/test_doctor.py",
    "tests/integration/test_materialize_fast_path.py",
    "tests/integration/test_online_fast_path.py",
    "tests/integration/test_training_fast_path.py",
    "tests/integration/test_quickstart.py",
    "tests/integration/test_first_hour.py",
    "tests/integration/test_serve.py",
    "tests/integration/test_feature_log.py",
    "tests/integration/test_skew.py",
    "tests/integration/test_feature_rollout.py",
    "tests/integration/test_new_pattern.py",
    "tests/integration/test_migrations.py::test_the_shipped_revisions_build_the_example_tables",
    "tests/unit/test_cli.py::test_apply_is_idempotent",
    "tests/unit/test_cli.py::test_apply_creates_files_next_to_the_registry",
    "tests/unit/test_cli.py::test_doctor_example",
    "tests/unit/test_cli.py::test_verbose_shows_log_lines_and_quiet_is_the_default",
    "tests/unit/test_cli.py::test_quickstart",
    "tests/unit/test_feast_decoders.py",
    "tests/unit/test_feast_yaml.py::test_a_redis_cluster_is_served_by_feast_and_the_store_says_so_once",
    "tests/unit/test_feast_encoders.py",
    "tests/unit/test_feast_fallbacks.py",
)

LINT = ("tests/unit/test_code_quality.py",)

#: Tests that took more than 5 s in a run of the whole suite (``--durations=0``), by node id
#: or a prefix of it.
SLOW = (
    "tests/integration/test_first_hour.py",
    "tests/unit/test_code_quality.py::test_tool_passes[mypy]",
    "tests/integration/test_faults.py::test_stopped_kafka_fails_publish_within_the_delivery_timeout_then_recovers",
    "tests/integration/test_new_pattern.py::test_a_new_pattern_of_each_category_needs_only_config_and_a_schema",
    "tests/integration/test_quickstart.py::test_both_profiles_group_the_same_alerts_into_the_same_incidents",
    "tests/integration/test_stream_processes.py::test_killed_consumer_s_unacked_messages_go_to_the_group",
    "tests/integration/test_stream_processes.py::test_publisher_in_another_process[kafka]",
    "tests/integration/test_toxiproxy.py::test_kafka_behind_the_proxy_advertises_it_and_feels_its_faults",
    "tests/integration/test_interop.py::test_a_message_kcat_produces_that_is_not_json_is_dead_lettered",
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


@pytest.fixture
def private_mongodb() -> Iterator[LocalServer]:
    yield from _private("mongodb")


@pytest.fixture(scope="session")
def toxiproxy_url(launcher: Launcher) -> str:
    """The API of the session's toxiproxy-server (``$DATALAYER_TOXIPROXY_URL`` if set, else a
    local process built on first use); tests use ``toxiproxy`` rather than this."""
    return launcher.start("toxiproxy").url


@pytest.fixture
def toxiproxy(toxiproxy_url: str, request: pytest.FixtureRequest) -> Iterator[Toxiproxy]:
    """A ``Toxiproxy`` client whose proxies are this test's own, deleted after it.

    ``toxiproxy.create_proxy(name, "host:port")`` returns a ``Proxy`` listening on a free
    127.0.0.1 port (``proxy.listen``, ``proxy.port``). Faults, each returning a ``Toxic``
    (``toxic.remove()``; ``with proxy.toxic(proxy.latency(300)):`` removes it on exit):
    ``proxy.latency(ms, jitter_ms=0)``, ``proxy.bandwidth(kb_per_s)``,
    ``proxy.reset_peer(after_ms=0)`` (TCP RST once data flows), ``proxy.timeout(close_after_ms=0)``
    (a black hole: bytes dropped, closed after the delay or never), ``proxy.slow_close(delay_ms)``,
    ``proxy.add_toxic(type, attributes)``; each takes ``stream="downstream"`` (server to client,
    the default) or ``"upstream"``. ``proxy.disable()``/``enable()`` or ``with proxy.down():``
    refuse new connections and close the open ones. ``toxiproxy.reset()`` (or ``proxy.reset()``)
    removes the toxics and enables again. Names get a per-test prefix, so sessions may share a
    server; ``toxiproxy.reset_server()`` is the API's global reset, for a server of one's own.
    """
    test = "".join(c if c.isalnum() or c in "_-." else "_" for c in request.node.name)[:60]
    client = Toxiproxy(toxiproxy_url, prefix=f"{test}-{uuid.uuid4().hex[:8]}-")
    yield client
    client.delete_proxies()


@pytest.fixture
def postgres_proxy(toxiproxy: Toxiproxy, postgres_url: str) -> Proxied:
    """The session's PostgreSQL behind a new proxy of this test: ``.url`` goes through
    ``.proxy`` (a ``Proxy``: faults as in ``toxiproxy``), ``.direct_url`` does not, and
    ``.through(postgres_database)`` gives another database's URL through the same proxy."""
    return proxy_to(toxiproxy, "postgres", postgres_url)


@pytest.fixture
def redis_proxy(toxiproxy: Toxiproxy, redis_url: str) -> Proxied:
    """The session's Redis behind a new proxy of this test (``.url``, ``.direct_url``, ``.proxy``
    as in ``postgres_proxy``); the URL keeps the password and database number."""
    return proxy_to(toxiproxy, "redis", redis_url)


@pytest.fixture
def mongodb_proxy(toxiproxy: Toxiproxy, mongodb_url: str) -> Proxied:
    """The session's MongoDB-protocol server (FerretDB) behind a new proxy of this test
    (``.url``, ``.direct_url``, ``.proxy`` as in ``postgres_proxy``); a single-host URL, so
    pymongo connects directly to the proxy."""
    return proxy_to(toxiproxy, "mongodb", mongodb_url)


@pytest.fixture
def kafka_proxy(toxiproxy: Toxiproxy) -> Iterator[ProxiedKafka]:
    """A private single-node Kafka (about 10 s to start) whose advertised listener is a proxy of
    this test: ``.url`` is the bootstrap through ``.proxy``, and the metadata it returns names
    the proxy again, so every request stays behind the faults. ``.direct_url`` is a listener
    that bypasses the proxy (topics, checks; the broker's own traffic uses it too), and
    ``.server`` (a ``KafkaServer``) can ``stop()`` and ``restart()`` on the same ports."""
    proxied = start_kafka_behind(toxiproxy, new_state_dir(), cache_dir())
    yield proxied
    proxied.server.stop()


@pytest.fixture
def time_to_error(
    record_property: Callable[[str, object], None],
) -> Callable[[str, float], AbstractContextManager[None]]:
    """``with time_to_error("postgres frozen get", bound):`` fails the test when the block takes
    ``bound`` seconds or more, and records the time as a ``time_to_error <what>`` property of
    the test (in ``--junitxml``), from which ``python -m tests.reliability`` builds its table."""

    @contextmanager
    def timed(what: str, bound: float) -> Iterator[None]:
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        record_property(f"time_to_error {what}", f"{elapsed:.3f}")
        assert elapsed < bound, f"{what}: took {elapsed:.2f}s, more than {bound}s"

    return timed

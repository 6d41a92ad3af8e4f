"""Unit tests of the registry loader: every problem is one ConfigError that says what is valid."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import Registry, load
from datalayer.config import store_types as store_registry
from datalayer.errors import ConfigError, MissingDriver, redact
from datalayer.examples.alerting import Alert, GroupingWindow, Incident, Service
from datalayer.stores.base import require_driver

EXAMPLE = Path(__file__).resolve().parents[2] / "datalayer.yaml"

SERVICE_ENV = {
    "DATALAYER_POSTGRES_URL": "postgresql://u:secret@127.0.0.1:5432/db",
    "DATALAYER_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "DATALAYER_MONGODB_URL": "mongodb://127.0.0.1:27017",
    "DATALAYER_REDIS_URL": "redis://127.0.0.1:6379/0",
}

STORES = """\
version: 1
profiles:
  local:
    sql: {type: sqlite, path: local.db}
    events: {type: embedded-log, path: events.db}
    docs: {type: embedded-documents, path: docs.db}
    cache: {type: embedded-kv, path: kv.db}
patterns:
"""

CATEGORY_NAMES = "transactional, streaming, document, key-value, feature"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DATALAYER_* from the outer environment; sys.path changes (schema imports) undone."""
    for name in ("DATALAYER_CONFIG", "DATALAYER_PROFILE", *SERVICE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield


def write(tmp_path: Path, text: str, name: str = "datalayer.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def registry(tmp_path: Path, patterns: str, stores: str = STORES) -> Path:
    """The four local stores plus ``patterns`` (indented two spaces, under ``patterns:``)."""
    if not patterns.strip():
        return write(tmp_path, stores.replace("patterns:\n", "patterns: {}\n"))
    return write(tmp_path, stores + textwrap.indent(textwrap.dedent(patterns), "  "))


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line of ``path`` that contains ``needle``."""
    hits = [n for n, text in enumerate(path.read_text().splitlines(), 1) if needle in text]
    return hits[occurrence - 1]


def load_error(path: Path, profile: str = "local") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, profile)
    err = info.value
    assert err.file == str(path)
    return err


# 1. the example registry ------------------------------------------------------------------------


def test_example_loads_for_local_without_service_env() -> None:
    reg = load(EXAMPLE, "local")
    assert isinstance(reg, Registry)
    assert reg.profile == "local"
    assert reg.file == EXAMPLE
    assert reg.profiles == ["local", "services"]
    assert {name: s.type for name, s in reg.stores.items()} == {
        "sql": "sqlite",
        "events": "embedded-log",
        "docs": "embedded-documents",
        "cache": "embedded-kv",
        "features": "feast",
    }
    assert set(reg.patterns) == {
        "accounts",
        "services",
        "alerts",
        "incidents",
        "grouping_window",
        "service_features",
        "model_features",
        "feature_reads",
        "model_labels",
    }
    assert reg.patterns["alerts"].schema_cls is Alert
    assert reg.patterns["services"].schema_cls is Service
    assert reg.patterns["incidents"].schema_cls is Incident
    assert reg.patterns["grouping_window"].schema_cls is GroupingWindow
    assert reg.patterns["alerts"].name == "alerts"


def test_example_loads_for_services(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)
    reg = load(EXAMPLE, "services")
    assert reg.profile == "services"
    assert {name: s.type for name, s in reg.stores.items()} == {
        "sql": "postgres",
        "events": "kafka",
        "docs": "mongodb",
        "cache": "redis",
        "features": "feast",
    }
    sql = reg.stores["sql"]
    assert sql.url == SERVICE_ENV["DATALAYER_POSTGRES_URL"]  # type: ignore[attr-defined]
    assert "secret" not in sql.target()
    assert reg.stores["events"].bootstrap_servers == "127.0.0.1:9092"  # type: ignore[attr-defined]
    assert reg.stores["docs"].url == "mongodb://127.0.0.1:27017"  # type: ignore[attr-defined]
    assert reg.stores["cache"].url == "redis://127.0.0.1:6379/0"  # type: ignore[attr-defined]
    assert len(reg.patterns) == 9


def test_services_profile_without_env_names_the_variable() -> None:
    err = load_error(EXAMPLE, "services")
    assert "DATALAYER_POSTGRES_URL" in str(err)
    assert err.path == "profiles.services.sql.url"


# 2. invalid YAML ---------------------------------------------------------------------------------


def test_invalid_yaml_has_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        profiles:
          local:
            sql: {type: sqlite}
            bad: x: y
        patterns: {}
        """,
    )
    err = load_error(path)
    assert (err.line, err.column) == (5, 11)
    assert "invalid YAML" in str(err)
    assert "mapping values are not allowed here" in str(err)
    assert str(err).startswith(f"{path}:5:11: invalid YAML")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_registry_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    err = load_error(write(tmp_path, text))
    assert "must be a mapping with keys version, profiles and patterns" in str(err)


# 3. unknown category -----------------------------------------------------------------------------


def test_unknown_category_suggests_the_close_one(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streamng
          store: events
          topic: alerts
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.alerts.category"
    assert err.line == line_of(path, "category: streamng")
    assert "unknown category 'streamng'" in str(err)
    assert "did you mean 'streaming'?" in str(err)
    assert f"categories: {CATEGORY_NAMES}" in str(err)


def test_missing_category_lists_categories(tmp_path: Path) -> None:
    path = registry(tmp_path, "alerts: {store: events, topic: alerts}\n")
    err = load_error(path)
    assert err.path == "patterns.alerts.category"
    assert "no 'category'" in str(err)
    assert f"categories: {CATEGORY_NAMES}" in str(err)


# 4. unknown store type ---------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "meant"), [("postgress", "postgres"), ("sqllite", "sqlite")])
def test_unknown_store_type_suggests_the_close_one(tmp_path: Path, typo: str, meant: str) -> None:
    path = registry(tmp_path, "", stores=STORES.replace("type: sqlite", f"type: {typo}"))
    err = load_error(path)
    assert err.path == "profiles.local.sql.type"
    assert err.line == line_of(path, f"type: {typo}")
    assert f"unknown store type '{typo}'" in str(err)
    assert f"did you mean '{meant}'?" in str(err)
    assert "known types: " in str(err)
    assert "embedded-log" in str(err)
    assert "kafka" in str(err)


def test_unknown_store_type_in_another_profile_is_reported_too(tmp_path: Path) -> None:
    stores = STORES.replace(
        "patterns:\n", "  services:\n    sql: {type: postgress, url: x}\npatterns:\n"
    )
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path, "local")
    assert err.path == "profiles.services.sql.type"
    assert err.line == line_of(path, "type: postgress")
    assert "did you mean 'postgres'?" in str(err)


# 5. pattern on a store missing from the profile --------------------------------------------------


def test_pattern_store_missing_from_profile_lists_stores(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        windows:
          category: key-value
          store: cach
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.windows.store"
    assert err.line == line_of(path, "store: cach")
    assert "store 'cach' is not defined in profile 'local'" in str(err)
    assert "did you mean 'cache'?" in str(err)
    assert "stores there: sql, events, docs, cache" in str(err)


# 6. category the store type cannot serve ---------------------------------------------------------


def test_category_the_store_type_cannot_serve(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streaming
          store: sql
          topic: alerts
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.alerts.store"
    assert err.line == line_of(path, "store: sql")
    assert "store 'sql' is of type 'sqlite', which cannot serve category 'streaming'" in str(err)
    assert "store types that can: embedded-log, kafka" in str(err)


# 7. environment variables ------------------------------------------------------------------------


def test_unset_environment_variable_names_variable_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATALAYER_TEST_UNSET_VAR", raising=False)
    stores = STORES.replace("path: local.db", 'path: "${DATALAYER_TEST_UNSET_VAR}"')
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path)
    assert err.path == "profiles.local.sql.path"
    assert err.line == line_of(path, "DATALAYER_TEST_UNSET_VAR")
    assert "needs environment variables that are not set: DATALAYER_TEST_UNSET_VAR" in str(err)
    assert "(at profiles.local.sql.path)" in str(err)
    assert 'eval "$(scripts/services up)"' in str(err) and "${VAR:-value}" in str(err)


def test_every_unset_environment_variable_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATALAYER_TEST_A", "DATALAYER_TEST_B"):
        monkeypatch.delenv(name, raising=False)
    stores = STORES.replace("path: local.db", 'path: "${DATALAYER_TEST_A}/${DATALAYER_TEST_B}"')
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streaming
          store: events
          topic: "${DATALAYER_TEST_B}"
        """,
        stores=stores,
    )
    message = str(load_error(path))
    assert "DATALAYER_TEST_A (at profiles.local.sql.path)" in message
    assert "DATALAYER_TEST_B (at profiles.local.sql.path, patterns.alerts.topic)" in message


def test_unset_environment_variable_in_a_pattern(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATALAYER_TEST_TOPIC", raising=False)
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streaming
          store: events
          topic: "${DATALAYER_TEST_TOPIC}"
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.alerts.topic"
    assert err.line == line_of(path, "DATALAYER_TEST_TOPIC")
    assert "not set: DATALAYER_TEST_TOPIC (at patterns.alerts.topic)" in str(err)


def test_environment_default_used_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATALAYER_TEST_UNSET_VAR", raising=False)
    stores = STORES.replace("path: local.db", 'path: "${DATALAYER_TEST_UNSET_VAR:-fallback.db}"')
    path = registry(tmp_path, "", stores=stores)
    assert load(path, "local").stores["sql"].path == "fallback.db"  # type: ignore[attr-defined]


def test_environment_value_wins_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_TEST_SET_VAR", "from-env.db")
    stores = STORES.replace("path: local.db", 'path: "${DATALAYER_TEST_SET_VAR:-fallback.db}"')
    path = registry(tmp_path, "", stores=stores)
    assert load(path, "local").stores["sql"].path == "from-env.db"  # type: ignore[attr-defined]


def test_unset_variable_of_an_inactive_profile_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATALAYER_TEST_UNSET_VAR", raising=False)
    stores = STORES.replace(
        "patterns:\n",
        '  services:\n    sql: {type: postgres, url: "${DATALAYER_TEST_UNSET_VAR}"}\npatterns:\n',
    )
    path = registry(tmp_path, "", stores=stores)
    assert load(path, "local").profiles == ["local", "services"]


# 8. duplicate names ------------------------------------------------------------------------------


def test_pattern_defined_twice(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        windows:
          category: key-value
          store: cache
        windows:
          category: key-value
          store: cache
        """,
    )
    err = load_error(path)
    first, second = line_of(path, "windows:", 1), line_of(path, "windows:", 2)
    assert err.path == "patterns.windows"
    assert err.line == second
    assert f"duplicate name 'windows': already defined at line {first}" in str(err)


def test_store_defined_twice_in_a_profile(tmp_path: Path) -> None:
    stores = STORES.replace(
        "patterns:\n", "    cache: {type: embedded-kv, path: other.db}\npatterns:\n"
    )
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path)
    first, second = line_of(path, "cache:", 1), line_of(path, "cache:", 2)
    assert err.path == "profiles.local.cache"
    assert err.line == second
    assert f"duplicate name 'cache': already defined at line {first}" in str(err)


# 9. payload schemas that do not resolve ----------------------------------------------------------


def schema_error(tmp_path: Path, schema: str) -> ConfigError:
    path = registry(
        tmp_path,
        f"""\
        windows:
          category: key-value
          store: cache
          schema: {schema}
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.windows.schema"
    assert err.line == line_of(path, "schema:")
    assert "payload schema does not resolve" in str(err)
    return err


def test_schema_module_missing(tmp_path: Path) -> None:
    err = schema_error(tmp_path, "no_such_module_dl_xyz:Window")
    assert "cannot import module 'no_such_module_dl_xyz'" in str(err)


def test_schema_class_missing_suggests_the_close_one(tmp_path: Path) -> None:
    err = schema_error(tmp_path, "datalayer.examples.alerting:Alret")
    assert "module 'datalayer.examples.alerting' has no attribute 'Alret'" in str(err)
    assert "did you mean 'Alert'?" in str(err)


def test_schema_not_a_pydantic_model(tmp_path: Path) -> None:
    err = schema_error(tmp_path, "datalayer.examples.alerting:SEVERITY_RANK")
    assert "is not a pydantic model class" in str(err)


def test_schema_without_class_part(tmp_path: Path) -> None:
    err = schema_error(tmp_path, "datalayer.examples.alerting")
    assert "'package.module:ClassName'" in str(err)


def test_schema_module_next_to_the_registry(tmp_path: Path) -> None:
    (tmp_path / "dl_local_schemas_xyz.py").write_text(
        "from pydantic import BaseModel\n\n\nclass Window(BaseModel):\n    incident_id: str\n"
    )
    path = registry(
        tmp_path,
        "windows: {category: key-value, store: cache, schema: dl_local_schemas_xyz:Window}\n",
    )
    try:
        reg = load(path, "local")
        schema = reg.patterns["windows"].schema_cls
        assert schema is not None
        assert schema.__name__ == "Window"
    finally:
        sys.modules.pop("dl_local_schemas_xyz", None)


# 10. names that are not safe identifiers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "value", "entry"),
    [
        (
            "table",
            "services; DROP TABLE x",
            "category: transactional, store: sql, key: service_id, "
            "schema: 'datalayer.examples.alerting:Service'",
        ),
        ("topic", "bad topic", "category: streaming, store: events"),
        ("collection", "1bad-name", "category: document, store: docs, key: incident_id"),
    ],
)
def test_unsafe_identifier(tmp_path: Path, attribute: str, value: str, entry: str) -> None:
    path = registry(tmp_path, f"thing: {{{entry}, {attribute}: '{value}'}}\n")
    err = load_error(path)
    assert err.path == f"patterns.thing.{attribute}"
    assert err.line == line_of(path, value)
    assert f"'{value}' is not a safe" in str(err)
    assert "(allowed: ^" in str(err)


# 11. unknown key in a pattern --------------------------------------------------------------------


def test_unknown_pattern_key_suggests_and_lists_valid_keys(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streaming
          store: events
          topic: alerts
          partitons: 6
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.alerts.partitons"
    assert err.line == line_of(path, "partitons")
    assert "unknown key 'partitons'" in str(err)
    assert "did you mean 'partitions'?" in str(err)
    assert "valid keys: category, store, schema, description, resilience, topic, partitions" in str(
        err
    )
    assert "dead_letter" in str(err)


def test_unknown_store_key_lists_valid_keys(tmp_path: Path) -> None:
    stores = STORES.replace("path: local.db", "paht: local.db")
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path)
    assert err.path == "profiles.local.sql.paht"
    assert err.line == line_of(path, "paht")
    assert "did you mean 'path'?" in str(err)
    assert "valid keys: type, resilience, path, busy_timeout" in str(err)


# 12. unknown profile -----------------------------------------------------------------------------


def test_unknown_profile_lists_profiles(tmp_path: Path) -> None:
    stores = STORES.replace(
        "patterns:\n", "  staging:\n    cache: {type: embedded-kv}\npatterns:\n"
    )
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path, "stagin")
    assert err.path == "profiles"
    assert err.line == line_of(path, "profiles:")
    assert "profile 'stagin' is not defined" in str(err)
    assert "did you mean 'staging'?" in str(err)
    assert "profiles: local, staging" in str(err)


def test_profile_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAYER_PROFILE", "nowhere")
    path = registry(tmp_path, "")
    with pytest.raises(ConfigError, match="profile 'nowhere' is not defined; profiles: local"):
        load(path)


# 13. registry file not found ---------------------------------------------------------------------


def test_registry_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "datalayer.yaml"
    err = load_error(path)
    assert err.line is None
    assert err.path == ""
    assert "registry file not found" in str(err)
    assert "--config" in str(err)
    assert "DATALAYER_CONFIG" in str(err)
    assert str(err).startswith(f"{path}: ")


def test_registry_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = registry(tmp_path, "windows: {category: key-value, store: cache}\n")
    monkeypatch.setenv("DATALAYER_CONFIG", str(path))
    monkeypatch.chdir(tmp_path.parent)
    assert set(load().patterns) == {"windows"}


def test_registry_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "datalayer.yaml"
    path.write_bytes(b"version: 1\nprofiles: {local: {}}\npatterns: {}\n# caf\xe9\n")
    err = load_error(path)
    assert "UTF-8" in str(err) or "utf-8" in str(err)


# 14. passwords never appear in errors ------------------------------------------------------------


SECRET_URL = "postgresql://u:hunter2@127.0.0.1:5432/db"


def test_password_not_in_unknown_key_error(tmp_path: Path) -> None:
    stores = STORES.replace(
        "patterns:\n",
        f"  services:\n    sql: {{type: postgres, url: '{SECRET_URL}', pool: 3}}\npatterns:\n",
    )
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path, "services")
    assert err.path == "profiles.services.sql.pool"
    assert "unknown key 'pool'" in str(err)
    assert "pool_size" in str(err)
    assert "hunter2" not in str(err)
    assert all("hunter2" not in str(arg) for arg in err.args)


def test_password_not_in_error_that_echoes_the_value(tmp_path: Path) -> None:
    stores = STORES.replace("type: sqlite, path: local.db", f"type: '{SECRET_URL}'")
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path)
    assert err.path == "profiles.local.sql.type"
    assert "unknown store type 'postgresql://u:***@127.0.0.1:5432/db'" in str(err)
    assert "hunter2" not in str(err)


def test_password_from_environment_not_in_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_TEST_PG_URL", SECRET_URL)
    stores = STORES.replace(
        "patterns:\n",
        '  services:\n    sql: {type: postgres, url: "${DATALAYER_TEST_PG_URL}", pool_size: 0}\n'
        "patterns:\n",
    )
    path = registry(tmp_path, "", stores=stores)
    err = load_error(path, "services")
    assert err.path == "profiles.services.sql.pool_size"
    assert "hunter2" not in str(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SECRET_URL, "postgresql://u:***@127.0.0.1:5432/db"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "mongodb://admin:hunter2@a:27017,b:27017/db?tls=true",
            "mongodb://admin:***@a:27017,b:27017/db?tls=true",
        ),
        (
            "cannot reach postgresql+psycopg://u:hunter2@h/db or redis://:hunter2@r",
            "cannot reach postgresql+psycopg://u:***@h/db or redis://:***@r",
        ),
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("no url here: a:b@c", "no url here: a:b@c"),
        ("postgresql://u:pa ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@ss/w0rd@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("x 'redis://:a b c@r:1' y", "x 'redis://:***@r:1' y"),
        (
            "postgresql://h/db?user=u&password=hunter2&sslmode=disable",
            "postgresql://h/db?user=u&password=***&sslmode=disable",
        ),
        ("127.0.0.1:6379,password=hunter2,db=0", "127.0.0.1:6379,password=***,db=0"),
        ("host=h password='pa ss' dbname=d", "host=h password=*** dbname=d"),
        (
            "sasl.password=hunter2 rejected: authentication failed",
            "sasl.password=*** rejected: authentication failed",
        ),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# 15. key / index fields not in the schema --------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "attribute", "missing", "meant"),
    [
        (
            "{category: transactional, store: sql, table: t, key: service_idd, "
            "schema: 'datalayer.examples.alerting:Service'}",
            "key",
            "service_idd",
            "service_id",
        ),
        (
            "{category: transactional, store: sql, table: t, key: service_id, indexes: [acount_id], "
            "schema: 'datalayer.examples.alerting:Service'}",
            "indexes",
            "acount_id",
            "account_id",
        ),
        (
            "{category: document, store: docs, collection: c, key: incident_id, "
            "indexes: [service_id, -opend_at], schema: 'datalayer.examples.alerting:Incident'}",
            "indexes",
            "opend_at",
            "opened_at",
        ),
        (
            "{category: streaming, store: events, topic: t, key: service, "
            "schema: 'datalayer.examples.alerting:Alert'}",
            "key",
            "service",
            "service_id",
        ),
    ],
)
def test_field_not_in_schema(
    tmp_path: Path, pattern: str, attribute: str, missing: str, meant: str
) -> None:
    path = registry(tmp_path, f"thing: {pattern}\n")
    err = load_error(path)
    assert err.path == f"patterns.thing.{attribute}"
    assert err.line == line_of(path, "thing:")
    assert f"field '{missing}' is not in schema" in str(err)
    assert f"did you mean '{meant}'?" in str(err)
    assert "; fields: " in str(err)


# 16. two patterns on one target ------------------------------------------------------------------


def test_two_patterns_same_table(tmp_path: Path) -> None:
    entry = (
        "{category: transactional, store: sql, table: services, key: service_id, "
        "schema: 'datalayer.examples.alerting:Service'}"
    )
    path = registry(tmp_path, f"first: {entry}\nsecond: {entry}\n")
    err = load_error(path)
    assert err.path == "patterns.second.table"
    assert err.line == line_of(path, "second:")
    assert "table 'services' on store 'sql' is already used by pattern 'first'" in str(err)


def test_two_patterns_same_topic(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        first: {category: streaming, store: events, topic: alerts}
        second: {category: streaming, store: events, topic: alerts}
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.second.topic"
    assert "topic 'alerts' on store 'events' is already used by pattern 'first'" in str(err)


def test_dead_letter_clashing_with_another_topic(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        first: {category: streaming, store: events, topic: alerts, dead_letter: alerts.dlq}
        second: {category: streaming, store: events, topic: alerts.dlq}
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.second.topic"
    assert "topic 'alerts.dlq' on store 'events' is already used by pattern 'first'" in str(err)


def test_same_table_on_different_stores_is_fine(tmp_path: Path) -> None:
    stores = STORES.replace("patterns:\n", "    sql2: {type: sqlite, path: other.db}\npatterns:\n")
    entry = "category: transactional, table: t, key: service_id, schema: 'datalayer.examples.alerting:Service'"
    path = registry(
        tmp_path, f"a: {{store: sql, {entry}}}\nb: {{store: sql2, {entry}}}\n", stores=stores
    )
    assert set(load(path, "local").patterns) == {"a", "b"}


# 17. third-party store type through an entry point ------------------------------------------------


THIRD_PARTY_MODULE = """\
from pathlib import Path
from typing import ClassVar, Literal

from datalayer.stores.base import Store, StoreConfig


class ThirdPartyConfig(StoreConfig):
    serves: ClassVar[frozenset[str]] = frozenset({"key-value"})

    type: Literal["thirdparty"]
    endpoint: str = "memory://"

    def connect(self, name: str, base_dir: Path) -> Store:
        raise NotImplementedError("a test double")
"""


def test_third_party_store_type_from_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "thirdparty_store.py").write_text(THIRD_PARTY_MODULE)
    dist = site / "thirdparty_store-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-store\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[datalayer.stores]\nthirdparty = thirdparty_store:ThirdPartyConfig\n"
    )
    path = write(
        tmp_path,
        """\
        version: 1
        profiles:
          local:
            tp: {type: thirdparty, endpoint: "memory://x"}
        patterns:
          windows: {category: key-value, store: tp, ttl: 30s}
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    store_registry.store_types.cache_clear()
    try:
        assert (
            store_registry.store_types()["thirdparty"].path == "thirdparty_store:ThirdPartyConfig"
        )
        reg = load(path, "local")
        store = reg.stores["tp"]
        assert type(store).__name__ == "ThirdPartyConfig"
        assert store.type == "thirdparty"
        assert store.endpoint == "memory://x"  # type: ignore[attr-defined]
        assert reg.patterns["windows"].store == "tp"
    finally:
        store_registry.store_types.cache_clear()
        sys.modules.pop("thirdparty_store", None)


def test_third_party_store_type_unknown_without_entry_point(tmp_path: Path) -> None:
    store_registry.store_types.cache_clear()
    path = write(
        tmp_path,
        """\
        version: 1
        profiles:
          local:
            tp: {type: thirdparty}
        patterns: {}
        """,
    )
    err = load_error(path)
    assert err.path == "profiles.local.tp.type"
    assert "unknown store type 'thirdparty'" in str(err)


# 18. missing driver ------------------------------------------------------------------------------


def test_require_driver_names_the_extra() -> None:
    with pytest.raises(MissingDriver) as info:
        require_driver("no_such_module_xyz", "kafka", "kafka")
    assert "pip install 'datalayer[kafka]'" in str(info.value)
    assert "'no_such_module_xyz'" in str(info.value)
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, ImportError)


def test_require_driver_returns_the_module() -> None:
    assert require_driver("json", "none", "test") is sys.modules["json"]


def test_feast_project_and_fast_paths_settings() -> None:
    """The example names its Feast project; left unset, the repo's yaml names it."""
    from pydantic import ValidationError

    from datalayer.stores.feast.store import FeastConfig

    example = load(EXAMPLE, "local").stores["features"]
    assert isinstance(example, FeastConfig)
    assert example.project == "alerting" and example.fast_paths == "auto"
    assert example.environment()["DATALAYER_FEAST_PROJECT"] == "alerting"
    unset = FeastConfig(type="feast")
    assert unset.project is None and "DATALAYER_FEAST_PROJECT" not in unset.environment()
    assert FeastConfig(type="feast", fast_paths="off").fast_paths == "off"
    with pytest.raises(ValidationError):
        FeastConfig(type="feast", fast_paths="on")  # type: ignore[arg-type]


# the serve block ---------------------------------------------------------------------------------

SERVE_PATTERNS = """\
scores:
  category: feature
  store: features
  features: ["v:f"]
seen:
  category: key-value
  store: cache
"""
FEAST_STORES = STORES.replace(
    "    cache: {type: embedded-kv, path: kv.db}\n",
    "    cache: {type: embedded-kv, path: kv.db}\n    features: {type: feast, repo: repo}\n",
)


def served(tmp_path: Path, serve: str) -> Path:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "feature_store.yaml").write_text("project: p\n")
    path = registry(tmp_path, SERVE_PATTERNS, FEAST_STORES)
    path.write_text(path.read_text() + textwrap.dedent(serve))
    return path


@pytest.mark.parametrize(
    ("serve", "where", "says"),
    [
        (
            "serve: {tokens: {m: {env: 'not a name', patterns: [scores]}}}",
            "serve.tokens.m.env",
            "must name an environment variable",
        ),
        (
            "serve: {tokens: {m: {env: T, patterns: [seen]}}}",
            "serve.tokens.m.patterns.0",
            "'seen' is not a feature pattern; feature patterns: scores",
        ),
        (
            "serve: {tokens: {m: {env: T, patterns: [scores], scopes: [write]}}}",
            "serve.tokens.m.scopes.0",
            "'read' or 'push'",
        ),
        ("serve: {max_entitys: 5}", "serve.max_entitys", "did you mean 'max_entities'"),
        ("serve: {max_entities: 0}", "serve.max_entities", "greater than or equal to 1"),
    ],
)
def test_a_bad_serve_block_names_the_key(tmp_path: Path, serve: str, where: str, says: str) -> None:
    err = load_error(served(tmp_path, serve))
    assert err.path == where and says in str(err), str(err)


def test_tokens_come_from_the_environment_and_are_named_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = served(
        tmp_path,
        "serve: {tokens: {a: {env: TOK_A, patterns: ['*']}, b: {env: TOK_B, patterns: [scores]}}}",
    )
    config = load(path, "local").serve
    assert config.tokens["a"].allows("scores", "read")
    assert not config.tokens["b"].allows("scores", "push")
    monkeypatch.setenv("TOK_A", "short")
    with pytest.raises(ConfigError) as info:
        config.secrets(str(path))
    message = str(info.value)
    assert "TOK_A (token 'a') is shorter than 16" in message
    assert "TOK_B (token 'b') is not set" in message
    assert "short" not in message.replace("shorter", "")
    monkeypatch.setenv("TOK_A", "a" * 16)
    monkeypatch.setenv("TOK_B", "b" * 32)
    assert config.secrets(str(path)) == {"a": b"a" * 16, "b": b"b" * 32}


def test_an_unknown_key_of_an_optional_block_lists_the_blocks_keys(tmp_path: Path) -> None:
    path = registry(
        tmp_path,
        """\
        alerts:
          category: streaming
          store: events
          topic: alerts
        reads:
          category: key-value
          store: events
          rollout: {to: events, stage: shadow, stg: 1}
        """,
    )
    err = load_error(path)
    assert err.path == "patterns.reads.rollout.stg"
    assert "valid keys: to, stage, percent, compare_sample" in str(err)

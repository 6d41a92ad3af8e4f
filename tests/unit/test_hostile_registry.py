"""Registries written to break the loader or to reach what no pattern should: each is refused
at load with one ConfigError that names the file and the key, quickly and without a crash."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datalayer.cli import app
from datalayer.config import load
from datalayer.errors import ConfigError
from datalayer.testing.registry import write_registry

LOCAL = {
    "sql": {"type": "sqlite", "path": "sql.db", "migrations": None},
    "events": {"type": "embedded-log", "path": "events.db"},
    "docs": {"type": "embedded-documents", "path": "docs.db"},
    "cache": {"type": "embedded-kv", "path": "kv.db"},
}
SCHEMA = "datalayer.testing.contracts.schemas:Item"


def refused(file: Path, *, within: float = 5.0) -> ConfigError:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load(file, "local")
    assert time.monotonic() - started < within
    assert info.value.file == str(file)
    return info.value


def with_patterns(tmp_path: Path, patterns: dict[str, Any], **stores: Any) -> Path:
    return write_registry(tmp_path, {"local": {**LOCAL, **stores}}, patterns)


def table(name: str) -> dict[str, Any]:
    return {"category": "transactional", "store": "sql", "table": name, "key": "item_id",
            "schema": SCHEMA}  # fmt: skip


# -- YAML that would exhaust memory, time or the stack --------------------------------------


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["version: 1", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["profiles: {local: {}}", "patterns: {}"]
    file = tmp_path / "datalayer.yaml"
    file.write_text("\n".join(lines) + "\n")
    err = refused(file)
    assert "expands to more than 100,000 values" in err.message
    assert err.line is not None


@pytest.mark.parametrize("depth", [65, 5000])
def test_deep_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    file = tmp_path / "datalayer.yaml"
    file.write_text(f"version: 1\nprofiles: {'[' * depth}{']' * depth}\npatterns: {{}}\n")
    assert "nests deeper than 64 levels" in refused(file).message


# -- numbers past what a store or timedelta can hold ------------------------------------------


@pytest.mark.parametrize("ttl", ["1e300", "99999999999d", "inf", "nan", "-5s", 10**30])
def test_durations_are_range_checked(tmp_path: Path, ttl: Any) -> None:
    patterns = {"seen": {"category": "key-value", "store": "cache", "ttl": ttl}}
    err = refused(with_patterns(tmp_path, patterns))
    assert err.path == "patterns.seen.ttl"


@pytest.mark.parametrize(
    ("store", "setting"),
    [
        (
            {"type": "embedded-log", "path": "e.db", "max_message_bytes": 10**30},
            "max_message_bytes",
        ),
        ({"type": "embedded-log", "path": "e.db", "busy_timeout": 1e308}, "busy_timeout"),
        ({"type": "embedded-kv", "path": "k.db", "busy_timeout": -1}, "busy_timeout"),
    ],
)
def test_sizes_and_timeouts_are_range_checked(
    tmp_path: Path, store: dict[str, Any], setting: str
) -> None:
    err = refused(with_patterns(tmp_path, {}, extra=store))
    assert err.path == f"profiles.local.extra.{setting}"


# -- schema modules that fail ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise RuntimeError('boom')\n", "raised RuntimeError while importing at "),
        ("def (:\n", "has a syntax error at "),
        ("import no_such_module_anywhere\n", "cannot import module"),
    ],
)
def test_a_failing_schema_module_names_itself_and_its_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    module = f"hostile_schema_{tmp_path.name.replace('-', '_').replace('[', '_').strip('_]')}"
    (tmp_path / f"{module}.py").write_text(
        "from pydantic import BaseModel\n\n\nclass Item(BaseModel):\n    item_id: str\n\n\n"
        + source
    )
    pattern = {**table("items"), "schema": f"{module}:Item"}
    err = refused(with_patterns(tmp_path, {"items": pattern}))
    assert err.path == "patterns.items.schema"
    assert expected in err.message
    assert module in err.message
    if "while importing" in expected or "syntax error" in expected:
        assert f"{module}.py:" in err.message


# -- isolation: no pattern reaches another's data or the store's own ------------------------


def test_key_prefixes_that_overlap_are_refused(tmp_path: Path) -> None:
    patterns = {
        "a": {"category": "key-value", "store": "cache"},
        "b": {"category": "key-value", "store": "cache", "prefix": "a:b"},
    }
    err = refused(with_patterns(tmp_path, patterns))
    assert err.path == "patterns.b.prefix"
    assert "key prefix 'a:b:' overlaps key prefix 'a:' of pattern 'a'" in err.message


def test_key_prefixes_apart_or_on_other_stores_load(tmp_path: Path) -> None:
    patterns = {
        "a": {"category": "key-value", "store": "cache"},
        "ab": {"category": "key-value", "store": "cache"},
        "other": {"category": "key-value", "store": "cache2", "prefix": "a:b"},
    }
    file = with_patterns(tmp_path, patterns, cache2={"type": "embedded-kv", "path": "kv2.db"})
    assert set(load(file, "local").patterns) == {"a", "ab", "other"}


@pytest.mark.parametrize(
    ("first", "second", "attribute"),
    [
        (table("accounts"), table("Accounts"), "table"),
        (
            {"category": "document", "store": "docs", "collection": "notes", "key": "id"},
            {"category": "document", "store": "docs", "collection": "NOTES", "key": "id"},
            "collection",
        ),
        (
            {"category": "streaming", "store": "events", "topic": "a.b"},
            {"category": "streaming", "store": "events", "topic": "a_b"},
            "topic",
        ),
        (
            {"category": "streaming", "store": "events", "topic": "orders"},
            {"category": "streaming", "store": "events", "topic": "x", "dead_letter": "Orders"},
            "dead_letter",
        ),
    ],
)
def test_names_the_store_folds_together_are_refused(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], attribute: str
) -> None:
    err = refused(with_patterns(tmp_path, {"first": first, "second": second}))
    assert err.path == f"patterns.second.{attribute}"
    assert "already used by pattern 'first'" in err.message
    assert "(the store folds them)" in err.message


@pytest.mark.parametrize(
    ("pattern", "attribute"),
    [
        (table("pg_authid"), "table"),
        (table("PG_shadow"), "table"),
        (table("sqlite_master"), "table"),
        (table("information_schema"), "table"),
        (table("alembic_version"), "table"),
        (
            {"category": "document", "store": "docs", "collection": "system", "key": "id"},
            "collection",
        ),
        ({"category": "streaming", "store": "events", "topic": "__consumer_offsets"}, "topic"),
        (
            {"category": "streaming", "store": "events", "topic": "t", "dead_letter": "__x"},
            "dead_letter",
        ),
    ],
)
def test_system_objects_are_refused(
    tmp_path: Path, pattern: dict[str, Any], attribute: str
) -> None:
    err = refused(with_patterns(tmp_path, {"p": pattern}))
    assert err.path == f"patterns.p.{attribute}"
    assert "is reserved for" in err.message or "is not a safe topic name" in err.message


@pytest.mark.parametrize(
    ("pattern", "attribute"),
    [
        (table("items\n"), "table"),
        ({"category": "document", "store": "docs", "collection": "notes\n", "key": "id"},
         "collection"),
        ({"category": "document", "store": "docs", "collection": "n", "key": "id\n"}, "key"),
        ({"category": "document", "store": "docs", "collection": "n", "key": "id",
          "indexes": ["--a"]}, "indexes"),
        ({"category": "streaming", "store": "events", "topic": "alerts\n"}, "topic"),
        ({"category": "streaming", "store": "events", "topic": "t", "key": "k\n"}, "key"),
    ],
)  # fmt: skip
def test_a_trailing_newline_is_not_part_of_a_safe_name(
    tmp_path: Path, pattern: dict[str, Any], attribute: str
) -> None:
    """A regex's ``$`` matches before a final newline: names are checked whole."""
    err = refused(with_patterns(tmp_path, {"p": pattern}))
    assert err.path.startswith(f"patterns.p.{attribute}")


@pytest.mark.parametrize("setting", ["partitions", "max_attempts", "replication_factor"])
@pytest.mark.parametrize("value", [True, "2", 2.0])
def test_a_count_is_an_integer(tmp_path: Path, setting: str, value: Any) -> None:
    """YAML's ``true`` is no partition count (pydantic would read it as 1), nor is text."""
    pattern = {"category": "streaming", "store": "events", "topic": "t", setting: value}
    assert refused(with_patterns(tmp_path, {"p": pattern})).path == f"patterns.p.{setting}"


def test_mongodb_s_own_key_is_no_key_field(tmp_path: Path) -> None:
    pattern = {"category": "document", "store": "docs", "collection": "n", "key": "_id"}
    err = refused(with_patterns(tmp_path, {"p": pattern}))
    assert err.path == "patterns.p.key" and "MongoDB's own key" in err.message


def test_a_pattern_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    err = refused(with_patterns(tmp_path, {"cache\n": {"category": "key-value", "store": "cache"}}))
    assert "is not a safe name" in err.message


def test_text_that_is_not_unicode_is_refused_with_its_line(tmp_path: Path) -> None:
    """A lone surrogate escape (``"\\ud800"``) is valid YAML, but no store or encoder takes it;
    pydantic would raise UnicodeEncodeError reporting it."""
    file = tmp_path / "datalayer.yaml"
    file.write_text(
        'version: 1\nprofiles: {local: {}}\npatterns:\n  "a\\ud800": {category: key-value}\n'
    )
    err = refused(file)
    assert "not valid Unicode" in err.message
    assert err.line == 4


# -- what the CLI prints is what the registry says ---------------------------------------------


def test_describe_prints_names_as_written(tmp_path: Path) -> None:
    patterns = {"seen": {"category": "key-value", "store": "cache", "prefix": "x:b"}}
    file = with_patterns(tmp_path, patterns)
    result = CliRunner().invoke(app, ["describe", "--config", str(file)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "key prefix 'x:b:'" in result.output


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"no.such.thing": 1}, 'No such configuration property: "no.such.thing"'),
        ({"linger.ms": "soon"}, "Invalid value for configuration property"),
    ],
)
def test_kafka_options_librdkafka_refuses_are_refused_at_load(
    tmp_path: Path, options: dict[str, Any], expected: str
) -> None:
    kafka = {"type": "kafka", "bootstrap_servers": "127.0.0.1:1", "options": options}
    err = refused(with_patterns(tmp_path, {}, extra=kafka))
    assert err.path == "profiles.local.extra.options"
    assert expected in err.message


def test_kafka_options_librdkafka_takes_load(tmp_path: Path) -> None:
    options = {"acks": "all", "fetch.min.bytes": 10, "compression.type": "lz4"}
    kafka = {"type": "kafka", "bootstrap_servers": "127.0.0.1:1", "options": options}
    assert load(with_patterns(tmp_path, {}, extra=kafka), "local").stores["extra"]


def test_every_cli_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from datalayer.cli.render import reports_errors
    from datalayer.errors import DataLayerError

    def failing(error: Exception) -> None:
        raise error

    for error in (DataLayerError("first\nDETAIL:  second\n  third"), ValueError("a\nb")):
        with pytest.raises(typer.Exit):
            reports_errors(failing)(error)
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert "first DETAIL: second third" in lines[0] or "ValueError: a b" in lines[0]

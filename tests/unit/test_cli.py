"""Unit tests of the ``datalayer`` command, through Typer's CliRunner."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from datalayer.cli import app
from datalayer.testing.registry import write_registry
from tests.example_project import copy_example

EXAMPLE = Path(__file__).resolve().parents[2] / "datalayer.yaml"

SERVICE_ENV = {
    "DATALAYER_POSTGRES_URL": "postgresql://u:secret@127.0.0.1:5432/db",
    "DATALAYER_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "DATALAYER_MONGODB_URL": "mongodb://127.0.0.1:27017",
    "DATALAYER_REDIS_URL": "redis://127.0.0.1:6379/0",
}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATALAYER_* from the outer environment, a fixed console width, sys.path restored."""
    for name in ("DATALAYER_CONFIG", "DATALAYER_PROFILE", "DATALAYER_DEBUG", *SERVICE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example registry, so .datalayer/ is created under tmp_path."""
    return copy_example(tmp_path, migrations=True)


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def plain(text: str) -> str:
    """Text without colour codes, with every run of whitespace (wrapping too) as one space."""
    return " ".join(_ANSI.sub("", text).split())


def assert_error(result: Result, *fragments: str) -> None:
    """Exit status 1, an 'error:' message naming each fragment, and no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    message = plain(result.stderr)
    assert message.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in message


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


BROKEN_YAML = """\
version: 1
profiles:
  local:
    sql: {type: sqlite}
    bad: x: y
patterns: {}
"""


# help -------------------------------------------------------------------------------------------


def test_help() -> None:
    result = run("--help")
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    for command in ("validate", "describe", "apply", "doctor", "quickstart", "version"):
        assert command in out


def test_command_help_documents_the_defaults() -> None:
    result = run("validate", "--help")
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    assert "--config" in out
    assert "--profile" in out
    assert "DATALAYER_CONFIG" in out
    assert "DATALAYER_PROFILE" in out


# the example registry ---------------------------------------------------------------------------


def test_validate_example(example: Path) -> None:
    result = run("validate", "--config", str(example))
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    assert "is valid for profile local" in out
    assert "9 patterns on 5 stores" in out


def test_describe_example(example: Path) -> None:
    result = run("describe", "--config", str(example))
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    for name in (
        "accounts",
        "services",
        "alerts",
        "incidents",
        "grouping_window",
        "service_features",
    ):
        assert name in out
    assert "streaming" in out
    assert "6 partitions" in out
    # at 80 columns (no terminal): lower-value columns go, no value is cut
    assert "…" not in result.output and "service_features" in result.output
    # Which path serves the Feast store's reads: the local profile's SQLite goes through Feast.
    assert "store features: online reads and materialization: Feast's (online store 'sqlite'" in out
    assert "training sets: the fast join for views over parquet files, else Feast's" in out


def test_validate_and_describe_speak_json_for_scripts(example: Path) -> None:
    valid = run("validate", "--config", str(example), "--json")
    assert valid.exit_code == 0, valid.output
    assert json.loads(valid.stdout) == {
        "file": str(example),
        "profile": "local",
        "valid": True,
        "patterns": json.loads(valid.stdout)["patterns"],
        "stores": 5,
    }
    described = run("describe", "--config", str(example), "--json")
    assert described.exit_code == 0, described.output
    found = json.loads(described.stdout)
    by_name = {p["pattern"]: p for p in found["patterns"]}
    assert by_name["services"]["category"] == "transactional"
    assert by_name["service_features"]["store_type"] == "feast"
    assert "training sets" in found["serving"]["features"]


def test_verbose_shows_log_lines_and_quiet_is_the_default(example: Path) -> None:
    quiet = run("apply", "--config", str(example))
    loud = run("--verbose", "apply", "--config", str(example))
    assert quiet.exit_code == 0 and loud.exit_code == 0, loud.output
    assert "INFO " not in quiet.stderr
    assert "INFO " in loud.stderr


def test_apply_is_idempotent(example: Path) -> None:
    first = run("apply", "--config", str(example))
    assert first.exit_code == 0, first.output
    assert "created" in plain(first.output)
    assert (example.parent / ".datalayer").is_dir()

    second = run("apply", "--config", str(example))
    assert second.exit_code == 0, second.output
    out = plain(second.output)
    assert "table 'accounts' exists" in out
    assert "topic 'alerts' exists" in out
    assert "created" not in out


def test_doctor_example(example: Path) -> None:
    result = run("doctor", "--config", str(example))
    assert result.exit_code == 0, result.output
    lines = _ANSI.sub("", result.output).splitlines()
    # one line per store: sql, events, docs, cache and the feast store
    assert len([line for line in lines if line.startswith("✓ ") and ": ok, " in line]) == 5
    assert "unavailable" not in result.output
    as_json = run("doctor", "--config", str(example), "--json")
    assert as_json.exit_code == 0, as_json.output
    found = json.loads(as_json.stdout)
    assert [h["status"] for h in found] == ["ok"] * 5
    assert {h["store"] for h in found} == {"sql", "events", "docs", "cache", "features"}


def test_quickstart(example: Path) -> None:
    result = run("quickstart", "--config", str(example))
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    # at 80 columns (no terminal) no id is cut; it ends with where the data is and what next
    assert len(re.findall(r"inc-al-\d{5} ", result.output)) == 5 and "inc-al-0…" not in out
    assert f"sql (sqlite): {(example.parent / '.datalayer' / 'local.db').resolve()}" in out
    for step in (
        "serve:",
        "datalayer features online service_features --row",
        "train:",
        "register a pattern",
    ):
        assert step in out
    assert "incidents" in out
    assert "alerts.dlq" in out
    assert "Traceback" not in result.output


# errors -----------------------------------------------------------------------------------------


def error_case(case: str, tmp_path: Path) -> tuple[list[str], tuple[str, ...]]:
    """The arguments of one failing invocation and what its message must name."""
    if case == "broken-yaml":
        path = tmp_path / "datalayer.yaml"
        path.write_text(BROKEN_YAML)
        return ["validate", "--config", str(path)], (f"{path}:5:11", "invalid YAML")
    if case == "unknown-profile":
        path = tmp_path / "datalayer.yaml"
        shutil.copyfile(EXAMPLE, path)
        return (
            ["validate", "--config", str(path), "--profile", "nosuch"],
            ("profile 'nosuch' is not defined", "profiles: local, services"),
        )
    path = tmp_path / "missing" / "datalayer.yaml"
    return ["validate", "--config", str(path)], (str(path), "registry file not found")


ERROR_CASES = ["broken-yaml", "unknown-profile", "missing-file"]


@pytest.mark.parametrize("case", ERROR_CASES)
@pytest.mark.parametrize("command", ["validate", "describe", "apply", "doctor", "quickstart"])
def test_error_is_reported_without_traceback(tmp_path: Path, case: str, command: str) -> None:
    args, fragments = error_case(case, tmp_path)
    result = run(command, *args[1:])
    assert_error(result, *fragments)


@pytest.mark.parametrize("case", ERROR_CASES)
def test_error_message_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # 80 columns is what the console uses when stderr is not a terminal (CI logs, pipes).
    monkeypatch.setenv("COLUMNS", "80")
    args, _ = error_case(case, tmp_path)
    result = run(*args)
    assert result.exit_code == 1
    lines = _ANSI.sub("", result.stderr).strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")


def test_services_profile_without_env_names_the_variable(example: Path) -> None:
    result = run("validate", "--config", str(example), "--profile", "services")
    assert_error(result, "DATALAYER_POSTGRES_URL", "profiles.services.sql.url")


# defaults from the environment ------------------------------------------------------------------


def test_profile_default_from_environment(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATALAYER_PROFILE", "services")
    result = run("validate", "--config", str(example))
    assert result.exit_code == 0, result.output
    assert "is valid for profile services" in plain(result.output)


def test_profile_option_overrides_environment(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_PROFILE", "nosuch")
    result = run("validate", "--config", str(example), "--profile", "local")
    assert result.exit_code == 0, result.output
    assert "is valid for profile local" in plain(result.output)


def test_unknown_profile_from_environment(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAYER_PROFILE", "nosuch")
    result = run("validate", "--config", str(example))
    assert_error(result, "profile 'nosuch' is not defined", "profiles: local, services")


def test_config_default_from_environment(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DATALAYER_CONFIG", str(example))
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert str(example) in plain(result.output)


def test_config_default_is_datalayer_yaml_in_cwd(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(example.parent)
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert str(example) in plain(result.output)


def test_config_option_overrides_environment(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAYER_CONFIG", str(tmp_path / "nope.yaml"))
    result = run("validate", "--config", str(example))
    assert result.exit_code == 0, result.output


def test_missing_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("validate")
    assert_error(result, str(tmp_path / "datalayer.yaml"), "registry file not found")


def test_apply_creates_files_next_to_the_registry(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("DATALAYER_CONFIG", str(example))
    result = run("apply")
    assert result.exit_code == 0, result.output
    assert (example.parent / ".datalayer").is_dir()
    assert not (elsewhere / ".datalayer").exists()


# doctor on a store that does not answer ---------------------------------------------------------


def test_doctor_reports_unreachable_postgres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    path = write_registry(
        tmp_path,
        {
            "local": {"sql": {"type": "sqlite", "path": "local.db"}},
            "pg": {
                "sql": {"type": "postgres", "url": f"postgresql://u:hunter2@127.0.0.1:{port}/db"}
            },
        },
    )
    started = time.monotonic()
    result = run("doctor", "--config", str(path), "--profile", "pg", "--timeout", "10")
    elapsed = time.monotonic() - started

    assert elapsed < 20
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
    out = plain(result.output)
    if importlib.util.find_spec("psycopg") is not None:
        lines = _ANSI.sub("", result.output).splitlines()
        [line] = [line for line in lines if line.startswith("✗ sql")]
        assert f"127.0.0.1:{port}" in line and "unavailable: connection failed" in line
        assert "Connection refused" in line and "store 'sql'" not in line
        assert "error: unreachable: sql" in plain(result.stderr)
    else:
        assert "pip install 'datalayer[postgres]'" in out


def test_doctor_says_why_a_store_gave_no_answer_in_time(tmp_path: Path) -> None:
    """A driver that retries until the check gives up still says what it last met."""
    kafka, mongodb = free_port(), free_port()
    path = write_registry(
        tmp_path,
        {
            "local": {"sql": {"type": "sqlite", "path": "local.db"}},
            "dead": {
                "events": {"type": "kafka", "bootstrap_servers": f"127.0.0.1:{kafka}"},
                "docs": {"type": "mongodb", "url": f"mongodb://127.0.0.1:{mongodb}/db"},
            },
        },
    )
    result = run("doctor", "--config", str(path), "--profile", "dead", "--timeout", "2")
    assert result.exit_code == 1, result.output
    lines = _ANSI.sub("", result.output).splitlines()
    for store, port in (("events", kafka), ("docs", mongodb)):
        [line] = [line for line in lines if line.startswith(f"✗ {store}")]
        assert "no answer within 2s; the driver last said:" in line, line
        assert f"127.0.0.1:{port}" in line and "refused" in line, line


def test_version() -> None:
    result = run("version")
    assert result.exit_code == 0
    assert result.output.strip()

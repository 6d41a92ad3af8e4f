"""The base package alone (no extras) runs every category but features on embedded stores,
and a registry that needs a driver says which extra brings it."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ["numpy", "pandas", "feast", "confluent_kafka", "redis", "pymongo", "psycopg"]

SCHEMAS = """
from pydantic import BaseModel


class Account(BaseModel):
    account_id: str
    name: str
"""

EMBEDDED = {
    "sql": {"type": "sqlite", "path": "data/sql.db", "migrations": None},
    "events": {"type": "embedded-log", "path": "data/events.db"},
    "docs": {"type": "embedded-documents", "path": "data/docs.db"},
    "cache": {"type": "embedded-kv", "path": "data/kv.db"},
}
SERVERS = {
    "sql": {"type": "postgres", "url": "${PG_URL}"},
    "events": {"type": "kafka", "bootstrap_servers": "${KAFKA}"},
    "docs": {"type": "mongodb", "url": "${MONGO_URL}"},
    "cache": {"type": "redis", "url": "${REDIS_URL}"},
    "features": {"type": "feast", "repo": "feature_repo"},
}
PATTERNS = {
    "accounts": {
        "category": "transactional",
        "store": "sql",
        "table": "accounts",
        "key": "account_id",
        "schema": "schemas:Account",
    },
    "events": {"category": "streaming", "store": "events", "topic": "events", "partitions": 2},
    "notes": {"category": "document", "store": "docs", "collection": "notes", "key": "id"},
    "seen": {"category": "key-value", "store": "cache", "ttl": "5m"},
}

USE_EVERY_CATEGORY = """
import sys
import datalayer

with datalayer.open("datalayer.yaml", profile="local") as dl:
    dl.apply()
    dl.transactional("accounts").put({"account_id": "a1", "name": "Ada"})
    assert dl.transactional("accounts").get("a1") == {"account_id": "a1", "name": "Ada"}
    dl.stream("events").publish({"n": 1})
    got = [m.value for m in dl.stream("events").consume("g", max_messages=1, idle_timeout=5)]
    assert got == [{"n": 1}], got
    dl.documents("notes").put({"id": "n1", "text": "hello"})
    assert dl.documents("notes").find({"text": "hello"}) == [{"id": "n1", "text": "hello"}]
    dl.kv("seen").set("k", {"v": 1})
    assert dl.kv("seen").get("k") == {"v": 1}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in DRIVERS)
assert not loaded, loaded
print("every category ok")
"""


@pytest.fixture(scope="module")
def base_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the base package and nothing else."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=900,
    )
    return python


def project(
    folder: Path, profiles: dict[str, dict[str, object]], patterns: dict[str, object]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schemas.py").write_text(SCHEMAS)
    registry = {"version": 1, "profiles": profiles, "patterns": patterns}
    (folder / "datalayer.yaml").write_text(yaml.safe_dump(registry))
    return folder


def run(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, *args], cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_base_install_has_no_driver(base_python: Path, tmp_path: Path) -> None:
    found = run(
        base_python,
        tmp_path,
        "-c",
        f"import importlib.util as u; print([m for m in {DRIVERS!r} if u.find_spec(m)])",
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_every_category_runs_on_the_embedded_profile_without_extras(
    base_python: Path, tmp_path: Path
) -> None:
    folder = project(tmp_path / "app", {"local": EMBEDDED, "services": SERVERS}, PATTERNS)
    validated = run(base_python, folder, "-m", "datalayer.cli", "validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    used = run(base_python, folder, "-c", f"DRIVERS = {DRIVERS!r}\n{USE_EVERY_CATEGORY}")
    assert used.returncode == 0, used.stdout + used.stderr
    assert "every category ok" in used.stdout


def test_a_feature_pattern_names_the_extra_it_needs(base_python: Path, tmp_path: Path) -> None:
    patterns = {
        **PATTERNS,
        "scores": {"category": "feature", "store": "features", "features": ["v:f"]},
    }
    local = {**EMBEDDED, "features": {"type": "feast", "repo": "feature_repo"}}
    folder = project(tmp_path / "app", {"local": local}, patterns)
    result = run(base_python, folder, "-m", "datalayer.cli", "validate")
    assert result.returncode == 1, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "MissingDriver" in message
    assert "profiles.local.features.type" in message
    assert "pip install 'datalayer[feast]'" in message
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("store", ["sql", "events", "docs", "cache"])
def test_a_server_store_names_the_extra_it_needs(
    base_python: Path, tmp_path: Path, store: str
) -> None:
    extras = {"sql": "postgres", "events": "kafka", "docs": "mongodb", "cache": "redis"}
    values = {"PG_URL": "postgresql://u:p@127.0.0.1:1/d", "KAFKA": "127.0.0.1:1"}
    values |= {"MONGO_URL": "mongodb://127.0.0.1:1", "REDIS_URL": "redis://127.0.0.1:1"}
    stores = {**EMBEDDED, store: SERVERS[store]}
    folder = project(tmp_path / "app", {"local": stores}, PATTERNS)
    result = subprocess.run(
        [base_python, "-m", "datalayer.cli", "validate"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", **values},
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"pip install 'datalayer[{extras[store]}]'" in " ".join(result.stderr.split())


def test_loading_a_profile_imports_only_its_store_types(tmp_path: Path) -> None:
    folder = project(tmp_path / "app", {"local": EMBEDDED, "services": SERVERS}, PATTERNS)
    code = textwrap.dedent(
        """
        import sys
        from datalayer.config import load
        load("datalayer.yaml", "local")
        print(sorted(m for m in sys.modules if m.startswith("datalayer.stores.")))
        print(sorted(m for m in sys.modules if m.split(".")[0] in DRIVERS))
        """
    )
    result = run(Path(sys.executable), folder, "-c", f"DRIVERS = {DRIVERS!r}\n{code}")
    assert result.returncode == 0, result.stderr
    stores, drivers = result.stdout.splitlines()
    assert ast.literal_eval(stores) == [
        "datalayer.stores.base",
        "datalayer.stores.documents",
        "datalayer.stores.documents.embedded",
        "datalayer.stores.kv",
        "datalayer.stores.kv.embedded",
        "datalayer.stores.shared",
        "datalayer.stores.shared.paths",
        "datalayer.stores.shared.sqlite_file",
        "datalayer.stores.sql",
        "datalayer.stores.sql.engine",
        "datalayer.stores.sql.sqlite",
        "datalayer.stores.sql.types",
        "datalayer.stores.streaming",
        "datalayer.stores.streaming.embedded_log",
    ]
    assert ast.literal_eval(drivers) == []

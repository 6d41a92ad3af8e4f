"""datalayer.testing stays out of the library, and its file helpers write what loaders read."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import datalayer
from datalayer.testing.feast_repo import feature_store_yaml, write_feast_repo
from datalayer.testing.registry import write_registry

SRC = Path(datalayer.__file__).resolve().parent


def test_the_library_never_imports_the_testing_package() -> None:
    importers = []
    for path in SRC.rglob("*.py"):
        if "testing" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "datalayer.testing" or n.startswith("datalayer.testing.") for n in names):
                importers.append(str(path.relative_to(SRC)))
    assert importers == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, datalayer; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ).stdout
    assert "'pytest'" not in loaded and "'datalayer.testing'" not in loaded


def test_write_registry_writes_a_registry_that_opens(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path,
        {"local": {"cache": {"type": "embedded-kv", "path": tmp_path / "kv.db"}}},
        {"windows": {"category": "key-value", "store": "cache", "ttl": "1m"}},
    )
    assert yaml.safe_load(path.read_text())["version"] == 1
    with datalayer.open(path, "local") as dl:
        dl.apply()
        dl.kv("windows").set("k", 1)
        assert dl.kv("windows").get("k") == 1
    assert (tmp_path / "kv.db").exists()


@pytest.mark.parametrize("online", ["redis", "sqlite"])
@pytest.mark.parametrize("offline", ["duckdb", "postgres"])
def test_feature_store_yaml_is_yaml_once_its_variables_are_set(
    tmp_path: Path, online: str, offline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PROJECT", "REDIS", "PG_HOST", "PG_PORT", "PG_DATABASE", "PG_USER"):
        monkeypatch.setenv(f"DATALAYER_FEAST_{name}", "5432" if name == "PG_PORT" else "x")
    monkeypatch.setenv("DATALAYER_FEAST_PG_PASSWORD", "p: w#d")
    repo = write_feast_repo(
        tmp_path / "repo",
        {"p": feature_store_yaml(online, offline)},
        "# no views\n",
    )
    config = yaml.safe_load(os.path.expandvars((repo / "feature_store.p.yaml").read_text()))
    assert (repo / "data").is_dir() and (repo / "definitions.py").read_text() == "# no views\n"
    assert config["project"] == "x" and config["registry"] == "data/registry.db"
    assert config["online_store"]["type"] == online
    assert config["offline_store"]["type"] == offline
    assert config["entity_key_serialization_version"] == 3
    if offline == "postgres":
        assert config["offline_store"]["port"] == 5432
        assert config["offline_store"]["password"] == "p: w#d"


def test_the_adversarial_tally_counts_and_refuses_to_pass_vacuously() -> None:
    """Each attempt is a round trip, a clean refusal or a violation; a run with a violation,
    or one that never refused or never kept anything, fails; the figures are recorded."""
    from datalayer import PayloadValidationError
    from datalayer.testing.contracts.adversarial import Tally

    recorded: dict[str, object] = {}

    def record(name: str, value: object) -> None:
        recorded[name] = value

    def refuse() -> None:
        raise PayloadValidationError("p", [("f", "bad")])

    def crash() -> None:
        raise KeyError("raw")

    tally = Tally("key-value", "embedded-kv", "values", record)
    assert tally.attempt("kept", lambda: 1, check=lambda n: None, outcome="round trip")
    assert not tally.attempt("refused", refuse, outcome="refused")
    tally.finish()
    assert recorded["attempts"] == 2 and recorded["refused"] == 1 and recorded["round_trips"] == 1
    assert recorded["errors"] == "PayloadValidationError=1"

    broken = Tally("key-value", "embedded-kv", "values", record)
    broken.attempt("raw", crash)
    broken.attempt("accepted", lambda: None, outcome="refused")
    broken.attempt("wrote", refuse, unchanged=lambda: crash())
    assert len(broken.violations) == 3
    with pytest.raises(AssertionError, match="3 violations in 3 attempts"):
        broken.finish()
    only_kept = Tally("key-value", "embedded-kv", "values", record)
    only_kept.attempt("kept", lambda: 1)
    with pytest.raises(AssertionError, match="vacuous"):
        only_kept.finish()

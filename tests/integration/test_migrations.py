"""Alembic migrations from the registry: new revisions by autogenerate, upgrade and downgrade."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from datalayer.cli import app
from datalayer.testing.registry import write_registry
from tests.example_project import copy_example

SCHEMA_V1 = """
from datetime import datetime
from pydantic import BaseModel

class Team(BaseModel):
    team_id: str
    name: str
    created_at: datetime
"""

SCHEMA_V2 = (
    SCHEMA_V1
    + """
    region: str | None = None

class Oncall(BaseModel):
    team_id: str
    week: int
    engineer: str
"""
)


@pytest.fixture(params=["sqlite", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A registry with one transactional pattern, an empty migrations folder, and its DB URL."""
    if request.param == "sqlite":
        store = {"type": "sqlite", "path": "db.sqlite"}
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_database")
        store = {"type": "postgres", "url": url}
        url = url.replace("postgresql://", "postgresql+psycopg://")
    module = f"schemas_{request.param}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(SCHEMA_V1))
    write_registry(
        tmp_path,
        {"test": {"sql": store}},
        {
            "teams": {
                "category": "transactional",
                "store": "sql",
                "table": "teams",
                "key": "team_id",
                "schema": f"{module}:Team",
            },
        },
    )
    (tmp_path / "module_name").write_text(module)
    return tmp_path, url


def cli(project_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(
        app,
        [*args, "--config", str(project_dir / "datalayer.yaml"), "--profile", "test"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    return result.output


def columns(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return (
            [c["name"] for c in inspector.get_columns(table)] if inspector.has_table(table) else []
        )
    finally:
        engine.dispose()


def test_revisions_follow_the_registry_up_and_down(project: tuple[Path, str]) -> None:
    folder, url = project
    runner = CliRunner()
    assert runner.invoke(app, ["migrations", "init", str(folder / "migrations")]).exit_code == 0
    again = runner.invoke(app, ["migrations", "init", str(folder / "migrations")])
    assert again.exit_code == 0 and "already a migrations environment" in again.output

    out = cli(folder, "migrations", "new", "-m", "teams")
    assert "new revision" in out
    [first] = list((folder / "migrations" / "versions").glob("*_teams.py"))
    assert "op.create_table('teams'" in first.read_text()
    assert "nothing" not in cli(folder, "apply")
    assert columns(url, "teams") == ["team_id", "name", "created_at"]
    assert "no changes" in cli(folder, "migrations", "new", "-m", "nothing")

    # A new column on the schema and a new pattern: one new revision with both.
    module = (folder / "module_name").read_text()
    (folder / f"{module}.py").write_text(textwrap.dedent(SCHEMA_V2))
    registry = yaml.safe_load((folder / "datalayer.yaml").read_text())
    registry["patterns"]["oncall"] = {
        "category": "transactional",
        "store": "sql",
        "table": "oncall",
        "key": ["team_id", "week"],
        "schema": f"{module}:Oncall",
    }
    write_registry(folder, registry["profiles"], registry["patterns"])
    sys.modules.pop(module, None)
    importlib.invalidate_caches()

    # apply makes no table outside a revision: it says which command makes the revision
    pending = cli(folder, "apply")
    assert "table 'oncall' is in no revision yet" in pending
    assert 'datalayer migrations new -m "add oncall"' in pending
    assert columns(url, "oncall") == []

    cli(folder, "migrations", "new", "-m", "region and oncall")
    [second] = list((folder / "migrations" / "versions").glob("*_region_and_oncall.py"))
    text = second.read_text()
    assert (
        "add_column" in text and "sa.Column('region'" in text and "op.create_table('oncall'" in text
    )
    assert columns(url, "teams") == ["team_id", "name", "created_at"]
    applied = cli(folder, "apply")
    assert "table 'oncall' exists" in applied and "lacks columns" not in applied
    assert columns(url, "teams") == ["team_id", "name", "created_at", "region"]

    # a downgrade that drops data shows what it drops and, off a terminal, needs --yes
    refused = CliRunner().invoke(
        app,
        [
            "migrations",
            "downgrade",
            "-1",
            "--config",
            str(folder / "datalayer.yaml"),
            "--profile",
            "test",
        ],
        env={"COLUMNS": "250"},
    )
    assert refused.exit_code == 1, refused.output
    assert "drops table oncall (0 rows)" in refused.output
    assert "drops column teams.region" in refused.output and "--yes" in refused.output
    assert columns(url, "teams") == ["team_id", "name", "created_at", "region"]
    cli(folder, "migrations", "downgrade", "-1", "--yes")
    assert columns(url, "teams") == ["team_id", "name", "created_at"]
    assert columns(url, "oncall") == []
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO teams VALUES ('t1', 'core', '2026-01-01 00:00:00+00:00')")
        )
    engine.dispose()
    to_base = CliRunner().invoke(
        app,
        [
            "migrations",
            "downgrade",
            "base",
            "--config",
            str(folder / "datalayer.yaml"),
            "--profile",
            "test",
        ],
    )
    assert to_base.exit_code == 1 and "drops table teams (1 row)" in to_base.output
    cli(folder, "migrations", "downgrade", "base", "--yes")
    assert columns(url, "teams") == []
    cli(folder, "migrations", "upgrade")
    assert columns(url, "teams") == ["team_id", "name", "created_at", "region"]
    assert columns(url, "oncall") == ["team_id", "week", "engineer"]
    history = cli(folder, "migrations", "history")
    assert "teams" in history and "region and oncall" in history
    unknown = CliRunner().invoke(
        app,
        [
            "migrations",
            "downgrade",
            "';DROP TABLE teams",
            "--config",
            str(folder / "datalayer.yaml"),
            "--profile",
            "test",
        ],
    )
    assert unknown.exit_code == 1 and "internal error" not in unknown.output
    assert "Can't locate revision identified by ''" in unknown.output
    assert columns(url, "teams") == ["team_id", "name", "created_at", "region"]


def test_the_shipped_revisions_build_the_example_tables(
    postgres_database: str, tmp_path: Path
) -> None:
    copy_example(tmp_path, migrations=True)
    result = CliRunner().invoke(
        app,
        ["apply", "--config", str(tmp_path / "datalayer.yaml"), "--profile", "local"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "migrations at revision" in result.output and "in no revision yet" not in result.output
    registry = yaml.safe_load((tmp_path / "datalayer.yaml").read_text())
    registry["profiles"]["local"]["sql"] = {"type": "postgres", "url": postgres_database}
    write_registry(tmp_path, registry["profiles"], registry["patterns"])
    result = CliRunner().invoke(
        app,
        ["migrations", "upgrade", "--config", str(tmp_path / "datalayer.yaml")],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    url = postgres_database.replace("postgresql://", "postgresql+psycopg://")
    assert columns(url, "services") == [
        "service_id",
        "account_id",
        "name",
        "team",
        "tier",
        "created_at",
    ]
    assert "account_id" in columns(url, "accounts")


SCHEMA_DECIMALS = """
from decimal import Decimal
from pydantic import BaseModel, Field

class Team(BaseModel):
    team_id: str
    budget: Decimal = Field(max_digits=12, decimal_places=2)
    ratio: Decimal
"""


def test_a_revision_keeps_decimals_exact(project: tuple[Path, str]) -> None:
    """NUMERIC(p, s) as declared on PostgreSQL, ordered text on SQLite (its NUMERIC is a
    float); once applied, the registry and the database agree."""
    folder, url = project
    module = (folder / "module_name").read_text()
    (folder / f"{module}.py").write_text(textwrap.dedent(SCHEMA_DECIMALS))
    assert (
        CliRunner().invoke(app, ["migrations", "init", str(folder / "migrations")]).exit_code == 0
    )
    cli(folder, "migrations", "new", "-m", "decimals")
    [revision] = list((folder / "migrations" / "versions").glob("*_decimals.py"))
    text = revision.read_text()
    if url.startswith("sqlite"):
        assert "sa.Column('budget', sa.String()" in text and "Numeric" not in text
    else:
        assert "sa.Column('budget', sa.Numeric(12, 2)" in text
        assert "sa.Column('ratio', sa.Numeric()" in text
    cli(folder, "apply")
    assert "no changes" in cli(folder, "migrations", "new", "-m", "nothing")

"""Schema migrations for transactional stores, by Alembic.

The target metadata is the registry's transactional patterns on one store, so a new pattern or
a new schema field becomes a revision through ``datalayer migrations new``; ``datalayer apply``
upgrades to head. A project's ``migrations/`` folder (next to its registry) holds ``env.py``
(two lines that call :func:`run_env`), ``script.py.mako`` and ``versions/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from datalayer.errors import DataLayerError, StoreLabel
from datalayer.stores.sql.types import ExactDecimal, UTCDateTime

ENV_PY = '''"""Alembic environment: the target metadata comes from the registry (see datalayer.migrations)."""

from datalayer.migrations import run_env

run_env()
'''

SCRIPT_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


def init(folder: Path) -> bool:
    """Create an empty migrations environment (env.py, script.py.mako, versions/); False when
    ``folder`` already holds one (it is left as it is)."""
    if has_environment(folder):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "versions").mkdir(exist_ok=True)
    for name, text in (("env.py", ENV_PY), ("script.py.mako", SCRIPT_MAKO)):
        if not (folder / name).exists():
            (folder / name).write_text(text)
    return True


def has_environment(folder: Path | None) -> bool:
    return folder is not None and (folder / "env.py").is_file()


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write datalayer's column types as plain SQLAlchemy types, so revisions import nothing else."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, ExactDecimal):
        if autogen_context.dialect is not None and autogen_context.dialect.name == "sqlite":
            return "sa.String()"  # ordered_text: SQLite's NUMERIC would store a float
        return f"sa.Numeric({obj.precision}, {obj.scale})" if obj.precision else "sa.Numeric()"
    return False


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Never drop a table the registry does not know: it may belong to something else."""
    return not (type_ == "table" and reflected and compare_to is None)


def run_env() -> None:
    """The body of a project's ``migrations/env.py``: run with datalayer's connection and metadata."""
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise DataLayerError(
            "run migrations through 'datalayer apply' or 'datalayer migrations ...'"
        )
    context.configure(
        connection=connection,
        target_metadata=config.attributes["target_metadata"],
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


@dataclass(frozen=True)
class Downgrade:
    """What a downgrade does: from and to which revision, the revisions it undoes, the tables
    it drops with their row counts, the columns (``table.column``) it drops."""

    current: str | None
    target: str | None
    undone: list[str]
    tables: dict[str, int]
    columns: list[str]

    @property
    def drops_data(self) -> bool:
        return bool(self.tables or self.columns)


def _schema(connection: sa.Connection) -> dict[str, set[str]]:
    """Each table's columns, Alembic's own version table left out."""
    inspector = sa.inspect(connection)
    return {
        table: {column["name"] for column in inspector.get_columns(table)}
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


class Migrations:
    """Alembic operations on one SQL store, with its registry tables as target metadata."""

    def __init__(
        self, folder: Path, engine: sa.Engine, metadata: sa.MetaData, label: StoreLabel
    ) -> None:
        self.folder = folder
        self.engine = engine
        self.metadata = metadata
        self.label = label

    @contextmanager
    def _config(self) -> Iterator[Config]:
        """Alembic's config on a connection in a transaction, committed at the end."""
        with self._commands(), self.engine.begin() as connection:
            yield self._config_on(connection)

    @contextmanager
    def _commands(self) -> Iterator[None]:
        """Alembic's refusals (an unknown revision, say) as errors naming the store."""
        from alembic.util import CommandError

        try:
            yield
        except CommandError as exc:
            raise DataLayerError(f"{self.label}: {exc}", store=self.label.name) from exc

    def _config_on(self, connection: sa.Connection) -> Config:
        if not has_environment(self.folder):
            raise DataLayerError(
                f"{self.label}: no migrations environment at {self.folder} "
                "(create one with 'datalayer migrations init')",
                store=self.label.name,
            )
        # quiet: Alembic's own lines ("Generating <path> ... done") would repeat ours, unwrapped
        config = Config(cmd_opts=argparse.Namespace(quiet=True))
        config.set_main_option("script_location", str(self.folder))
        config.set_main_option(
            "file_template",
            "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s",
        )
        config.attributes["connection"] = connection
        config.attributes["target_metadata"] = self.metadata
        return config

    def preview_downgrade(self, revision: str) -> Downgrade:
        """What ``downgrade(revision)`` would do, found by doing it in a transaction that is
        rolled back: the revisions undone, the tables dropped (with their rows) and the
        columns dropped."""
        rows: dict[str, int] = {}
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                before = _schema(connection)
                current = MigrationContext.configure(connection).get_current_revision()
                with self._commands():
                    command.downgrade(self._config_on(connection), revision)
                after = _schema(connection)
                target = MigrationContext.configure(connection).get_current_revision()
            finally:
                transaction.rollback()
            dropped = sorted(set(before) - set(after))
            for table in dropped:
                quoted = connection.dialect.identifier_preparer.quote(table)
                rows[table] = int(
                    connection.execute(sa.text(f"SELECT count(*) FROM {quoted}")).scalar_one()
                )
        columns = sorted(
            f"{table}.{column}"
            for table in set(before) & set(after)
            for column in before[table] - after[table]
        )
        undone: list[str] = []
        for revision_id, _, message in self.history():
            if revision_id == target:
                break
            if undone or revision_id == current:
                undone.append(f"{revision_id} ({message.splitlines()[0] if message else ''})")
        return Downgrade(current, target, undone, {t: rows[t] for t in dropped}, columns)

    def current(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head(self) -> str | None:
        with self._config() as config:
            return ScriptDirectory.from_config(config).get_current_head()

    def upgrade(self, revision: str = "head") -> None:
        with self._config() as config:
            command.upgrade(config, revision)

    def downgrade(self, revision: str) -> None:
        with self._config() as config:
            command.downgrade(config, revision)

    def new(self, message: str) -> Path | None:
        """Autogenerate a revision from the difference between the registry and the database.

        The database is upgraded to head first, so the revision holds only what is new;
        returns None when there is nothing to record.
        """
        self.upgrade("head")
        with self._config() as config:
            from alembic.autogenerate import compare_metadata

            migration_context = MigrationContext.configure(
                config.attributes["connection"],
                opts={"compare_type": True, "include_object": _include_object},
            )
            if not compare_metadata(migration_context, self.metadata):
                return None
            script = command.revision(config, message=message, autogenerate=True)
        if script is None or isinstance(script, list):
            raise DataLayerError(
                f"{self.label}: alembic produced no single revision", store=self.label.name
            )
        return Path(script.path)

    def history(self) -> list[tuple[str, str | None, str]]:
        """(revision, down revision, message), newest first."""
        with self._config() as config:
            scripts = ScriptDirectory.from_config(config).walk_revisions()
            return [
                (
                    s.revision,
                    s.down_revision if isinstance(s.down_revision, str) else None,
                    s.doc or "",
                )
                for s in scripts
            ]

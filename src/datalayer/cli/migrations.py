"""``datalayer migrations ...``: Alembic revisions of transactional stores."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from datalayer.api import open as open_datalayer
from datalayer.cli.render import (
    ConfigOption,
    ProfileOption,
    console,
    reports_errors,
    shown_path,
)
from datalayer.errors import DataLayerError
from datalayer.migrations import Migrations

migrations_app = typer.Typer(
    help="Schema migrations of transactional stores (Alembic).", no_args_is_help=True
)
StoreOption = Annotated[
    str | None,
    typer.Option("--store", "-s", help="Transactional store (default: the profile's only one)."),
]


@migrations_app.command("new")
@reports_errors
def migrations_new(
    message: Annotated[str, typer.Option("--message", "-m", help="What the revision changes.")],
    config: ConfigOption = None,
    profile: ProfileOption = None,
    store: StoreOption = None,
) -> None:
    """Autogenerate a revision from the registry's patterns vs the database."""
    with open_datalayer(config, profile) as dl:
        path = dl.migrations(store).new(message)
    if path is None:
        console.print("[yellow]no changes[/]: the database already matches the registry")
    else:
        console.print(f"[green]✓[/] new revision {escape(shown_path(path))}", soft_wrap=True)


def _move(
    config: Path | None, profile: str | None, store: str | None, step: Callable[[Migrations], None]
) -> None:
    """Take one store's schema to another revision, then say where it is."""
    with open_datalayer(config, profile) as dl:
        migrations = dl.migrations(store)
        step(migrations)
        console.print(f"[green]✓[/] at revision {migrations.current() or 'base'}")


@migrations_app.command("upgrade")
@reports_errors
def migrations_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOption = None,
    profile: ProfileOption = None,
    store: StoreOption = None,
) -> None:
    """Upgrade the database to a revision (default: head)."""
    _move(config, profile, store, lambda migrations: migrations.upgrade(revision))


@migrations_app.command("downgrade", context_settings={"ignore_unknown_options": True})
@reports_errors
def migrations_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
    config: ConfigOption = None,
    profile: ProfileOption = None,
    store: StoreOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Drop what the downgrade drops without asking.")
    ] = False,
) -> None:
    """Downgrade the database to a revision: first shows what it drops and asks."""
    with open_datalayer(config, profile) as dl:
        migrations = dl.migrations(store)
        preview = migrations.preview_downgrade(revision)
        console.print(
            f"downgrade from {preview.current or 'base'} to {preview.target or 'base'} undoes: "
            f"{escape(', '.join(preview.undone)) or 'nothing'}"
        )
        for table, rows in preview.tables.items():
            console.print(f"  drops table {escape(table)} ({rows:,} row{'' if rows == 1 else 's'})")
        for column in preview.columns:
            console.print(f"  drops column {escape(column)}")
        if preview.drops_data and not yes:
            if not sys.stdin.isatty():
                raise DataLayerError(
                    "the downgrade drops the data above; run it again with --yes to go ahead"
                )
            if not typer.confirm("drop it?", default=False):
                console.print("nothing changed")
                raise typer.Exit(1)
        migrations.downgrade(revision)
        console.print(f"[green]✓[/] at revision {migrations.current() or 'base'}")


@migrations_app.command("current")
@reports_errors
def migrations_current(
    config: ConfigOption = None, profile: ProfileOption = None, store: StoreOption = None
) -> None:
    """Print the database's revision and the newest one."""
    with open_datalayer(config, profile) as dl:
        migrations = dl.migrations(store)
        console.print(
            f"current: {migrations.current() or 'base'}  head: {migrations.head() or 'base'}"
        )


@migrations_app.command("history")
@reports_errors
def migrations_history(
    config: ConfigOption = None, profile: ProfileOption = None, store: StoreOption = None
) -> None:
    """List the revisions, newest first."""
    with open_datalayer(config, profile) as dl:
        for revision, down, message in dl.migrations(store).history():
            console.print(f"{down or 'base'} -> {revision}  {escape(message)}")


@migrations_app.command("init")
@reports_errors
def migrations_init(
    folder: Annotated[Path, typer.Argument(help="Where to create it.")] = Path("migrations"),
) -> None:
    """Create an empty migrations environment (env.py, script.py.mako, versions/)."""
    from datalayer.migrations import init

    if init(folder):
        console.print(f"[green]✓[/] migrations environment in {escape(str(folder))}")
    else:
        console.print(
            f"[yellow]{escape(str(folder))} is already a migrations environment[/]: nothing changed"
        )

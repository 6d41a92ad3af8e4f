"""The core commands: validate, describe, apply, doctor, quickstart and version."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from datalayer import __version__
from datalayer.api import DataLayer
from datalayer.api import open as open_datalayer
from datalayer.cli.render import (
    ConfigOption,
    ProfileOption,
    console,
    err_console,
    progress_bar,
    reports_errors,
)
from datalayer.config import load

app = typer.Typer(
    help="datalayer: codified data-access patterns, each category of data on a store fit for it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
@reports_errors
def validate(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Check the registry: YAML, store types, categories, schemas, names and variables."""
    registry = load(config, profile)
    console.print(
        f"[green]✓[/] {escape(str(registry.file))} is valid for profile "
        f"[bold]{registry.profile}[/]: {len(registry.patterns)} patterns on "
        f"{len(registry.stores)} stores"
    )


@app.command()
@reports_errors
def describe(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Show each pattern: its category, its store and what it occupies there."""
    registry = load(config, profile)
    table = Table(title=f"patterns ({registry.profile} profile)")
    for column in ("pattern", "category", "store", "store type", "target", "schema"):
        table.add_column(column)
    for name, pattern in registry.patterns.items():
        store = registry.stores[pattern.store]
        table.add_row(
            name,
            pattern.category,
            pattern.store,
            f"{store.type} ({escape(store.target())})",
            escape(pattern.summary()),
            escape(pattern.schema_ or "-"),
        )
    console.print(table)
    for name, store in registry.stores.items():
        serving = store.serving(registry.base_dir)
        if serving is not None:
            console.print(f"store {escape(name)}: {escape(serving)}")


@app.command()
@reports_errors
def apply(config: ConfigOption = None, profile: ProfileOption = None) -> None:
    """Create the tables, topics, collections and indexes of the profile (idempotent)."""
    with open_datalayer(config, profile) as dl:
        results = apply_with_progress(dl)
        table = Table(title=f"apply ({dl.profile} profile)")
        table.add_column("store")
        table.add_column("type")
        table.add_column("result")
        for result in results:
            text = (
                escape("\n".join(result.actions))
                if result.actions
                else f"[yellow]skipped:[/] {escape(result.skipped)}"
            )
            table.add_row(escape(result.store), result.type, text)
        console.print(table)


def apply_with_progress(dl: DataLayer) -> list[Any]:
    """``dl.apply()`` with a bar that advances store by store (Feast's apply takes seconds)."""
    with progress_bar(transient=True) as progress:
        task = progress.add_task("applying", total=len(dl.registry.stores))
        seen: list[str] = []

        def on_store(name: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(name)
            progress.update(task, description=f"applying store '{name}'")

        results = dl.apply(on_store=on_store)
        progress.update(task, completed=len(dl.registry.stores))
    return results


@app.command()
@reports_errors
def doctor(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each store.")] = 5.0,
) -> None:
    """Reach every store of the profile and report its round-trip latency."""
    with open_datalayer(config, profile) as dl, console.status("checking stores..."):
        health = dl.doctor(timeout=timeout)
    colours = {"ok": "green"}
    table = Table(title=f"doctor ({dl.profile} profile)")
    for column in ("store", "type", "target", "status", "latency", "circuit", "detail"):
        table.add_column(column)
    for item in health:
        colour = colours.get(item.status, "red")
        latency = f"{item.latency_ms:.2f} ms" if item.latency_ms is not None else "-"
        table.add_row(
            item.store,
            item.type,
            escape(item.target),
            f"[{colour}]{item.status}[/]",
            latency,
            item.circuit,
            escape(item.detail),
        )
    console.print(table)
    problems = [
        f"{what}: {', '.join(found)}"
        for what, status in (("unreachable", "unavailable"), ("failing", "error"))
        if (found := [escape(h.store) for h in health if h.status == status])
    ]
    if problems:
        err_console.print(f"[bold red]error:[/] {'; '.join(problems)}")
        raise typer.Exit(1)


@app.command()
@reports_errors
def quickstart(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    alerts: Annotated[int, typer.Option(help="How many sample alerts to publish.", min=10)] = 240,
    seed: Annotated[int, typer.Option(help="Seed of the sample data.")] = 7,
) -> None:
    """The main job: apply the registry, load the example data, group alerts into incidents."""
    from datalayer.examples import quickstart as job
    from datalayer.examples.report import print_summary

    with open_datalayer(config, profile) as dl:
        apply_with_progress(dl)
        with progress_bar(28) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = progress.add_task(job.STEPS[step], total=total)
                progress.update(tasks[step], completed=done)

            summary = job.run(dl, alert_count=alerts, seed=seed, on_progress=on_progress)
        print_summary(console, dl, summary)


@app.command()
def version() -> None:
    """Print the datalayer version."""
    console.print(__version__)

"""The core commands: validate, describe, apply, doctor, quickstart and version."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from datalayer import __version__
from datalayer.api import DataLayer, StoreHealth
from datalayer.api import open as open_datalayer
from datalayer.cli.render import (
    ConfigOption,
    JsonOption,
    ProfileOption,
    configure_logging,
    console,
    err_console,
    fitted_table,
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


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show the log lines of datalayer and of the store drivers."
        ),
    ] = False,
) -> None:
    """Logging: warnings only, unless --verbose (then datalayer's, Feast's, Alembic's and
    the drivers' own lines, at INFO)."""
    configure_logging(verbose)


@app.command()
@reports_errors
def validate(
    config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False
) -> None:
    """Check the registry: YAML, store types, categories, schemas, names and variables."""
    registry = load(config, profile)
    if as_json:
        print(
            json.dumps(
                {
                    "file": str(registry.file),
                    "profile": registry.profile,
                    "valid": True,
                    "patterns": len(registry.patterns),
                    "stores": len(registry.stores),
                }
            )
        )
        return
    console.print(
        f"[green]✓[/] {escape(str(registry.file))} is valid for profile "
        f"[bold]{registry.profile}[/]: {len(registry.patterns)} patterns on "
        f"{len(registry.stores)} stores"
    )


@app.command()
@reports_errors
def describe(
    config: ConfigOption = None, profile: ProfileOption = None, as_json: JsonOption = False
) -> None:
    """Show each pattern: its category, its store and what it occupies there."""
    registry = load(config, profile)
    if as_json:
        patterns = [
            {
                "pattern": name,
                "category": pattern.category,
                "store": pattern.store,
                "store_type": registry.stores[pattern.store].type,
                "store_target": registry.stores[pattern.store].target(),
                "target": pattern.summary(),
                "schema": pattern.schema_,
            }
            for name, pattern in registry.patterns.items()
        ]
        said = {name: store.serving(registry.base_dir) for name, store in registry.stores.items()}
        paths = {name: text for name, text in said.items() if text is not None}
        print(json.dumps({"profile": registry.profile, "patterns": patterns, "serving": paths}))
        return
    rows = [
        {
            "pattern": name,
            "category": pattern.category,
            "store": pattern.store,
            "store type": f"{registry.stores[pattern.store].type} "
            f"({registry.stores[pattern.store].target()})",
            "target": pattern.summary(),
            "schema": pattern.schema_ or "-",
        }
        for name, pattern in registry.patterns.items()
    ]
    console.print(
        fitted_table(
            f"patterns ({registry.profile} profile)",
            rows,
            keep=["pattern", "category", "store"],
            drop_first=["schema", "store type"],
            width=console.width,
        )
    )
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
        rows = [
            {
                "store": result.store,
                "type": result.type,
                "result": "\n".join(result.actions) or f"skipped: {result.skipped}",
            }
            for result in results
        ]
        table = fitted_table(
            f"apply ({dl.profile} profile)",
            rows,
            keep=["store"],
            drop_first=["type"],
            width=console.width,
        )
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
    as_json: JsonOption = False,
) -> None:
    """Reach every store of the profile: one line per store, its latency or why it failed."""
    with open_datalayer(config, profile) as dl, console.status("checking stores..."):
        health = dl.doctor(timeout=timeout)
    if as_json:
        print(json.dumps([dataclasses.asdict(item) for item in health], indent=2))
    else:
        console.print(f"doctor ({escape(dl.profile)} profile)")
        width = max((len(item.store) for item in health), default=0)
        for item in health:
            if item.status == "ok":
                mark, said = "[green]✓[/]", f"ok, {item.latency_ms:.2f} ms"
            else:
                mark, said = "[red]✗[/]", f"[red]{item.status}[/]: {escape(_reason(item))}"
            circuit = f" (circuit {item.circuit})" if item.circuit != "closed" else ""
            console.print(
                f"{mark} {escape(item.store.ljust(width))}  {escape(item.type)} at "
                f"{escape(item.target)}: {said}{circuit}",
                soft_wrap=True,
            )
    problems = [
        f"{what}: {', '.join(found)}"
        for what, status in (("unreachable", "unavailable"), ("failing", "error"))
        if (found := [escape(h.store) for h in health if h.status == status])
    ]
    if problems:
        err_console.print(f"[bold red]error:[/] {'; '.join(problems)}")
        raise typer.Exit(1)


def _can_train() -> bool:
    """Whether the quickstart's model loop can run (its extra is installed)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib"))


def _reason(item: StoreHealth) -> str:
    """A failed check's detail without the store's own label (the line names it already), on
    one line."""
    detail = " ".join(item.detail.split())
    marker = " is unavailable: " if " is unavailable: " in detail else "): "
    head, found, rest = detail.partition(marker)
    if found and head.startswith(f"store '{item.store}' ("):
        detail = rest
    return detail or item.status


@app.command()
@reports_errors
def quickstart(
    config: ConfigOption = None,
    profile: ProfileOption = None,
    alerts: Annotated[int, typer.Option(help="How many sample alerts to publish.", min=10)] = 240,
    seed: Annotated[int, typer.Option(help="Seed of the sample data.")] = 7,
) -> None:
    """The main job: apply the registry, load the example data, group alerts into incidents."""
    from datalayer.cli.report import evaluate_model, print_summary
    from datalayer.examples import quickstart as job

    with open_datalayer(config, profile) as dl:
        apply_with_progress(dl)
        model = _can_train()
        with progress_bar(28) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = progress.add_task(job.STEPS[step], total=total)
                progress.update(tasks[step], completed=done)

            summary = job.run(
                dl, alert_count=alerts, seed=seed, model=model, on_progress=on_progress
            )
        evaluated = evaluate_model(dl, summary.model) if summary.model is not None else None
        print_summary(console, dl, summary, evaluated)
        if not model:
            console.print(
                "the example model was not trained: pip install 'datalayer[quickstart]' "
                "(scikit-learn and matplotlib) for the train, serve, label, evaluate loop"
            )


@app.command()
def version() -> None:
    """Print the datalayer version."""
    console.print(__version__)

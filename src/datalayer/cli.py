"""The ``datalayer`` command: validate, describe, apply, doctor and the quickstart job.

Every error is printed as one message (no traceback) and the exit status is non-zero;
``DATALAYER_DEBUG=1`` shows the traceback of an unexpected internal error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datalayer import __version__
from datalayer.api import DataLayer
from datalayer.api import open as open_datalayer
from datalayer.config import load, pattern_targets
from datalayer.errors import DataLayerError, redact

app = typer.Typer(
    help="datalayer: codified data-access patterns, each category of data on a store fit for it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Registry file (default: $DATALAYER_CONFIG, else ./datalayer.yaml).",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="Profile to use (default: $DATALAYER_PROFILE, else local).",
        show_default=False,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Print any error as one clear line on stderr and exit non-zero, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DataLayerError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("DATALAYER_DEBUG"):
                raise
            err_console.print(
                f"[bold red]internal error:[/] {escape(redact(f'{type(exc).__name__}: {exc}'))} "
                "(set DATALAYER_DEBUG=1 for the traceback)",
                highlight=False,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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
        targets = ", ".join(label for _, label in pattern_targets(pattern))
        if pattern.category == "streaming":
            targets += f", {getattr(pattern, 'partitions', 1)} partitions"
        if pattern.category == "feature":
            targets = f"feature service '{getattr(pattern, 'feature_service', '')}'"
        table.add_row(
            name,
            pattern.category,
            pattern.store,
            f"{store.type} ({escape(store.target())})",
            escape(targets),
            pattern.schema_ or "-",
        )
    console.print(table)


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
                "\n".join(result.actions)
                if result.actions
                else f"[yellow]skipped:[/] {escape(result.skipped)}"
            )
            table.add_row(result.store, result.type, text)
        console.print(table)


def apply_with_progress(dl: DataLayer) -> list[Any]:
    """``dl.apply()`` with a bar that advances store by store (Feast's apply takes seconds)."""
    with Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
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
    for column in ("store", "type", "target", "status", "latency", "detail"):
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
            escape(item.detail),
        )
    console.print(table)
    failed = [h.store for h in health if h.status in ("unavailable", "error")]
    if failed:
        err_console.print(f"[bold red]error:[/] unreachable: {', '.join(failed)}")
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

    with open_datalayer(config, profile) as dl:
        apply_with_progress(dl)
        with Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            tasks: dict[str, Any] = {}
            labels = {
                "publish": "publishing alerts",
                "group": "grouping into incidents",
                "materialize": "materializing feature views",
            }

            def on_progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = progress.add_task(labels[step], total=total)
                progress.update(tasks[step], completed=done)

            summary = job.run(dl, alert_count=alerts, seed=seed, on_progress=on_progress)
        print_summary(dl, summary)


def print_summary(dl: DataLayer, summary: Any) -> None:
    registry = dl.registry
    store_label = {name: cfg.type for name, cfg in registry.stores.items()}
    table = Table(title=f"quickstart: what went where ({dl.profile} profile)")
    for column in ("pattern", "category", "store", "result"):
        table.add_column(column)
    rows = [
        ("accounts", f"{summary.accounts} rows upserted"),
        ("services", f"{summary.services} rows upserted"),
        (
            "alerts",
            f"{summary.published} published, {summary.handled} grouped, "
            f"{summary.dead_lettered} to {getattr(registry.patterns['alerts'], 'dead_letter', '')} "
            f"({summary.retried} retries)",
        ),
        ("incidents", f"{summary.incidents} incidents over {len(summary.per_service)} services"),
        ("grouping_window", f"{summary.windows} open windows"),
    ]
    for name, result in rows:
        pattern = registry.patterns[name]
        table.add_row(name, pattern.category, store_label[pattern.store], result)
    console.print(table)
    largest = Table(title="largest incidents")
    for column in ("incident", "service", "fingerprint", "severity", "alerts", "from", "to"):
        largest.add_column(column, no_wrap=True)
    for inc in summary.largest:
        largest.add_row(
            inc["incident_id"],
            inc["service_id"],
            inc["fingerprint"],
            inc["severity"],
            str(inc["alert_count"]),
            _clock(inc["opened_at"]),
            _clock(inc["updated_at"]),
        )
    console.print(largest)
    if summary.online_features:
        alert = summary.incoming_alert
        served = Table(
            title=f"online features for incoming alert {alert['alert_id']} "
            f"({alert['service_id']}, {alert['severity']}), as a model service reads them"
        )
        served.add_column("feature")
        served.add_column("value")
        for name, value in summary.online_features.items():
            served.add_row(name, "-" if value is None else str(value))
        console.print(served)
        frame = summary.training_set
        filled = (
            frame.drop(columns=["service_id", "account_id", "event_timestamp"])
            .notna()
            .mean()
            .mean()
        )
        console.print(
            f"[bold]training set[/] (point-in-time, {summary.feature_views} feature views): "
            f"{len(frame)} rows x {frame.shape[1] - 3} features, {filled:.0%} of values present"
        )
        sample = Table(title="training set, first rows (a few columns)")
        shown = ["service_id", "event_timestamp", *[c for c in frame.columns if "__" in c][:4]]
        for column in shown:
            sample.add_column(column.split("__")[-1])
        for _, record in frame.head(6).iterrows():
            sample.add_row(*(_cell(record[c]) for c in shown))
        console.print(sample)


def _cell(value: Any) -> str:
    """A training-set value for a table: timestamps to the minute, missing as '-'."""
    if hasattr(value, "strftime"):
        return str(value.strftime("%m-%d %H:%M"))
    return "-" if value is None or str(value) in ("<NA>", "nan", "NaT") else str(value)


def _clock(iso: str) -> str:
    """``2026-01-05T09:12:00Z`` as ``01-05 09:12``."""
    return f"{iso[5:10]} {iso[11:16]}"


migrations_app = typer.Typer(
    help="Schema migrations of transactional stores (Alembic).", no_args_is_help=True
)
app.add_typer(migrations_app, name="migrations")
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
        console.print(f"[green]✓[/] new revision {escape(str(path))}")


@migrations_app.command("upgrade")
@reports_errors
def migrations_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    config: ConfigOption = None,
    profile: ProfileOption = None,
    store: StoreOption = None,
) -> None:
    """Upgrade the database to a revision (default: head)."""
    with open_datalayer(config, profile) as dl:
        migrations = dl.migrations(store)
        migrations.upgrade(revision)
        console.print(f"[green]✓[/] at revision {migrations.current() or 'base'}")


@migrations_app.command("downgrade", context_settings={"ignore_unknown_options": True})
@reports_errors
def migrations_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
    config: ConfigOption = None,
    profile: ProfileOption = None,
    store: StoreOption = None,
) -> None:
    """Downgrade the database to a revision."""
    with open_datalayer(config, profile) as dl:
        migrations = dl.migrations(store)
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

    init(folder)
    console.print(f"[green]✓[/] migrations environment in {escape(str(folder))}")


features_app = typer.Typer(
    help="Features through Feast: materialize, online, historical.", no_args_is_help=True
)
app.add_typer(features_app, name="features")
PatternArgument = Annotated[
    str | None,
    typer.Argument(help="Feature pattern (default: the registry's only one).", show_default=False),
]


def _feature_pattern(dl: DataLayer, name: str | None) -> str:
    if name is not None:
        return name
    names = [n for n, p in dl.patterns.items() if p.category == "feature"]
    if len(names) != 1:
        raise DataLayerError(
            f"name the feature pattern; feature patterns: {', '.join(names) or 'none'}"
        )
    return names[0]


def _instant(text: str | None, default: datetime) -> datetime:
    if text is None:
        return default
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise DataLayerError(
            f"'{text}' is not an ISO date or time (e.g. 2026-11-20T12:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@features_app.command("materialize")
@reports_errors
def features_materialize(
    pattern: PatternArgument = None,
    start: Annotated[str | None, typer.Option(help="ISO start (default: end - 7 days).")] = None,
    end: Annotated[str | None, typer.Option(help="ISO end (default: now).")] = None,
    incremental: Annotated[bool, typer.Option(help="From each view's last run to --end.")] = False,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Copy feature values from the offline store to the online store."""
    with open_datalayer(config, profile) as dl:
        view = dl.features(_feature_pattern(dl, pattern))
        until = _instant(end, datetime.now(UTC))
        with Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("materializing", total=None)

            def on_view(name: str, done: int, total: int) -> None:
                progress.update(
                    task, total=total, completed=done, description=f"materializing {name}".strip()
                )

            if incremental:
                view.materialize_incremental(until, on_view=on_view)
            else:
                view.materialize(_instant(start, until - timedelta(days=7)), until, on_view=on_view)
    console.print(f"[green]✓[/] materialized up to {until.isoformat()}")


@features_app.command("online")
@reports_errors
def features_online(
    row: Annotated[
        list[str], typer.Option("--row", help="An entity row: key=value[,key=value]; repeatable.")
    ],
    pattern: PatternArgument = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Read online features for entity rows, as a model service does (TTL applied)."""
    rows = []
    for text in row:
        pairs = [part.split("=", 1) for part in text.split(",") if part]
        if any(len(p) != 2 for p in pairs):
            raise DataLayerError(f"--row '{text}' is not key=value[,key=value]")
        rows.append({k.strip(): v.strip() for k, v in pairs})
    with open_datalayer(config, profile) as dl:
        served = dl.features(_feature_pattern(dl, pattern)).online(rows)
    table = Table(title="online features")
    table.add_column("feature")
    for i in range(len(rows)):
        table.add_column(f"row {i + 1}")
    for name, values in served.items():
        table.add_row(name, *("-" if v is None else str(v) for v in values))
    console.print(table)


@features_app.command("historical")
@reports_errors
def features_historical(
    entities: Annotated[
        Path, typer.Option(help="CSV or parquet of entity rows with an event_timestamp column.")
    ],
    output: Annotated[
        Path | None, typer.Option(help="Write the training set here (.csv or .parquet).")
    ] = None,
    pattern: PatternArgument = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Build a point-in-time-correct training set for entity rows."""
    import pandas as pd

    if not entities.is_file():
        raise DataLayerError(f"no such file: {entities}")
    frame = pd.read_parquet(entities) if entities.suffix == ".parquet" else pd.read_csv(entities)
    with open_datalayer(config, profile) as dl, console.status("building the training set..."):
        result = dl.features(_feature_pattern(dl, pattern)).historical(frame)
    if output is not None:
        if output.suffix == ".parquet":
            result.to_parquet(output, index=False)
        else:
            result.to_csv(output, index=False)
        console.print(
            f"[green]✓[/] {len(result)} rows x {result.shape[1]} columns written to {escape(str(output))}"
        )
    else:
        console.print(result.to_string(max_rows=20, max_cols=10))


@app.command()
def version() -> None:
    """Print the datalayer version."""
    console.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

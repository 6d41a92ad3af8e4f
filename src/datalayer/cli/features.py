"""``datalayer features ...``: materialize, online reads and training sets through Feast."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from datalayer.api import DataLayer
from datalayer.api import open as open_datalayer
from datalayer.categories.feature import FeatureView
from datalayer.categories.feature_log import FeatureLogConfig, LogSinks
from datalayer.cli.render import (
    ConfigOption,
    JsonOption,
    ProfileOption,
    console,
    progress_bar,
    reports_errors,
    shown_path,
)
from datalayer.errors import DataLayerError

features_app = typer.Typer(
    help="Features through Feast: materialize, online, historical, land-logs.",
    no_args_is_help=True,
)
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


def logged(view: FeatureView) -> FeatureLogConfig:
    """The pattern's log block; an error saying how to add one when it has none."""
    if view.pattern.log is None:
        raise DataLayerError(
            f"pattern '{view.pattern.name}' has no log: add 'log: {{to: <streaming pattern>}}' "
            "to it"
        )
    return view.pattern.log


def log_sinks(dl: DataLayer, view: FeatureView, output: Path | None) -> LogSinks:
    """Where a pattern's log lands (``FeatureView.log_sinks``), folders named for people."""
    return view.log_sinks(dl.registry.base_dir, output, shown_path)


def instant(text: str | None, option: str) -> datetime | None:
    """An option's ISO date or time (UTC when it names no zone); None when not given."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise DataLayerError(
            f"{option}: '{text}' is not an ISO date or time (e.g. 2026-11-20T12:00:00Z)"
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
        until = instant(end, "--end") or datetime.now(UTC)
        with progress_bar(40) as progress:
            task = progress.add_task("materializing", total=None)

            def on_view(name: str, done: int, total: int) -> None:
                progress.update(
                    task, total=total, completed=done, description=f"materializing {name}".strip()
                )

            if incremental:
                view.materialize_incremental(until, on_view=on_view)
            else:
                since = instant(start, "--start") or until - timedelta(days=7)
                view.materialize(since, until, on_view=on_view)
    console.print(f"[green]✓[/] materialized up to {until.isoformat()}")


def _jsonable(value: Any) -> Any:
    """A feature value JSON has no type for: bytes as base64, times as ISO 8601, the rest as
    text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set):
        return sorted(value, key=str)
    return str(value)


def _typed(text: str, kind: type | None, key: str, row: int) -> Any:
    """A ``--row`` value as the type its pattern declares for the key (text if none)."""
    if kind is None or kind is str:
        return text
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return text.encode() if kind is bytes else kind(text)
    except ValueError:
        raise DataLayerError(
            f"--row {row}: {key}={text!r} is not {'an' if kind is int else 'a'} "
            f"{kind.__name__}, the type the pattern declares for '{key}'"
        ) from None


@features_app.command("online")
@reports_errors
def features_online(
    row: Annotated[
        list[str], typer.Option("--row", help="An entity row: key=value[,key=value]; repeatable.")
    ],
    pattern: PatternArgument = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read online features for entity rows, as a model service does (TTL applied)."""
    texts = []
    for text in row:
        pairs = [part.split("=", 1) for part in text.split(",") if part]
        if any(len(p) != 2 for p in pairs):
            raise DataLayerError(f"--row '{text}' is not key=value[,key=value]")
        texts.append({k.strip(): v.strip() for k, v in pairs})
    with open_datalayer(config, profile) as dl:
        view = dl.features(_feature_pattern(dl, pattern))
        types = view.input_types()
        rows = [
            {key: _typed(value, types.get(key), key, i) for key, value in text.items()}
            for i, text in enumerate(texts, start=1)
        ]
        served = view.online(rows)
    if as_json:
        print(json.dumps({"features": served}, default=_jsonable))
        return
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


@features_app.command("land-logs")
@reports_errors
def features_land_logs(
    pattern: PatternArgument = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Land into parquet files in this folder (default: the offline PostgreSQL's "
            "table feature_log_P where the store has one, else .datalayer/feature_logs/P)."
        ),
    ] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="Stop once no record came for this many seconds.")
    ] = 5.0,
    batch: Annotated[int, typer.Option(help="Records per parquet file or insert.")] = 1000,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Write the logged online reads of a feature pattern to the offline store (a PostgreSQL
    table, or parquet files), ready for a skew check."""
    from datalayer.categories.feature_log import land

    with open_datalayer(config, profile) as dl:
        name = _feature_pattern(dl, pattern)
        view = dl.features(name)
        log = logged(view)
        sinks = log_sinks(dl, view, output)
        with progress_bar(40) as progress:
            task = progress.add_task(f"landing {name}'s log", total=None)
            landed = land(
                dl.stream(log.to),
                name,
                sinks.reads,
                predictions=sinks.predictions,
                batch=batch,
                idle_timeout=idle_timeout,
                on_batch=lambda records: progress.advance(task, records),
            )
    console.print(
        f"[green]✓[/] {landed.reads:,} logged rows and {landed.predictions:,} predictions landed "
        f"in {escape(sinks.where)}",
        soft_wrap=True,
    )

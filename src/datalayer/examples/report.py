"""The quickstart's summary as Rich tables: what went where, the largest incidents, the
features a model service reads and a sample of the training set."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from datalayer.api import DataLayer
from datalayer.examples.quickstart import Summary


def print_summary(console: Console, dl: DataLayer, summary: Summary) -> None:
    """Every table of the quickstart's summary, in order, then where the data lives and
    what to try next."""
    console.print(_placement(dl, summary))
    console.print(_largest(summary, console.width))
    if summary.online_features:
        _print_features(console, summary)
    _print_where_and_next(console, dl, summary)


def _print_where_and_next(console: Console, dl: DataLayer, summary: Summary) -> None:
    """Each store's place (a file on the embedded profile, a URL without its password on
    services), then three next steps."""
    registry = dl.registry
    console.print("[bold]where the data is[/]")
    for name, config in registry.stores.items():
        target = config.target()
        local = registry.base_dir / target.split(" ")[0]
        if "://" not in target and local.exists():
            target = str(local.resolve())
        console.print(f"  {escape(name)} ({config.type}): {escape(target)}", soft_wrap=True)
    where = f" --config {registry.file} --profile {dl.profile}"
    keys = summary.online_features or {"service_id": "svc-01", "account_id": "acct-1"}
    row = f"service_id={keys['service_id']},account_id={keys['account_id']}"
    console.print("[bold]next[/]")
    steps = (
        (
            "serve: read the features a model service gets",
            f"datalayer features online --row {row}{where}",
        ),
        (
            "train: a point-in-time training set, from a CSV with the columns service_id,"
            "account_id,event_timestamp",
            f"datalayer features historical --entities entities.csv --output training.parquet"
            f"{where}",
        ),
        ("register a pattern of your own", "README.md, 'Registering a new pattern'"),
    )
    for what, how in steps:
        console.print(f"  {escape(what)}:", soft_wrap=True)
        console.print(f"    {escape(how)}", soft_wrap=True)


def _placement(dl: DataLayer, summary: Summary) -> Table:
    """What each pattern of the job did, and on which store."""
    registry = dl.registry
    store_label = {name: cfg.type for name, cfg in registry.stores.items()}
    table = Table(title=f"quickstart: what went where ({dl.profile} profile)")
    names = ("accounts", "services", "alerts", "incidents", "grouping_window")
    table.add_column("pattern", no_wrap=True, min_width=max(map(len, names)))
    for column in ("category", "store"):
        table.add_column(column, no_wrap=True)
    table.add_column("result")  # the one that wraps on a narrow terminal
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
    return table


def _largest(summary: Summary, width: int) -> Table:
    """The largest incidents; ids are never cut: on a narrow terminal the fingerprint and the
    times go first."""
    largest = Table(title="largest incidents")
    rows = [
        {
            "incident": inc["incident_id"],
            "service": inc["service_id"],
            "fingerprint": inc["fingerprint"],
            "severity": inc["severity"],
            "alerts": str(inc["alert_count"]),
            "from": _clock(inc["opened_at"]),
            "to": _clock(inc["updated_at"]),
        }
        for inc in summary.largest
    ]
    columns = ["incident", "service", "fingerprint", "severity", "alerts", "from", "to"]
    for dropped in ("fingerprint", "from", "to"):
        needed = sum(max([len(c), *(len(r[c]) for r in rows)]) + 3 for c in columns) + 1
        if needed <= width:
            break
        columns.remove(dropped)
    for column in columns:
        largest.add_column(column, no_wrap=True)
    for row in rows:
        largest.add_row(*(row[c] for c in columns))
    return largest


def _print_features(console: Console, summary: Summary) -> None:
    """The features a model service read for the incoming alert, and the training set."""
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
        frame.drop(columns=["service_id", "account_id", "event_timestamp"]).notna().mean().mean()
    )
    console.print(
        f"[bold]training set[/] (point-in-time, {summary.feature_views} feature views): "
        f"{len(frame)} rows x {frame.shape[1] - 3} features, {filled:.0%} of values present"
    )
    sample = Table(title="training set, first rows (a few columns)")
    shown = ["service_id", "event_timestamp", *[c for c in frame.columns if "__" in c][:4]]
    for column in shown:
        sample.add_column(column.split("__")[-1], no_wrap=column in shown[:2])
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

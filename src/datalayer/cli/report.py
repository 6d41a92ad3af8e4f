"""The quickstart's summary as Rich tables: what went where, the largest incidents, the
features a model service reads, a sample of the training set and the model's evaluation."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from datalayer.api import DataLayer
from datalayer.categories.feature_evaluation import EvaluationReport
from datalayer.categories.feature_skew import SkewReport
from datalayer.cli.render import fitted_table, shown_path
from datalayer.config import config_path, profile_name
from datalayer.examples.quickstart import ModelRun, Summary

#: Where the quickstart writes the model's skew and evaluation report.
REPORT = Path(".datalayer") / "reports" / "model_features.html"


@dataclass
class Evaluated:
    """The quickstart model's skew and evaluation, and where its report is."""

    skew: SkewReport
    evaluation: EvaluationReport
    report: Path


def evaluate_model(dl: DataLayer, run: ModelRun) -> Evaluated:
    """What ``datalayer evaluate`` does, on the quickstart model's logged reads: land them,
    compare them with the training set at the same instants, recompute the predictions
    offline, join the labels, write the HTML report."""
    from datalayer.cli.skew import Check, ModelCheck, checked
    from datalayer.cli.skew_report import write_html

    # Without the training set: a few reads of 8 services at one instant are no sample of
    # 48 hours of them, and their distributions would differ by design.
    check = Check("model_features", idle_timeout=1.0)
    model = ModelCheck(run.predict, "model_labels", shown=f"{run.name} (the quickstart's fit)")
    skew, evaluation, where = checked(dl, check, model, start=run.since)
    assert evaluation is not None
    report = dl.registry.base_dir / REPORT
    write_html(report, skew, evaluation, source=where)
    return Evaluated(skew, evaluation, report)


def print_summary(
    console: Console, dl: DataLayer, summary: Summary, evaluated: Evaluated | None = None
) -> None:
    """Every table of the quickstart's summary, in order, then where the data lives and
    what to try next."""
    console.print(_placement(dl, summary))
    console.print(_largest(summary, console.width))
    if summary.online_features:
        _print_features(console, summary)
    if summary.model is not None and evaluated is not None:
        _print_model(console, summary.model, evaluated)
    _print_where_and_next(console, dl, summary)


def _print_model(console: Console, run: ModelRun, evaluated: Evaluated) -> None:
    """The model loop: trained, served and logged, labelled, evaluated."""
    evaluation, skew = evaluated.evaluation, evaluated.skew

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    disagree = sum(f.disagreeing for f in skew.features)
    values = sum(f.rows for f in skew.features)
    lines = [
        f"trained on the training set {shown_path(run.training_path)}",
        f"saved as {shown_path(run.path)}",
        f"{run.reads} reads served with a request id, {evaluation.rows} predictions and "
        f"{run.labels} labels logged",
        f"accuracy online {share(evaluation.online_accuracy)}, offline "
        f"{share(evaluation.offline_accuracy)}; {evaluation.differing} predictions differ; "
        f"{disagree} of {values} served values disagree with training",
        f"report: {shown_path(evaluated.report)}",
    ]
    console.print("[bold]model[/] busy next hour (train, serve, log, label, evaluate)")
    for line in lines:  # a path is never broken: it ends its line
        wrapped = textwrap.fill(
            line,
            console.width,
            initial_indent="  ",
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        console.print(escape(wrapped), soft_wrap=True)


def _print_where_and_next(console: Console, dl: DataLayer, summary: Summary) -> None:
    """Each store's place (a file on the embedded profile, a URL without its password on
    services), then three next steps, as commands short enough to copy from a narrow terminal."""
    registry = dl.registry
    console.print("[bold]where the data is[/]")
    for name, config in registry.stores.items():
        target = config.target()
        local = registry.base_dir / target.split(" ")[0]
        if "://" not in target and local.exists():
            target = shown_path(local)
        console.print(f"  {escape(name)} ({config.type}): {escape(target)}", soft_wrap=True)
    where = ""
    if config_path() != registry.file:
        where += f" --config {shown_path(registry.file)}"
    if profile_name() != dl.profile:
        where += f" --profile {dl.profile}"
    keys = summary.online_features or {"service_id": "svc-01", "account_id": "acct-1"}
    row = f"service_id={keys['service_id']},account_id={keys['account_id']}"
    console.print("[bold]next[/]")
    steps = (
        (
            "serve: read the features a model service gets",
            f"datalayer features online service_features --row {row}{where}",
        ),
        (
            "train: a point-in-time training set for the rows of a CSV with the columns "
            "service_id, account_id and event_timestamp",
            "datalayer features historical service_features --entities entities.csv "
            f"--output training.parquet{where}",
        ),
        ("register a pattern of your own", "README.md, 'Registering a new pattern'"),
    )
    for what, how in steps:
        prose = textwrap.fill(
            f"{what}:", console.width, initial_indent="  ", subsequent_indent="  "
        )
        console.print(escape(prose), soft_wrap=True)
        console.print(f"    {escape(how)}", soft_wrap=True)  # a command is never broken


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
    return fitted_table(
        "largest incidents",
        rows,
        keep=["incident", "service", "severity", "alerts"],
        drop_first=["fingerprint", "from", "to"],
        width=width,
    )


def _print_features(console: Console, summary: Summary) -> None:
    """The features a model service read for the incoming alert, and the training set."""
    alert = summary.incoming_alert
    title = (
        f"online features for incoming alert {alert['alert_id']} "
        f"({alert['service_id']}, {alert['severity']}), as a model service reads them"
    )
    served = {
        name: "-" if value is None else str(value)
        for name, value in summary.online_features.items()
    }
    if max(len(n) + len(v) for n, v in served.items()) + 7 > console.width:
        console.print(f"[bold]{escape(title)}[/]")  # too narrow for a table that cuts nothing
        for name, value in served.items():
            console.print(f"  {escape(name)} = {escape(value)}", soft_wrap=True)
    else:
        table = Table(title=title)
        table.add_column("feature", no_wrap=True)
        table.add_column("value", no_wrap=True)
        for name, value in served.items():
            table.add_row(escape(name), escape(value))
        console.print(table)
    frame = summary.training_set
    filled = (
        frame.drop(columns=["service_id", "account_id", "event_timestamp"]).notna().mean().mean()
    )
    console.print(
        f"[bold]training set[/] (point-in-time, {summary.feature_views} feature views): "
        f"{len(frame)} rows x {frame.shape[1] - 3} features, {filled:.0%} of values present"
    )
    features = [c for c in frame.columns if "__" in c][:4]
    rows = [
        {
            "service_id": _cell(record["service_id"]),
            "event_timestamp": _cell(record["event_timestamp"]),
        }
        | {c.split("__")[-1]: _cell(record[c]) for c in features}
        for _, record in frame.head(6).iterrows()
    ]
    sample = fitted_table(
        "training set, first rows (a few columns)",
        rows,
        keep=["service_id", "event_timestamp"],
        drop_first=[c.split("__")[-1] for c in reversed(features)],
        width=console.width,
    )
    console.print(sample)


def _cell(value: Any) -> str:
    """A training-set value for a table: timestamps to the minute, missing as '-'."""
    if hasattr(value, "strftime"):
        return str(value.strftime("%m-%d %H:%M"))
    return "-" if value is None or str(value) in ("<NA>", "nan", "NaT") else str(value)


def _clock(iso: str) -> str:
    """``2026-01-05T09:12:00Z`` as ``01-05 09:12``."""
    return f"{iso[5:10]} {iso[11:16]}"

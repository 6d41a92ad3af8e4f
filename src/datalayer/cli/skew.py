"""``datalayer skew``: what a feature pattern served against what training would have seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from datalayer.api import open as open_datalayer
from datalayer.cli.features import instant, log_sink, logged
from datalayer.cli.render import (
    ConfigOption,
    ProfileOption,
    console,
    fitted_table,
    progress_bar,
    reports_errors,
    shown_path,
)
from datalayer.errors import DataLayerError

#: The exit status when a threshold is crossed (1 is an error).
CROSSED = 2


def _training(path: Path | None) -> object:
    if path is None:
        return None
    import pandas as pd

    if not path.exists():
        raise DataLayerError(f"--training: no file {path}")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


@reports_errors
def skew(
    pattern: Annotated[str, typer.Option(help="The feature pattern whose log is checked.")],
    since: Annotated[str | None, typer.Option(help="Reads at or after this ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Reads before this ISO time.")] = None,
    training: Annotated[
        Path | None,
        typer.Option(help="The model's training set (parquet or CSV, view__feature columns)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the summary as JSON here.")
    ] = None,
    logs: Annotated[
        Path | None,
        typer.Option(help="The landed log's parquet folder (default: where land-logs puts it)."),
    ] = None,
    max_mismatch: Annotated[
        float, typer.Option(help="Largest share of rows that may disagree, per feature.")
    ] = 0.001,
    max_psi: Annotated[
        float, typer.Option(help="Largest population stability index against --training.")
    ] = 0.2,
    max_ks: Annotated[
        float | None, typer.Option(help="Largest Kolmogorov-Smirnov statistic (unset: none).")
    ] = None,
    float_tolerance: Annotated[
        float, typer.Option(help="Floats are equal within this share of the larger one.")
    ] = 1e-9,
    idle_timeout: Annotated[
        float, typer.Option(help="Landing stops once no log record came for this long.")
    ] = 5.0,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Compare a feature pattern's served values (its log) with the training set at the same
    instants, and with a model's training set; exit 2 when a threshold is crossed."""
    from datalayer.categories.feature_log import land
    from datalayer.categories.feature_skew import Thresholds, compare

    start, end = instant(since, "--since"), instant(until, "--until")
    thresholds = Thresholds(max_mismatch, max_psi, max_ks, float_tolerance)
    reference = _training(training)
    with open_datalayer(config, profile) as dl:
        view = dl.features(pattern)
        log = logged(view)
        sink, where = log_sink(dl, view, logs)
        with progress_bar(40) as progress:
            task = progress.add_task(f"landing {pattern}'s log", total=None)
            land(
                dl.stream(log.to),
                pattern,
                sink,
                idle_timeout=idle_timeout,
                on_batch=lambda records: progress.advance(task, records),
            )
            checking = progress.add_task(f"checking {pattern}'s reads", total=None)
            report = compare(
                view,
                sink.chunks(start, end),
                thresholds=thresholds,
                training=reference,
                training_name=str(training) if training else None,
                on_chunk=lambda rows: progress.advance(checking, rows),
            )
    rows = [
        {
            "feature": feature.feature,
            "rows": f"{feature.rows:,}",
            "disagree": f"{feature.disagreeing:,} ({feature.mismatch_rate:.2%})",
            "online only": f"{feature.online_only:,}",
            "offline only": f"{feature.offline_only:,}",
            "largest diff": (
                "" if feature.largest_difference is None else f"{feature.largest_difference:.6g}"
            ),
            "PSI": "" if feature.psi is None else f"{feature.psi:.3f}",
            "KS": "" if feature.ks is None else f"{feature.ks:.3f}",
        }
        for feature in report.features
    ]
    table = fitted_table(
        f"skew of {pattern}: {report.rows:,} rows of {report.reads:,} reads from {where}",
        rows,
        keep=["feature", "disagree"],
        drop_first=["KS", "largest diff", "online only", "offline only"],
        width=console.width,
    )
    console.print(table)
    console.print(
        f"floats equal within {thresholds.float_tolerance:g} of the larger magnitude; integers "
        "and strings exactly"
    )
    for entry in report.freshness:
        if entry.served:
            console.print(
                f"age of {entry.view}'s served values: p50 {entry.p50_s:,.0f} s, "
                f"p99 {entry.p99_s:,.0f} s, max {entry.max_s:,.0f} s"
            )
    if json_path is not None:
        json_path.write_text(json.dumps(report.summary(), indent=2, default=str) + "\n")
        console.print(f"summary written to {escape(shown_path(json_path))}", soft_wrap=True)
    if report.failures:
        for failure in report.failures:
            console.print(f"[red]✗[/] {escape(failure)}")
        raise typer.Exit(CROSSED)
    if not report.rows:
        console.print(f"[yellow]no logged reads of {pattern} in {escape(where)}[/]")
    console.print("[green]✓[/] every threshold holds")

"""``datalayer skew`` and ``datalayer evaluate``: what a feature pattern served against what
training would have seen, and a model's online accuracy against its offline accuracy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from datalayer.api import open as open_datalayer
from datalayer.cli.features import instant, log_sinks, logged
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

if TYPE_CHECKING:
    from datalayer.api import DataLayer
    from datalayer.categories.feature import FeatureView
    from datalayer.categories.feature_evaluation import EvaluationReport
    from datalayer.categories.feature_log import LogSinks
    from datalayer.categories.feature_skew import SkewReport

#: The exit status when a threshold is crossed (1 is an error).
CROSSED = 2

PatternOption = Annotated[str, typer.Option(help="The feature pattern whose log is checked.")]
SinceOption = Annotated[str | None, typer.Option(help="Reads at or after this ISO time.")]
UntilOption = Annotated[str | None, typer.Option(help="Reads before this ISO time.")]
TrainingOption = Annotated[
    Path | None,
    typer.Option(help="The model's training set (parquet or CSV, view__feature columns)."),
]
TrainingSinceOption = Annotated[
    str | None,
    typer.Option(
        help="Instead of --training: the training set over a time range, from this ISO time "
        "(the logged entities' point-in-time rows every --training-step)."
    ),
]
TrainingUntilOption = Annotated[
    str | None, typer.Option(help="The end of that range (default: the first logged read).")
]
TrainingStepOption = Annotated[
    str, typer.Option(help="Time between the instants of that training set (e.g. 1h, 30m).")
]
OutputOption = Annotated[
    Path | None, typer.Option(help="Write the HTML report here (one self-contained file).")
]
JsonPathOption = Annotated[
    Path | None, typer.Option("--json", help="Write the summary as JSON here.")
]
LogsOption = Annotated[
    Path | None,
    typer.Option(help="The landed log's parquet folder (default: where land-logs puts it)."),
]
MaxMismatchOption = Annotated[
    float, typer.Option(help="Largest share of rows that may disagree, per feature.")
]
MaxPsiOption = Annotated[
    float, typer.Option(help="Largest population stability index against --training.")
]
MaxKsOption = Annotated[
    float | None, typer.Option(help="Largest Kolmogorov-Smirnov statistic (unset: none).")
]
ToleranceOption = Annotated[
    float, typer.Option(help="Floats are equal within this share of the larger one.")
]
VariantOption = Annotated[
    str | None,
    typer.Option(
        help="Only the reads one variant of the pattern's rollout served (its feature service)."
    ),
]
IdleOption = Annotated[
    float, typer.Option(help="Landing (and reading labels) stops once nothing came for this long.")
]


@dataclass
class Check:
    """What both commands were asked."""

    pattern: str
    since: str | None = None
    until: str | None = None
    training: Path | None = None
    training_since: str | None = None
    training_until: str | None = None
    training_step: str = "1h"
    output: Path | None = None
    json_path: Path | None = None
    logs: Path | None = None
    max_mismatch: float = 0.001
    max_psi: float = 0.2
    max_ks: float | None = None
    float_tolerance: float = 1e-9
    idle_timeout: float = 5.0
    variant: str | None = None
    config: Path | None = None
    profile: str | None = None

    @classmethod
    def of(cls, options: dict[str, Any]) -> Check:
        """The check a command's options (its ``locals()``) ask for."""
        return cls(**{f.name: options[f.name] for f in fields(cls)})


@dataclass
class ModelCheck:
    """What ``evaluate`` adds: the model (``module:function``, or the function itself) and
    where the labels come from."""

    function: str | Callable[[Any], Any]
    labels: str
    label_field: str = "label"
    name: str | None = None
    version: str | None = None
    #: How the report names the model (default: the function).
    shown: str | None = None


@reports_errors
def skew(
    pattern: PatternOption,
    since: SinceOption = None,
    until: UntilOption = None,
    training: TrainingOption = None,
    training_since: TrainingSinceOption = None,
    training_until: TrainingUntilOption = None,
    training_step: TrainingStepOption = "1h",
    output: OutputOption = None,
    json_path: JsonPathOption = None,
    logs: LogsOption = None,
    max_mismatch: MaxMismatchOption = 0.001,
    max_psi: MaxPsiOption = 0.2,
    max_ks: MaxKsOption = None,
    float_tolerance: ToleranceOption = 1e-9,
    idle_timeout: IdleOption = 5.0,
    variant: VariantOption = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """Compare a feature pattern's served values (its log) with the training set at the same
    instants, and with a model's training set; exit 2 when a threshold is crossed."""
    _run(Check.of(locals()), None)


@reports_errors
def evaluate(
    pattern: PatternOption,
    model: Annotated[
        str,
        typer.Option(
            help="The model as module:function (a DataFrame of point-in-time rows in, one "
            "prediction per row out)."
        ),
    ],
    labels: Annotated[
        str,
        typer.Option(help="The streaming or transactional pattern the labels arrive through."),
    ],
    label_field: Annotated[
        str, typer.Option(help="The label records' field holding the label.")
    ] = "label",
    model_name: Annotated[
        str | None, typer.Option(help="Whose logged predictions (default: the only model).")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Which version's logged predictions.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    training: TrainingOption = None,
    training_since: TrainingSinceOption = None,
    training_until: TrainingUntilOption = None,
    training_step: TrainingStepOption = "1h",
    output: OutputOption = None,
    json_path: JsonPathOption = None,
    logs: LogsOption = None,
    max_mismatch: MaxMismatchOption = 0.001,
    max_psi: MaxPsiOption = 0.2,
    max_ks: MaxKsOption = None,
    float_tolerance: ToleranceOption = 1e-9,
    idle_timeout: IdleOption = 5.0,
    variant: VariantOption = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
) -> None:
    """A model's online accuracy against its accuracy on the point-in-time features of the
    same reads, the share of predictions that differ and the features that explain it, with
    the skew check; exit 2 when a skew threshold is crossed."""
    _run(Check.of(locals()), ModelCheck(model, labels, label_field, model_name, model_version))


def _training(
    check: Check,
    view: FeatureView,
    sinks: LogSinks,
    until: datetime | None,
    reads: Callable[[Any], Any],
) -> tuple[Any, str | None]:
    """The model's training set (a file, or one built over a time range) and its name."""
    import pandas as pd

    from datalayer.categories.feature_skew import training_over
    from datalayer.validators import parse_duration

    path, since = check.training, instant(check.training_since, "--training-since")
    if path is not None and since is not None:
        raise DataLayerError("--training and --training-since: give one training set")
    if since is not None:
        end = instant(check.training_until, "--training-until") or _first_read(sinks, until)
        try:
            step = parse_duration(check.training_step)
        except ValueError as exc:
            raise DataLayerError(f"--training-step: {exc}") from None
        return training_over(view, reads(sinks.reads.chunks(None, until)), since, end, step)
    if path is None:
        return None, None
    if not path.exists():
        raise DataLayerError(f"--training: no file {path}")
    return (pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)), str(path)


def _first_read(sinks: LogSinks, until: datetime | None) -> datetime:
    firsts = [chunk["requested_at"].min() for chunk in sinks.reads.chunks(None, until)]
    found = [f for f in firsts if f is not None and f == f]
    if not found:
        raise DataLayerError("--training-since: no logged read to end the range at")
    first: datetime = min(found).to_pydatetime()
    return first


def _run(check: Check, model: ModelCheck | None) -> None:
    start, end = instant(check.since, "--since"), instant(check.until, "--until")
    with open_datalayer(check.config, check.profile) as dl:
        report, evaluated, where = checked(dl, check, model, start, end)
    _print(report, evaluated, where)
    _write(check, report, evaluated, where)
    if report.failures:
        for failure in report.failures:
            console.print(f"[red]✗[/] {escape(failure)}")
        raise typer.Exit(CROSSED)
    if not report.rows:
        console.print(f"[yellow]no logged reads of {check.pattern} in {escape(where)}[/]")
    console.print("[green]✓[/] every threshold holds")


def checked(
    dl: DataLayer,
    check: Check,
    model: ModelCheck | None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[SkewReport, EvaluationReport | None, str]:
    """Land what is pending of the pattern's log, then compare its reads in [start, end)
    (and evaluate the model, when given); returns the reports and where the log is."""
    from datalayer.categories.feature_log import land
    from datalayer.categories.feature_skew import Thresholds, compare

    thresholds = Thresholds(check.max_mismatch, check.max_psi, check.max_ks, check.float_tolerance)
    pattern_view = dl.features(check.pattern)
    log = logged(pattern_view)
    sinks = log_sinks(dl, pattern_view, check.logs)
    view, reads = _variant(pattern_view, check, model)
    with progress_bar(40) as progress:
        task = progress.add_task(f"landing {check.pattern}'s log", total=None)
        land(
            dl.stream(log.to),
            check.pattern,
            sinks.reads,
            predictions=sinks.predictions,
            idle_timeout=check.idle_timeout,
            on_batch=lambda records: progress.advance(task, records),
        )
        reference, training_name = _training(check, view, sinks, end, reads)
        evaluation = None
        if model is not None:
            evaluation = _evaluation(dl, model, sinks.predictions, check)
        checking = progress.add_task(f"checking {check.pattern}'s reads", total=None)
        report = compare(
            view,
            reads(sinks.reads.chunks(start, end)),
            thresholds=thresholds,
            training=reference,
            training_name=training_name,
            evaluation=evaluation,
            on_chunk=lambda rows: progress.advance(checking, rows),
        )
    report.variant = check.variant
    return report, evaluation.finish() if evaluation is not None else None, sinks.where


def _variant(
    view: FeatureView, check: Check, model: ModelCheck | None
) -> tuple[FeatureView, Callable[[Any], Any]]:
    """The view of the variant asked for (``--variant``), and a filter of the log's chunks
    down to its reads; the pattern's view and every read without one. A model is one
    variant's: ``evaluate`` on a pattern with a rollout needs ``--variant``."""
    from datalayer.categories.feature_skew import of_variant

    if check.variant is None:
        if model is not None and view.next is not None:
            raise DataLayerError(
                f"pattern '{check.pattern}' serves two variants ("
                f"{', '.join(view.variants())}): name the model's with --variant"
            )
        return view, lambda chunks: chunks
    chosen, name = view.variant(check.variant), check.variant
    own = chosen is view
    return chosen, lambda chunks: of_variant(chunks, name, own)


def _evaluation(dl: DataLayer, model: ModelCheck, predictions: Any, check: Check) -> Any:
    from datalayer.categories.feature_evaluation import Evaluation, Predictions, read_labels
    from datalayer.patterns import import_object

    function = model.function
    shown = model.shown or str(getattr(function, "__qualname__", "the model"))
    if isinstance(function, str):
        shown = model.shown or function
        try:
            function = import_object(function, dl.registry.base_dir, "function")
        except ValueError as exc:
            raise DataLayerError(f"--model: {exc}") from None
        if not callable(function):
            raise DataLayerError(f"--model: '{model.function}' is not a function")
    found = Predictions.of(predictions.chunks(None, None), model.name, model.version)
    labels = read_labels(dl, model.labels, model.label_field, check.idle_timeout)
    return Evaluation(function, shown, found, labels, check.float_tolerance)


def _print(report: SkewReport, evaluation: EvaluationReport | None, where: str) -> None:
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
        f"skew of {report.pattern}: {report.rows:,} rows of {report.reads:,} reads from {where}",
        rows,
        keep=["feature", "disagree"],
        drop_first=["KS", "largest diff", "online only", "offline only"],
        width=console.width,
    )
    console.print(table)
    console.print(
        f"floats equal within {report.thresholds.float_tolerance:g} of the larger magnitude; "
        "integers and strings exactly"
    )
    for variant, count in report.not_compared.items():
        console.print(
            f"[yellow]{count:,} rows served by variant {escape(variant)}, which the pattern "
            "no longer has (its rollout was removed), were not compared[/]"
        )
    for entry in report.freshness:
        if entry.served:
            console.print(
                f"age of {entry.view}'s served values: p50 {entry.p50_s:,.0f} s, "
                f"p99 {entry.p99_s:,.0f} s, max {entry.max_s:,.0f} s"
            )
    if evaluation is not None:
        _print_evaluation(evaluation)


def _print_evaluation(evaluation: EvaluationReport) -> None:
    def share(value: float | None) -> str:
        return "no labels" if value is None else f"{value:.2%}"

    console.print(
        f"model {escape(evaluation.model)} ({escape(evaluation.predicted_by)}): "
        f"{evaluation.rows:,} predicted rows, {evaluation.labelled:,} labelled; accuracy "
        f"online {share(evaluation.online_accuracy)}, offline "
        f"{share(evaluation.offline_accuracy)}; {evaluation.differing:,} predictions differ "
        f"({evaluation.differing_share:.2%})"
    )
    if evaluation.explanations:
        named = ", ".join(
            f"{e.feature} ({e.with_differing_predictions:,})" for e in evaluation.explanations[:3]
        )
        console.print(f"features that disagree where predictions differ: {escape(named)}")


def _write(
    check: Check, report: SkewReport, evaluation: EvaluationReport | None, where: str
) -> None:
    if check.json_path is not None:
        summary = report.summary()
        if evaluation is not None:
            summary["evaluation"] = evaluation.summary()
        check.json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        console.print(f"summary written to {escape(shown_path(check.json_path))}", soft_wrap=True)
    if check.output is not None:
        from datalayer.cli.skew_report import write_html

        write_html(check.output, report, evaluation, source=where)
        console.print(f"report written to {escape(shown_path(check.output))}", soft_wrap=True)

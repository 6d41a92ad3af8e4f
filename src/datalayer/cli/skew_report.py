"""The skew (and evaluation) report as one self-contained HTML file.

Charts are drawn with Matplotlib and embedded as PNG data URIs, the table sorts with a few
lines of inline script, and every value that came from a log or a registry is escaped: the
file opens anywhere without a network and shows what it holds, whatever the names in it.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datalayer.categories.feature_evaluation import EvaluationReport
from datalayer.categories.feature_skew import FeatureSkew, SkewReport
from datalayer.errors import MissingDriver

#: Features whose served and training distributions are drawn (the worst first).
HISTOGRAMS = 6

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d2430; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; }
.muted { color: #5b6474; } .pass { color: #11772d; } .fail { color: #b3261e; }
.verdict { font-size: 1.3em; font-weight: 600; padding: .6em 1em; border-radius: 6px; }
.verdict.pass { background: #e6f4ea; } .verdict.fail { background: #fce8e6; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { padding: .3em .7em; border-bottom: 1px solid #dde1e7; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th.sortable { cursor: pointer; user-select: none; } th.sortable:hover { background: #eef1f5; }
code { font-size: .95em; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .charts img { max-width: 100%; }
"""

_SORT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var descending = th.dataset.order !== "desc";
      th.dataset.order = descending ? "desc" : "asc";
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y), order;
        if (!isNaN(nx) && !isNaN(ny)) { order = nx - ny; } else { order = x < y ? -1 : x > y; }
        return descending ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def write_html(
    path: Path,
    report: SkewReport,
    evaluation: EvaluationReport | None = None,
    *,
    source: str = "",
) -> None:
    """Write the report to ``path`` (aside, then renamed: a reader never sees half of it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDriver(
            "the HTML report draws its charts with matplotlib: pip install 'datalayer[report]'"
        ) from None
    page = _page(report, evaluation, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_text(page, encoding="utf-8")
    aside.replace(path)


def _page(report: SkewReport, evaluation: EvaluationReport | None, source: str) -> str:
    e = html.escape
    verdict = "pass" if report.passed else "fail"
    said = "every threshold holds" if report.passed else f"{len(report.failures)} crossed"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>skew of {e(report.subject)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Training/serving skew of <code>{e(report.subject)}</code></h1>",
        f"<p class=muted>{report.rows:,} rows of {report.reads:,} logged reads from "
        f"{e(source)}; generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
        f'<p id=verdict class="verdict {verdict}">{"✓" if report.passed else "✗"} {e(said)}</p>',
        _thresholds(report),
    ]
    if evaluation is not None:
        parts.append(_accuracy(evaluation))
    parts += [
        "<h2>Features</h2>",
        "<p class=muted>Click a column to sort. Floats are equal within "
        f"{report.thresholds.float_tolerance:g} of the larger magnitude; integers and strings "
        "exactly.</p>",
        _features(report.features),
        _timeline(report, evaluation),
        _histograms(report),
        _freshness(report),
    ]
    if evaluation is not None:
        parts.append(_explanations(evaluation))
    parts += [_examples(report.features), f"<script>{_SORT}</script></body></html>"]
    return "\n".join(p for p in parts if p)


def _thresholds(report: SkewReport) -> str:
    limits = report.thresholds
    worst_rate = max((f.mismatch_rate for f in report.features), default=0.0)
    psis = [f.psi for f in report.features if f.psi is not None]
    kss = [f.ks for f in report.features if f.ks is not None]
    rows = [
        ("share of rows that disagree, per feature", worst_rate, limits.max_mismatch, "{:.4%}"),
        ("population stability index", max(psis) if psis else None, limits.max_psi, "{:.3f}"),
        ("Kolmogorov-Smirnov statistic", max(kss) if kss else None, limits.max_ks, "{:.3f}"),
    ]
    body = []
    for name, worst, limit, shape in rows:
        if worst is None or limit is None:
            mark = "<span class=muted>no limit</span>" if limit is None else ""
            shown = "not measured" if worst is None else shape.format(worst)
        else:
            ok = worst <= limit
            mark = "<span class=pass>✓ pass</span>" if ok else "<span class=fail>✗ fail</span>"
            shown = shape.format(worst)
        limit_text = "none" if limit is None else shape.format(limit)
        body.append(f"<tr><td>{name}</td><td>{shown}</td><td>{limit_text}</td><td>{mark}</td></tr>")
    failures = "".join(f"<li class=fail>{html.escape(f)}</li>" for f in report.failures)
    return (
        "<h2>Thresholds</h2><table id=thresholds><thead><tr><th>measure</th><th>worst</th>"
        f"<th>limit</th><th></th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (f"<ul>{failures}</ul>" if failures else "")
    )


def _accuracy(evaluation: EvaluationReport) -> str:
    e = html.escape

    def share(value: float | None) -> str:
        return "no labels" if value is None else f"{value:.2%}"

    return (
        f"<h2>Model {e(evaluation.model)}</h2>"
        f"<p class=muted>online predictions of {e(evaluation.predicted_by)}; "
        f"{evaluation.labels_read:,} label records read, {evaluation.labels_unusable:,} "
        "unusable</p><table id=accuracy><tbody>"
        f"<tr><td>reads with an online prediction</td><td>{evaluation.rows:,}</td></tr>"
        f"<tr><td>of them labelled</td><td>{evaluation.labelled:,}</td></tr>"
        f"<tr><td>online accuracy</td><td>{share(evaluation.online_accuracy)}</td></tr>"
        f"<tr><td>offline accuracy (point-in-time features)</td>"
        f"<td>{share(evaluation.offline_accuracy)}</td></tr>"
        f"<tr><td>predictions that differ</td><td>{evaluation.differing:,} "
        f"({evaluation.differing_share:.2%})</td></tr></tbody></table>"
    )


def _number(value: float | None, shape: str = "{:.6g}") -> tuple[str, str]:
    """A cell's text and its sort value."""
    if value is None:
        return "", "-1"
    return shape.format(value), repr(float(value))


def _features(features: list[FeatureSkew]) -> str:
    e = html.escape
    head = [
        "feature",
        "rows",
        "disagree",
        "share",
        "online only",
        "offline only",
        "largest diff",
        "PSI",
        "KS",
        "examples",
    ]
    rows = []
    for i, f in enumerate(features):
        cells = [
            (f"<code>{e(f.feature)}</code>", f.feature),  # the sort value: escaped once, below
            (f"{f.rows:,}", str(f.rows)),
            (f"{f.disagreeing:,}", str(f.disagreeing)),
            (f"{f.mismatch_rate:.4%}", repr(f.mismatch_rate)),
            (f"{f.online_only:,}", str(f.online_only)),
            (f"{f.offline_only:,}", str(f.offline_only)),
            _number(f.largest_difference),
            _number(f.psi, "{:.3f}"),
            _number(f.ks, "{:.3f}"),
            (
                f'<a href="#examples-{i}">{len(f.examples)} example(s)</a>' if f.examples else "",
                str(len(f.examples)),
            ),
        ]
        rows.append(
            "<tr>"
            + "".join(f'<td data-value="{e(value)}">{text}</td>' for text, value in cells)
            + "</tr>"
        )
    header = "".join(f"<th class=sortable>{name}</th>" for name in head)
    return (
        f"<table id=features class=sortable><thead><tr>{header}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _figure(width: float = 6.0, height: float = 3.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _timeline(report: SkewReport, evaluation: EvaluationReport | None) -> str:
    series = report.timeline.series()
    if not series:
        return ""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    starts = [datetime.fromisoformat(p["start"]) for p in series]
    figure = _figure(11, 3.2 if evaluation is None else 5.2)
    axes = figure.subplots(1 if evaluation is None else 2, 1, sharex=True, squeeze=False)[:, 0]
    rate = [p["disagreeing"] / p["rows"] if p.get("rows") else float("nan") for p in series]
    axes[0].plot(starts, rate, marker="o", color="#b3261e")
    axes[0].set_ylabel("rows that disagree")
    axes[0].yaxis.set_major_formatter(_percent())
    if evaluation is not None:
        for name, colour, marker in (
            ("online_correct", "#1a73e8", "s"),  # a square behind the offline dot: both show
            ("offline_correct", "#11772d", "o"),
        ):
            accuracy = [
                p.get(name, 0) / p["labelled"] if p.get("labelled") else float("nan")
                for p in series
            ]
            label = f"{name.split('_')[0]} accuracy"
            size = 9 if marker == "s" else 5
            axes[1].plot(starts, accuracy, marker=marker, ms=size, color=colour, label=label)
        axes[1].set_ylabel("accuracy")
        axes[1].yaxis.set_major_formatter(_percent())
        axes[1].legend(loc="lower left")
    if len(starts) == 1:  # one bucket: a day either side would hide it
        width = timedelta(seconds=series[0]["seconds"])
        axes[-1].set_xlim(starts[0] - 2 * width, starts[0] + 3 * width)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    title = "Over time" if evaluation is None else "Over time: skew and accuracy"
    return f"<h2>{title}</h2><div class=charts id=timeline>{_png(figure, title)}</div>"


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0)


def _histograms(report: SkewReport) -> str:
    drawn = sorted(
        (f for f in report.features if f.histogram),
        key=lambda f: (-(f.psi or 0.0), -f.mismatch_rate, f.feature),
    )[:HISTOGRAMS]
    if not drawn:
        why = "no training set given (--training)" if report.training is None else "no values"
        return f"<h2>Served against training</h2><p class=muted>{why}</p>"
    images = []
    for feature in drawn:
        assert feature.histogram is not None
        figure = _figure(5.5, 2.8)
        axes = figure.subplots()
        data = feature.histogram
        if "edges" in data:
            edges = data["edges"]
            widths = [b - a for a, b in itertools.pairwise(edges)]
            axes.bar(
                edges[:-1],
                data["training"],
                widths,
                align="edge",
                alpha=0.45,
                color="#5b6474",
                label="training",
            )
            axes.step(edges[:-1], data["served"], where="post", color="#b3261e", label="served")
        else:
            labels = [str(label)[:18] for label in data["labels"]]
            positions = range(len(labels))
            axes.bar(
                [p - 0.2 for p in positions],
                data["training"],
                0.4,
                color="#5b6474",
                label="training",
            )
            axes.bar(
                [p + 0.2 for p in positions], data["served"], 0.4, color="#b3261e", label="served"
            )
            axes.set_xticks(list(positions), labels, rotation=30, ha="right")
        psi = "" if feature.psi is None else f"  PSI {feature.psi:.3f}"
        axes.set_title(f"{feature.feature}{psi}", fontsize=10)
        axes.yaxis.set_major_formatter(_percent())
        axes.legend(fontsize=8)
        images.append(_png(figure, f"served and training values of {feature.feature}"))
    return (
        f"<h2>Served against training: the {len(drawn)} furthest apart</h2>"
        f"<p class=muted>training set: {html.escape(report.training or '')}</p>"
        f"<div class=charts id=histograms>{''.join(images)}</div>"
    )


def _freshness(report: SkewReport) -> str:
    rows = "".join(
        f"<tr><td><code>{html.escape(f.view)}</code></td><td>{f.served:,}</td>"
        f"<td>{_age(f.p50_s)}</td><td>{_age(f.p99_s)}</td><td>{_age(f.max_s)}</td></tr>"
        for f in report.freshness
    )
    if not rows:
        return ""
    return (
        "<h2>Age of served values</h2><table id=freshness><thead><tr><th>view</th>"
        "<th>served</th><th>p50</th><th>p99</th><th>max</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.1f} s"


def _explanations(evaluation: EvaluationReport) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><code>{e(x.feature)}</code></td><td>{x.with_differing_predictions:,}</td>"
        f"<td>{x.with_same_predictions:,}</td></tr>"
        for x in evaluation.explanations
    )
    examples = "".join(
        f"<tr><td><code>{e(str(x['request_id']))}</code></td><td>{x['row']}</td>"
        f"<td>{e(_shown(x['online']))}</td><td>{e(_shown(x['offline']))}</td>"
        f"<td>{e(_shown(x['label']))}</td>"
        f"<td>{e(', '.join(x['features_that_disagree']))}</td></tr>"
        for x in evaluation.examples
    )
    out = "<h2>Why predictions differ</h2>"
    if not evaluation.differing:
        return out + "<p class=pass>online and offline predictions agree on every read</p>"
    out += (
        "<p class=muted>features that disagreed in the rows whose predictions differ</p>"
        "<table id=explanations><thead><tr><th>feature</th><th>rows with differing "
        "predictions</th><th>rows with the same prediction</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return out + (
        "<table id=prediction-examples><thead><tr><th>request</th><th>row</th><th>online</th>"
        "<th>offline</th><th>label</th><th>features that disagree</th></tr></thead>"
        f"<tbody>{examples}</tbody></table>"
    )


def _examples(features: list[FeatureSkew]) -> str:
    e = html.escape
    sections = []
    for i, feature in enumerate(features):
        if not feature.examples:
            continue
        rows = "".join(
            f"<tr><td><code>{e(x['request_id'])}</code></td><td>{e(x['requested_at'])}</td>"
            f"<td><code>{e(_shown(x['entity']))}</code></td><td>{e(_shown(x['online']))}</td>"
            f"<td>{e(_shown(x['offline']))}</td><td>{e(x['kind'])}</td></tr>"
            for x in feature.examples
        )
        sections.append(
            f'<h3 id="examples-{i}"><code>{e(feature.feature)}</code></h3><table><thead><tr>'
            "<th>request</th><th>read at</th><th>entity</th><th>online</th><th>offline</th>"
            f"<th>kind</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return "<h2>Example entities</h2>" + "".join(sections) if sections else ""


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)

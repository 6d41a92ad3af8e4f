"""The skew report is one self-contained HTML file that renders in a real browser without an
error, shows its charts, and holds hostile names as text, never as markup."""

from __future__ import annotations

import html.parser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datalayer.categories.feature_evaluation import EvaluationReport, Explanation
from datalayer.categories.feature_skew import (
    FeatureSkew,
    Freshness,
    SkewReport,
    Thresholds,
    Timeline,
    _Distribution,
)
from datalayer.cli.skew_report import HISTOGRAMS, write_html
from tests.browser import blank, open_in_chromium

HOSTILE = '</code><script>alert("x")</script><img src=x onerror=alert(1)>'


def _report() -> tuple[SkewReport, EvaluationReport]:
    """A report with every section: numeric and categorical distributions, a timeline of
    three hours, examples, freshness and an evaluation; names and values hostile."""
    rng = np.random.default_rng(5)
    features = []
    for i in range(8):
        name = f"view__f{i}" if i else f"view__{HOSTILE}"
        skew = FeatureSkew(name, rows=1000, equal=1000 - 10 * i, mismatches=10 * i)
        distribution = _Distribution(pd.Series(rng.normal(size=5000)))
        distribution.add(pd.Series(rng.normal(i / 4, size=1000)))
        distribution.finish(skew)
        features.append(skew)
    kinds = FeatureSkew("view__kind", rows=1000, equal=1000)
    categorical = _Distribution(pd.Series(["a", "b", HOSTILE] * 100))
    categorical.add(pd.Series(["a", "a", "c"] * 100))
    categorical.finish(kinds)
    features[3].examples = [
        {
            "request_id": HOSTILE,
            "requested_at": "2026-11-20T12:00:00+00:00",
            "entity": {"service_id": HOSTILE},
            "online": HOSTILE,
            "offline": None,
            "kind": "different",
        }
    ]
    timeline = Timeline()
    start = 1_795_000_000
    for hour in range(3):
        seconds = np.full(100, start + 3600 * hour)
        timeline.add(seconds, rows=np.ones(100), disagreeing=np.arange(100) < 5 * hour)
        timeline.add(
            seconds,
            labelled=np.ones(100),
            online_correct=np.arange(100) < 80 - 5 * hour,
            offline_correct=np.arange(100) < 82,
            predictions_differ=np.arange(100) < 2 * hour,
        )
    report = SkewReport(
        HOSTILE,
        9000,
        300,
        Thresholds(max_ks=0.3),
        sorted([*features, kinds], key=lambda f: -f.mismatch_rate),
        [Freshness("view", 9000, 30.0, 3600.0, 7200.0)],
        HOSTILE,
        ["view__f7: 70 of 1,000 rows disagree (7.0000% > 0.1000%)"],
        timeline,
    )
    evaluation = EvaluationReport(
        HOSTILE,
        "busy v1",
        rows=300,
        labelled=300,
        online_correct=225,
        offline_correct=246,
        differing=6,
        explanations=[Explanation(f"view__{HOSTILE}", 6, 1)],
        examples=[
            {
                "request_id": HOSTILE,
                "row": 0,
                "online": 1,
                "offline": 0,
                "label": 0,
                "features_that_disagree": [HOSTILE],
            }
        ],
    )
    return report, evaluation


#: The features' order as written, then after one and two clicks on the KS header.
SORT_BY_CLICKS = """(() => {
  const names = () => Array.from(document.querySelectorAll("#features tbody tr"),
                                 row => row.cells[0].dataset.value);
  const header = Array.from(document.querySelectorAll("#features th"))
                      .find(th => th.textContent === "KS");
  const written = names();
  header.click();
  const descending = names();
  header.click();
  return [written, descending, names()];
})()"""


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_report_holds_hostile_names_as_text_and_needs_no_network(tmp_path: Path) -> None:
    report, evaluation = _report()
    page = tmp_path / "report.html"
    write_html(page, report, evaluation, source=HOSTILE)
    text = page.read_text()
    parser = _Tags()
    parser.feed(text)
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("script") == 1  # ours, the table's sorting; none from a name
    images = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert all(set(a) == {"alt", "src"} for a in images)  # no onerror from a name
    assert all((a["src"] or "").startswith("data:image/png;base64,") for a in images)
    assert len(images) == 1 + HISTOGRAMS  # the timeline, then the furthest distributions
    assert "http://" not in text and "https://" not in text
    assert html.escape(HOSTILE) in text
    assert not list(tmp_path.glob(".*.tmp"))  # written aside, then renamed


@pytest.mark.timeout(180)
def test_the_report_renders_in_chromium_with_its_charts_and_no_error(tmp_path: Path) -> None:
    report, evaluation = _report()
    page = tmp_path / "report.html"
    write_html(page, report, evaluation, source="a test")
    shown = open_in_chromium(
        page, tmp_path / "report.png", width=1280, height=2400, script=SORT_BY_CLICKS
    )
    assert shown.errors == [], shown.errors
    # sorted by share as written; by KS, highest first, after one click on its header; lowest
    # first after another
    written, by_ks, by_ks_ascending = shown.evaluated
    assert written[:2] == ["view__f7", "view__f6"]
    ks = {f.feature: f.ks or -1 for f in report.features}
    assert by_ks == sorted(ks, key=lambda name: -ks[name])
    assert by_ks_ascending == list(reversed(by_ks))
    assert shown.title == f"skew of {HOSTILE}"
    assert not blank(shown.screenshot)
    # the charts are drawn: the histograms' training bars (Matplotlib's grey at 45% on
    # white) and the served lines (the report's red) cover thousands of pixels
    from PIL import Image

    with Image.open(shown.screenshot) as image:
        colours = dict((c, n) for n, c in image.convert("RGB").getcolors(1 << 24) or [])
    assert colours.get((181, 185, 192), 0) > 10_000, "no histogram bars"
    assert colours.get((179, 38, 30), 0) > 1_000, "no served lines"

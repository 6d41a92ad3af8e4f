"""The value comparison and the distribution statistics of ``datalayer skew``, on hand-built
columns: what counts as equal, as missing on one side, and how PSI and KS come out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from datalayer.categories.feature_evaluation import Evaluation, Labels, Predictions
from datalayer.categories.feature_skew import (
    FeatureSkew,
    SkewReport,
    Thresholds,
    Timeline,
    _compare_column,
    _Distribution,
    _failures,
)
from datalayer.errors import DataLayerError


def compared(online: list[object], offline: list[object], tolerance: float = 1e-9) -> FeatureSkew:
    served = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(len(online))],
            "requested_at": pd.Timestamp("2026-11-20T12:00:00Z"),
            "k": [f"e{i}" for i in range(len(online))],
            "v__f": online,
        }
    )
    skew = FeatureSkew("v__f")
    _compare_column(skew, served, pd.DataFrame({"v__f": offline}), "v__f", ["k"], tolerance)
    return skew


def test_floats_within_the_tolerance_are_equal_integers_and_strings_exactly() -> None:
    skew = compared([1.0, 2.0 + 1e-12, 3.5, 10, None, 4.0], [1.0, 2.0, 3.5 + 1e-6, 11, None, None])
    assert (skew.equal, skew.mismatches, skew.both_missing, skew.online_only) == (2, 2, 1, 1)
    assert skew.largest_difference == pytest.approx(1.0)
    assert [e["entity"]["k"] for e in skew.examples] == ["e2", "e3", "e5"]
    assert [e["kind"] for e in skew.examples] == ["different", "different", "missing offline"]


def test_whole_numbers_are_compared_exactly_whatever_the_tolerance() -> None:
    skew = compared([2**53 + 2, 7], [2**53 + 4, 7], tolerance=0.5)
    assert (skew.equal, skew.mismatches) == (1, 1)


def test_strings_lists_and_missing_values_on_either_side() -> None:
    skew = compared(["a", "b", None, ["x", 1], "é\x00"], ["a", "c", "z", ["x", 1], "é\x00"])
    assert (skew.equal, skew.mismatches, skew.offline_only, skew.online_only) == (3, 1, 1, 0)
    assert skew.largest_difference is None


def test_nan_on_both_sides_is_missing_not_a_mismatch() -> None:
    skew = compared([math.nan, 1.5], [None, 1.5])
    assert (skew.both_missing, skew.equal, skew.mismatches) == (1, 1, 0)


def test_psi_and_ks_are_near_zero_for_the_same_distribution_and_large_when_shifted() -> None:
    rng = np.random.default_rng(3)
    training = pd.Series(rng.normal(size=20_000))
    same, shifted = FeatureSkew("same"), FeatureSkew("shifted")
    for skew, served in ((same, rng.normal(size=20_000)), (shifted, rng.normal(1, size=20_000))):
        distribution = _Distribution(training)
        for part in np.array_split(served, 7):  # chunk by chunk, as a long log is read
            distribution.add(pd.Series(part))
        distribution.finish(skew)
    assert same.psi is not None and same.psi < 0.01 and same.ks is not None and same.ks < 0.03
    assert shifted.psi is not None and shifted.psi > 0.5
    assert shifted.ks == pytest.approx(0.38, abs=0.03)  # normal(1) vs normal(0): 2 Phi(0.5) - 1
    # the report's histograms: shares over the same bins, each summing to 1
    for skew in (same, shifted):
        assert skew.histogram is not None and len(skew.histogram["edges"]) == 31
        assert sum(skew.histogram["training"]) == pytest.approx(1)
        assert sum(skew.histogram["served"]) == pytest.approx(1)
    # shifted right by one standard deviation: its served mass sits in the higher bins
    middle = len(shifted.histogram["served"]) // 2
    assert sum(shifted.histogram["served"][middle:]) > 0.8


def test_a_timeline_keeps_its_counts_in_bounded_buckets() -> None:
    timeline = Timeline()
    start = 1_767_225_600
    timeline.add(np.array([start, start + 1, start + 1]), rows=np.ones(3), bad=[1, 0, 1])
    assert timeline.width == 1
    assert [(p["seconds"], p["rows"], p["bad"]) for p in timeline.series()] == [
        (1, 1, 1),
        (1, 2, 1),
    ]
    week = start + 7 * 86_400
    timeline.add(np.array([week]), rows=np.ones(1), bad=[0])
    assert timeline.width == 512  # a week in at most 2,048 buckets
    assert sum(len(c) for c in timeline.counts.values()) <= 2 * 2048
    series = timeline.series(points=10)
    assert len(series) <= 10 and sum(p["rows"] for p in series) == 4
    assert series[0]["start"] <= "2026-01-01T00:00:00+00:00" and series[-1]["bad"] == 0


def test_category_shares_report_the_largest_changes() -> None:
    distribution = _Distribution(pd.Series(["a"] * 50 + ["b"] * 50))
    distribution.add(pd.Series(["a"] * 90 + ["c"] * 10))
    skew = FeatureSkew("s")
    distribution.finish(skew)
    assert skew.share_changes == {"b": -0.5, "a": 0.4, "c": 0.1}
    assert skew.histogram == {
        "labels": ["b", "a", "c"],
        "training": [0.5, 0.5, 0.0],
        "served": [0.0, 0.9, 0.1],
    }
    assert skew.psi is None and skew.ks is None


def test_each_threshold_names_the_feature_that_crossed_it() -> None:
    bad = FeatureSkew("v__bad", rows=1000, equal=990, mismatches=10, psi=0.5, ks=0.3)
    good = FeatureSkew("v__good", rows=1000, equal=1000, psi=0.01, ks=0.01)
    report = SkewReport(
        "p", 2000, 10, Thresholds(max_ks=0.2), [bad, good], [], None, [], Timeline()
    )
    assert _failures(report) == [
        "v__bad: 10 of 1,000 rows disagree (1.0000% > 0.1000%)",
        "v__bad: PSI 0.500 > 0.2",
        "v__bad: KS 0.300 > 0.2",
    ]


def _predictions(*rows: tuple[str, str, str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "version", "request_id", "row", "prediction"])


def test_predictions_of_one_model_and_version_or_a_clear_error() -> None:
    landed = _predictions(("a", "v1", "r1", 0, "1"), ("a", "v2", "r1", 0, "0.5"))
    assert Predictions.of([landed], "a", "v2").values == {("r1", 0): 0.5}
    with pytest.raises(DataLayerError, match=r"several models are logged \(a v1, a v2\)"):
        Predictions.of([landed], None, None)
    with pytest.raises(DataLayerError, match="no logged predictions of model b"):
        Predictions.of([landed], "b", None)
    text = _predictions(("", "", "r1", 0, '"busy"'), ("", "", "r1", 1, "not json"))
    assert Predictions.of([text], None, None).values == {("r1", 0): "busy", ("r1", 1): "not json"}


def test_labels_that_cannot_be_joined_are_counted_not_used() -> None:
    labels = Labels()
    for record in (
        {"request_id": "r1", "row": 2, "label": 1},
        {"request_id": "r1", "label": 0},  # row 0 by default
        {"request_id": "r2", "row": True, "label": 1},  # a bool is no row
        {"request_id": 7, "label": 1},
        {"request_id": "r3", "row": 0},  # no label
        "not a record",
    ):
        labels.add(record, "label")
    assert labels.values == {("r1", 2): 1, ("r1", 0): 0}
    assert (labels.read, labels.unusable) == (6, 4)


def test_a_model_that_fails_or_miscounts_is_named() -> None:
    predictions = Predictions({("r", 0): 1}, "m")
    served = pd.DataFrame({"request_id": ["r"], "row": [0], "v__f": [1]})
    for model, message in (
        (lambda frame: 1 / 0, "model busy raised ZeroDivisionError on 1 point-in-time rows"),
        (lambda frame: [1, 2], "model busy returned 2 predictions for 1 rows"),
    ):
        evaluation = Evaluation(model, "busy", predictions, Labels(), 1e-9)
        with pytest.raises(DataLayerError, match=message):
            evaluation.add(served, served, {}, np.array([0]), Timeline())

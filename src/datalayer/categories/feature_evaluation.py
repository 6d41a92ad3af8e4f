"""Online against offline accuracy: what a model predicted from the features it was served,
what it predicts from the point-in-time features of the same reads, and the labels that came
later.

The skew comparison (``feature_skew.compare``) hands each compared chunk of logged reads here
with the rows ``historical()`` rebuilt for them. The model function (a DataFrame of those
rows in, one prediction per row out) is run once per chunk on the offline rows; its output is
compared with the prediction logged online (``FeatureView.log_prediction``) and both with the
label of the read, joined on the read's request id and row. Where the two predictions differ,
the features that disagreed in those rows are what explains it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from datalayer.categories.feature_skew import Timeline
from datalayer.errors import DataLayerError

#: The field of a label record holding the label, unless told otherwise.
LABEL_FIELD = "label"
#: Features listed as explaining differing predictions.
EXPLAINED = 10

Key = tuple[str, int]


@dataclass
class Labels:
    """Labels by (request id, row), and how many records could not be used."""

    values: dict[Key, Any] = field(default_factory=dict)
    read: int = 0
    unusable: int = 0

    def add(self, record: Any, label_field: str) -> None:
        self.read += 1
        if not isinstance(record, dict):
            self.unusable += 1
            return
        request_id, row = record.get("request_id"), record.get("row", 0)
        if (
            not isinstance(request_id, str)
            or not isinstance(row, int)
            or isinstance(row, bool)
            or label_field not in record
        ):
            self.unusable += 1
            return
        self.values[(request_id, row)] = record[label_field]


def read_labels(dl: Any, pattern: str, label_field: str, idle_timeout: float) -> Labels:
    """Every label record of a streaming pattern (read from its start, without a consumer
    group, until none came for ``idle_timeout`` seconds) or a transactional one (every row).
    A record names the read's ``request_id``, its ``row`` (0 when absent) and the label."""
    labels = Labels()
    category = dl.pattern(pattern).category
    if category == "streaming":
        for message in dl.stream(pattern).consume(
            None, start="earliest", idle_timeout=idle_timeout, batch_size=1000
        ):
            labels.add(message.value, label_field)
    elif category == "transactional":
        for row in dl.transactional(pattern).query():
            labels.add(row, label_field)
    else:
        raise DataLayerError(
            f"--labels: pattern '{pattern}' is {category}; labels come from a streaming or "
            "transactional pattern"
        )
    return labels


@dataclass
class Explanation:
    """One feature: in how many rows whose predictions differed it disagreed too, and in how
    many whose predictions agreed."""

    feature: str
    with_differing_predictions: int = 0
    with_same_predictions: int = 0


@dataclass
class EvaluationReport:
    model: str
    predicted_by: str
    rows: int = 0
    unpredicted: int = 0
    labelled: int = 0
    online_correct: int = 0
    offline_correct: int = 0
    differing: int = 0
    labels_read: int = 0
    labels_unusable: int = 0
    explanations: list[Explanation] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def online_accuracy(self) -> float | None:
        return self.online_correct / self.labelled if self.labelled else None

    @property
    def offline_accuracy(self) -> float | None:
        return self.offline_correct / self.labelled if self.labelled else None

    @property
    def differing_share(self) -> float:
        return self.differing / self.rows if self.rows else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "online_accuracy": self.online_accuracy,
            "offline_accuracy": self.offline_accuracy,
            "differing_share": self.differing_share,
        }


class Evaluation:
    """Accumulates one model's evaluation chunk by chunk (``feature_skew.Evaluating``)."""

    def __init__(
        self,
        model: Callable[[Any], Any],
        model_name: str,
        predictions: Predictions,
        labels: Labels,
        tolerance: float,
    ) -> None:
        self.model = model
        self.predictions = predictions
        self.labels = labels
        self.tolerance = tolerance
        self.report = EvaluationReport(
            model_name,
            predictions.chosen,
            labels_read=labels.read,
            labels_unusable=labels.unusable,
        )
        self._explained: dict[str, Explanation] = {}

    def add(
        self, served: Any, offline: Any, masks: dict[str, Any], seconds: Any, timeline: Timeline
    ) -> None:
        import numpy as np

        keys = list(zip(served["request_id"].astype(str), served["row"].astype(int), strict=True))
        online = [self.predictions.values.get(k) for k in keys]
        predicted = np.array([k in self.predictions.values for k in keys], dtype=bool)
        labelled = predicted & np.array([k in self.labels.values for k in keys], dtype=bool)
        label = [self.labels.values.get(k) for k in keys]
        recomputed = self._predict(offline)
        differ = predicted & ~_equal(online, recomputed, self.tolerance)
        online_ok = labelled & _equal(online, label, self.tolerance)
        offline_ok = labelled & _equal(recomputed, label, self.tolerance)
        report = self.report
        report.rows += int(predicted.sum())
        report.unpredicted += int((~predicted).sum())
        report.labelled += int(labelled.sum())
        report.online_correct += int(online_ok.sum())
        report.offline_correct += int(offline_ok.sum())
        report.differing += int(differ.sum())
        timeline.add(
            seconds,
            labelled=labelled,
            online_correct=online_ok,
            offline_correct=offline_ok,
            predictions_differ=differ,
        )
        for feature, mask in masks.items():
            explained = self._explained.setdefault(feature, Explanation(feature))
            explained.with_differing_predictions += int((mask & differ).sum())
            explained.with_same_predictions += int((mask & predicted & ~differ).sum())
        for i in np.flatnonzero(differ)[: 5 - len(report.examples)]:
            report.examples.append(
                {
                    "request_id": keys[i][0],
                    "row": keys[i][1],
                    "online": online[i],
                    "offline": _plain(recomputed[i]),
                    "label": label[i],
                    "features_that_disagree": [f for f, m in masks.items() if m[i]],
                }
            )

    def finish(self) -> EvaluationReport:
        ranked = sorted(
            self._explained.values(),
            key=lambda e: (-e.with_differing_predictions, e.with_same_predictions, e.feature),
        )
        self.report.explanations = [e for e in ranked if e.with_differing_predictions][:EXPLAINED]
        return self.report

    def _predict(self, offline: Any) -> list[Any]:
        """The model's predictions for the offline rows, as plain values."""
        try:
            out = self.model(offline.copy())
        except Exception as exc:
            raise DataLayerError(
                f"model {self.report.model} raised {type(exc).__name__} on {len(offline):,} "
                f"point-in-time rows: {exc}"
            ) from exc
        values = out.tolist() if hasattr(out, "tolist") else list(out)
        if len(values) != len(offline):
            raise DataLayerError(
                f"model {self.report.model} returned {len(values):,} predictions for "
                f"{len(offline):,} rows; it must return one per row"
            )
        return [_plain(v) for v in values]


@dataclass
class Predictions:
    """Online predictions by (request id, row), of one model and version."""

    values: dict[Key, Any]
    chosen: str

    @classmethod
    def of(cls, chunks: Iterable[Any], model: str | None, version: str | None) -> Predictions:
        """The landed predictions (``chunks`` of DataFrames) of ``model`` and ``version``;
        when neither is given, of the only model and version there are."""
        values: dict[tuple[str, str], dict[Key, Any]] = {}
        for chunk in chunks:
            for name, kind, request_id, row, prediction in zip(
                chunk["model"].fillna(""),
                chunk["version"].fillna(""),
                chunk["request_id"].astype(str),
                chunk["row"].astype(int),
                chunk["prediction"].tolist(),
                strict=True,
            ):
                values.setdefault((name, kind), {})[(request_id, row)] = _decoded(prediction)
        wanted = [
            pair
            for pair in values
            if (model is None or pair[0] == model) and (version is None or pair[1] == version)
        ]
        if len(wanted) == 1:
            name, kind = wanted[0]
            return cls(values[wanted[0]], f"{name or '(unnamed)'} {kind}".strip())
        found = ", ".join(f"{n or '(unnamed)'} {v}".strip() for n, v in sorted(values)) or "none"
        if not wanted:
            raise DataLayerError(
                f"no logged predictions of model {model or 'any'} version {version or 'any'}; "
                f"logged: {found} (dl.features(P).log_prediction, then land them)"
            )
        raise DataLayerError(
            f"predictions of several models are logged ({found}): name one with --model-name "
            "and --model-version"
        )


def _decoded(text: Any) -> Any:
    """A landed prediction (JSON text; unreadable text stays as it is)."""
    if not isinstance(text, str):
        return _plain(text)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _equal(a: list[Any], b: list[Any], tolerance: float) -> Any:
    """Row by row: equal values (numbers within ``tolerance`` of the larger; missing on
    either side is not equal)."""
    import numpy as np

    return np.array([_same(x, y, tolerance) for x, y in zip(a, b, strict=True)], dtype=bool)


def _same(x: Any, y: Any, tolerance: float) -> bool:
    if x is None or y is None:
        return False
    numbers = (int, float)
    if isinstance(x, numbers) and isinstance(y, numbers):
        return abs(x - y) <= tolerance * max(1.0, abs(x), abs(y))
    return bool(x == y)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict):
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

"""Training/serving skew: what a feature pattern served, compared with what its training set
would have held at the same instant, and with the training set a model was built on.

The logged reads (``feature_log``, landed) say, per entity and instant, every value served and
its view's event time. ``historical()`` rebuilds the same rows at the same instants; every
feature is compared value by value (integers and strings exactly, floats within a stated
tolerance). Served values are also binned against a training set (population stability index,
a Kolmogorov-Smirnov statistic over its quantiles, and category shares), so drift is seen even
where serving and training agree. Everything is accumulated chunk by chunk: memory depends on
the chunk size and the number of features, not on the size of the log.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from datalayer.categories.feature import TIMESTAMP, FeatureView
from datalayer.errors import DataLayerError

#: Columns of a landed log row that are not entity keys or features.
META = (
    "request_id",
    "row",
    "requested_at",
    "logged_at",
    "model",
    "version",
    "features_read",
    "variant",
)
STAMP_SUFFIX = "__event_timestamp"
#: Example mismatches kept per feature, for the report's links to entities.
EXAMPLES = 5
#: Bins of the population stability index (training deciles) and of the KS statistic.
PSI_BINS = 10
KS_QUANTILES = 1000
#: Share floor of an empty bin in the PSI, so one empty bin does not make it infinite.
PSI_FLOOR = 1e-4
#: Distinct values kept per categorical feature; the rest are counted as one.
MAX_CATEGORIES = 1000
#: Log rows compared at a time (memory grows with it, not with the log).
CHUNK_ROWS = 250_000


#: Time buckets a timeline keeps; past it, its buckets are merged two by two.
MAX_BUCKETS = 2048
#: Bins of the served-vs-training histograms the report draws.
HISTOGRAM_BINS = 30


class Timeline:
    """Counts per time bucket (rows, rows that disagree, correct predictions...) in bounded
    memory: a bucket starts one second wide and doubles whenever the log spans more than
    ``MAX_BUCKETS`` of them."""

    def __init__(self) -> None:
        self.width = 1
        self.counts: dict[str, dict[int, float]] = {}

    def add(self, seconds: Any, **counts: Any) -> None:
        """Add each row's counts (arrays aligned with ``seconds``, epoch seconds)."""
        import numpy as np

        if not len(seconds):
            return
        known = [b for c in self.counts.values() for b in c]
        low = min([int(seconds.min()) // self.width, *known])
        high = max([int(seconds.max()) // self.width, *known])
        while high - low >= MAX_BUCKETS:
            self._widen()
            low, high = low // 2, high // 2
        buckets, inverse = np.unique(seconds // self.width, return_inverse=True)
        for name, values in counts.items():
            sums = np.bincount(inverse, weights=np.asarray(values, dtype=float))
            target = self.counts.setdefault(name, {})
            for bucket, total in zip(buckets.tolist(), sums.tolist(), strict=True):
                target[bucket] = target.get(bucket, 0.0) + total

    def _widen(self) -> None:
        self.width *= 2
        for name, counts in self.counts.items():
            merged: dict[int, float] = {}
            for bucket, total in counts.items():
                merged[bucket // 2] = merged.get(bucket // 2, 0.0) + total
            self.counts[name] = merged

    def series(self, points: int = 60) -> list[dict[str, Any]]:
        """At most ``points`` buckets, oldest first: their start (ISO), width in seconds and
        every count."""
        buckets = sorted({b for c in self.counts.values() for b in c})
        if not buckets:
            return []
        step = max(1, -(-(buckets[-1] - buckets[0] + 1) // points))
        out: dict[int, dict[str, float]] = {}
        for name, counts in self.counts.items():
            for bucket, total in counts.items():
                slot = out.setdefault((bucket - buckets[0]) // step, {})
                slot[name] = slot.get(name, 0.0) + total
        return [
            {
                "start": datetime.fromtimestamp(
                    (buckets[0] + slot * step) * self.width, tz=UTC
                ).isoformat(),
                "seconds": step * self.width,
                **{name: int(found.get(name, 0)) for name in sorted(self.counts)},
            }
            for slot, found in sorted(out.items())
        ]


class Evaluating(Protocol):
    """What ``compare`` hands each compared chunk to (``feature_evaluation.Evaluation``)."""

    def add(
        self, served: Any, offline: Any, masks: dict[str, Any], seconds: Any, timeline: Timeline
    ) -> None: ...


def _seconds(column: Any) -> Any:
    """Instants as integer epoch seconds."""
    return _utc(column).dt.as_unit("ns").astype("int64").to_numpy() // 1_000_000_000


@dataclass
class Thresholds:
    """When ``skew`` fails (exit 2): a share of rows that disagree, a PSI, a KS statistic."""

    max_mismatch: float = 0.001
    max_psi: float = 0.2
    max_ks: float | None = None
    float_tolerance: float = 1e-9


@dataclass
class FeatureSkew:
    """One feature's comparison."""

    feature: str
    rows: int = 0
    equal: int = 0
    mismatches: int = 0
    online_only: int = 0
    offline_only: int = 0
    both_missing: int = 0
    largest_difference: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    psi: float | None = None
    ks: float | None = None
    share_changes: dict[str, float] | None = None
    #: Served against training shares: numeric bins (``edges``) or top categories
    #: (``labels``), for the report's charts.
    histogram: dict[str, list[Any]] | None = None

    @property
    def disagreeing(self) -> int:
        return self.mismatches + self.online_only + self.offline_only

    @property
    def mismatch_rate(self) -> float:
        return self.disagreeing / self.rows if self.rows else 0.0


@dataclass
class Freshness:
    """Age of the served values of one view (requested instant minus event time), seconds."""

    view: str
    served: int = 0
    p50_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None


@dataclass
class SkewReport:
    pattern: str
    rows: int
    reads: int
    thresholds: Thresholds
    features: list[FeatureSkew]
    freshness: list[Freshness]
    training: str | None
    failures: list[str]
    timeline: Timeline
    #: The rollout variant (feature service) whose reads alone were compared, if one was.
    variant: str | None = None
    #: Logged rows of variants the pattern no longer serves (its rollout was removed), by
    #: variant: not compared, since nothing rebuilds their features.
    not_compared: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def subject(self) -> str:
        """What was compared, as the report's title names it."""
        return f"{self.pattern} ({self.variant})" if self.variant else self.pattern

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (``--json``)."""
        return {
            "pattern": self.pattern,
            "variant": self.variant,
            "not_compared": self.not_compared,
            "passed": self.passed,
            "failures": self.failures,
            "rows": self.rows,
            "reads": self.reads,
            "training_set": self.training,
            "thresholds": asdict(self.thresholds),
            "features": [{**asdict(f), "mismatch_rate": f.mismatch_rate} for f in self.features],
            "freshness": [asdict(f) for f in self.freshness],
            "timeline": self.timeline.series(),
        }


class _Distribution:
    """Served values of one feature, counted against the training set's bins."""

    def __init__(self, training: Any) -> None:
        import numpy as np

        values = training.dropna()
        self.numeric = bool(len(values)) and _is_numeric(values)
        if self.numeric:
            data = np.sort(values.to_numpy(dtype=float))
            self.training_count = len(data)
            inner = np.quantile(data, np.linspace(0, 1, PSI_BINS + 1)[1:-1], method="inverted_cdf")
            self.psi_edges = np.unique(inner)
            self.training_psi = np.bincount(
                np.searchsorted(self.psi_edges, data, side="right"),
                minlength=len(self.psi_edges) + 1,
            )
            quantiles = np.linspace(0, 1, KS_QUANTILES + 1)
            self.ks_edges = np.unique(np.quantile(data, quantiles, method="inverted_cdf"))
            self.training_cdf = np.searchsorted(data, self.ks_edges, side="right") / len(data)
            low, high = np.quantile(data, [0.005, 0.995])
            self.hist_edges = np.linspace(low, high if high > low else low + 1, HISTOGRAM_BINS + 1)
            self.training_hist = self._binned(data)
            self.served_hist = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
            self.served_psi = np.zeros(len(self.psi_edges) + 1, dtype=np.int64)
            self.served_ks = np.zeros(len(self.ks_edges) + 1, dtype=np.int64)
        else:
            shares = values.astype(str).value_counts(normalize=True)
            self.training_shares = {str(k): float(v) for k, v in shares.items()}
            self.served_counts: dict[str, int] = {}
        self.served = 0

    def add(self, served: Any) -> None:
        import numpy as np

        values = served.dropna()
        if not len(values):
            return
        if self.numeric:
            try:
                data = values.to_numpy(dtype=float)
            except (TypeError, ValueError):
                return  # not numbers online: the value comparison reports it
            self.served_psi += np.bincount(
                np.searchsorted(self.psi_edges, data, side="right"),
                minlength=len(self.served_psi),
            )
            self.served_ks += np.bincount(
                np.searchsorted(self.ks_edges, data, side="right"),
                minlength=len(self.served_ks),
            )
            self.served_hist += self._binned(data)
        else:
            for value, count in values.astype(str).value_counts().items():
                key = str(value)
                if key not in self.served_counts and len(self.served_counts) >= MAX_CATEGORIES:
                    key = "(other)"
                self.served_counts[key] = self.served_counts.get(key, 0) + int(count)
        self.served += len(values)

    def _binned(self, data: Any) -> Any:
        """Counts in the histogram's bins, values outside them in the end bins."""
        import numpy as np

        inner = np.searchsorted(self.hist_edges, data, side="right") - 1
        return np.bincount(np.clip(inner, 0, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)

    def finish(self, skew: FeatureSkew) -> None:
        import numpy as np

        if not self.served:
            return
        if self.numeric:
            served = np.maximum(self.served_psi / self.served, PSI_FLOOR)
            trained = np.maximum(self.training_psi / self.training_count, PSI_FLOOR)
            skew.psi = float(np.sum((served - trained) * np.log(served / trained)))
            served_cdf = np.cumsum(self.served_ks)[: len(self.ks_edges)] / self.served
            skew.ks = float(np.max(np.abs(served_cdf - self.training_cdf)))
            skew.histogram = {
                "edges": [float(e) for e in self.hist_edges],
                "training": (self.training_hist / self.training_count).tolist(),
                "served": (self.served_hist / self.served).tolist(),
            }
        else:
            served_shares = {k: v / self.served for k, v in self.served_counts.items()}
            keys = set(served_shares) | set(self.training_shares)
            changes = {
                k: served_shares.get(k, 0.0) - self.training_shares.get(k, 0.0) for k in keys
            }
            top = sorted(changes.items(), key=lambda kv: -abs(kv[1]))[:10]
            skew.share_changes = {k: round(v, 6) for k, v in top}
            labels = [k for k, _ in top]
            skew.histogram = {
                "labels": labels,
                "training": [self.training_shares.get(k, 0.0) for k in labels],
                "served": [served_shares.get(k, 0.0) for k in labels],
            }


def _is_numeric(series: Any) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in series.head(1000))


def compare(
    view: FeatureView,
    chunks: Iterable[Any],
    *,
    thresholds: Thresholds,
    training: Any = None,
    training_name: str | None = None,
    evaluation: Evaluating | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> SkewReport:
    """Compare the landed log rows (``chunks`` of DataFrames) with ``view.historical()`` at
    the same instants, and their values with ``training`` (a DataFrame of ``view__feature``
    columns), if given; ``evaluation`` is handed each compared chunk with its offline rows
    (``datalayer evaluate``)."""
    import numpy as np

    timeline = Timeline()
    skews: dict[str, FeatureSkew] = {}
    distributions: dict[str, _Distribution] = {}
    ages: dict[str, list[Any]] = {}
    rows = 0
    reads: set[str] = set()
    gone: dict[str, int] = {}
    for served in _rechunked(chunks, CHUNK_ROWS):
        for read, variant, group in _groups(served):
            if variant is not None and variant not in view.variants():
                gone[variant] = gone.get(variant, 0) + len(group)  # a rollout since removed
                continue
            served_by = view if variant is None else view.variant(variant)
            offline, masks = _compare_group(
                served_by, group, read, (skews, distributions), training, thresholds.float_tolerance
            )
            disagree = np.logical_or.reduce([*masks.values(), np.zeros(len(group), dtype=bool)])
            seconds = _seconds(group["requested_at"])
            timeline.add(seconds, rows=np.ones(len(group)), disagreeing=disagree)
            if evaluation is not None and offline is not None:
                evaluation.add(group, offline, masks, seconds, timeline)
        requested = _utc(served["requested_at"])
        for column in [c for c in served.columns if c.endswith(STAMP_SUFFIX)]:
            stamps = _utc(served[column])
            age = (requested - stamps).dt.total_seconds().dropna().to_numpy()
            ages.setdefault(column.removesuffix(STAMP_SUFFIX), []).append(age)
        rows += len(served)
        reads.update(served["request_id"].astype(str))
        if on_chunk is not None:
            on_chunk(len(served))
    for feature, distribution in distributions.items():
        distribution.finish(skews[feature])
    freshness = []
    for name, parts in sorted(ages.items()):
        found = np.concatenate(parts) if parts else np.array([])
        entry = Freshness(name, len(found))
        if len(found):
            entry.p50_s, entry.p99_s = (float(q) for q in np.quantile(found, [0.5, 0.99]))
            entry.max_s = float(found.max())
        freshness.append(entry)
    report = SkewReport(
        view.pattern.name,
        rows,
        len(reads),
        thresholds,
        sorted(skews.values(), key=lambda s: -s.mismatch_rate),
        freshness,
        training_name,
        [],
        timeline,
        not_compared=gone,
    )
    report.failures = _failures(report)
    return report


#: Rows a training set built over a time range holds at most (entities are sampled past it).
TRAINING_ROWS = 1_000_000
#: Instants such a training set is built at, at most.
MAX_INSTANTS = 100_000


def training_over(
    view: FeatureView,
    chunks: Iterable[Any],
    since: datetime,
    until: datetime,
    step: timedelta,
    *,
    max_rows: int = TRAINING_ROWS,
) -> tuple[Any, str]:
    """The training set a model of this pattern would have been built on over [since,
    until): the point-in-time rows (``historical()``, TTLs applied) of the entities the log
    holds, every ``step``; entities are sampled (seeded) when that passes ``max_rows``.
    Returns it and a description for the report."""
    import numpy as np
    import pandas as pd

    if until <= since or step <= timedelta(0):
        raise DataLayerError(
            f"training range: {since.isoformat()} to {until.isoformat()} every {step} is empty"
        )
    if (until - since) / step > MAX_INSTANTS:
        raise DataLayerError(
            f"training range: {since.isoformat()} to {until.isoformat()} every {step} is more "
            f"than {MAX_INSTANTS:,} instants; take a longer step"
        )
    seen: list[Any] = []
    for chunk in chunks:
        inputs = [c for c in chunk.columns if c not in META and "__" not in c]
        seen.append(chunk[inputs].drop_duplicates())
    entities = pd.concat(seen, ignore_index=True).drop_duplicates() if seen else pd.DataFrame()
    instants = pd.date_range(since, until, freq=step, inclusive="left")
    if entities.empty or not len(instants):
        raise DataLayerError("training range: the log holds no entity to build it for")
    wanted = max(1, max_rows // len(instants))
    if len(entities) > wanted:
        rng = np.random.default_rng(0)
        entities = entities.iloc[np.sort(rng.choice(len(entities), wanted, replace=False))]
    entity_df = entities.merge(pd.DataFrame({TIMESTAMP: instants}), how="cross")
    built = view.historical(entity_df)
    said = (
        f"point-in-time rows of {len(entities):,} logged entities every {step} from "
        f"{since.isoformat()} to {until.isoformat()} ({len(built):,} rows)"
    )
    return built, said


def _groups(served: Any) -> Iterator[tuple[str | None, str | None, Any]]:
    """Rows of reads that asked for the same features of the same variant, compared
    together on those: (features read, comma-joined, or None when the log does not say; the
    variant, None for a read no rollout split; the rows). Usually that is every row."""
    labels = [
        served[column].fillna("").astype(str)
        for column in ("features_read", "variant")
        if column in served.columns
    ]
    if not labels or not len(served):
        yield None, None, served
        return
    label = labels[0] if len(labels) == 1 else labels[0] + "\x00" + labels[1]
    values = label.to_numpy()
    same = (values == values[0]).all()
    groups = [(values[0], served)] if same else served.groupby(label, sort=False)
    for _, group in groups:
        if group is not served:  # a part of the chunk (the chunk is indexed from 0)
            group = group.reset_index(drop=True)
        first = group.iloc[0]
        read = first["features_read"] if "features_read" in group.columns else None
        variant = first["variant"] if "variant" in group.columns else None
        yield read, (variant if isinstance(variant, str) and variant else None), group


def of_variant(chunks: Iterable[Any], variant: str, own: bool) -> Iterator[Any]:
    """The log's rows served by ``variant``; with ``own`` (the pattern's own features),
    those of reads no rollout split too."""
    for chunk in chunks:
        if "variant" not in chunk.columns:
            if own:
                yield chunk
            continue
        keep = chunk["variant"] == variant
        if own:
            keep |= chunk["variant"].isna()
        yield chunk[keep].reset_index(drop=True)


def _utc(column: Any) -> Any:
    """A column of instants as UTC times (converted only when it is not already)."""
    import pandas as pd

    if isinstance(column.dtype, pd.DatetimeTZDtype) and str(column.dtype.tz) == "UTC":
        return column
    return pd.to_datetime(column, utc=True)


def _rechunked(chunks: Iterable[Any], rows: int) -> Iterator[Any]:
    """The log's rows in DataFrames of about ``rows`` rows: each one costs a ``historical()``
    call, whose fixed part (reading the feature files' columns) small chunks would repeat."""
    import pandas as pd

    pending: list[Any] = []
    count = 0
    for chunk in chunks:
        if len(chunk):
            pending.append(chunk)
            count += len(chunk)
        if count >= rows:
            yield pd.concat(pending, ignore_index=True)
            pending, count = [], 0
    if pending:
        yield pd.concat(pending, ignore_index=True)


def _compare_group(
    view: FeatureView,
    served: Any,
    read: str | None,
    found: tuple[dict[str, FeatureSkew], dict[str, _Distribution]],
    training: Any,
    tolerance: float,
) -> tuple[Any, dict[str, Any]]:
    """Rows of reads that asked for the same features (``read``: their names, comma-joined;
    None when the log does not say: every feature column) against ``historical()`` at their
    instants, with the entity columns those reads carried. Returns the offline rows and, per
    feature, which rows disagree."""

    skews, distributions = found
    columns = [c for c in served.columns if c not in META and not c.endswith(STAMP_SUFFIX)]
    if read is None:
        features = [c for c in columns if "__" in c]
    else:
        features = [c for c in str(read).split(",") if c in served.columns]
    if not features:
        return None, {}
    inputs = [c for c in columns if "__" not in c and served[c].notna().any()]
    entity_df = served[inputs].copy()
    entity_df[TIMESTAMP] = _utc(served["requested_at"])
    references = [f.replace("__", ":", 1) for f in features]
    offline = view.historical(entity_df, features=references).reset_index(drop=True)
    masks = {}
    for feature in features:
        skew = skews.setdefault(feature, FeatureSkew(feature))
        masks[feature] = _compare_column(skew, served, offline, feature, inputs, tolerance)
        if training is not None and feature in training.columns:
            if feature not in distributions:
                distributions[feature] = _Distribution(training[feature])
            distributions[feature].add(served[feature])
    return offline, masks


def _failures(report: SkewReport) -> list[str]:
    limits = report.thresholds
    out = []
    for skew in report.features:
        if skew.mismatch_rate > limits.max_mismatch:
            out.append(
                f"{skew.feature}: {skew.disagreeing:,} of {skew.rows:,} rows disagree "
                f"({skew.mismatch_rate:.4%} > {limits.max_mismatch:.4%})"
            )
        if skew.psi is not None and skew.psi > limits.max_psi:
            out.append(f"{skew.feature}: PSI {skew.psi:.3f} > {limits.max_psi}")
        if limits.max_ks is not None and skew.ks is not None and skew.ks > limits.max_ks:
            out.append(f"{skew.feature}: KS {skew.ks:.3f} > {limits.max_ks}")
    return out


def _compare_column(
    skew: FeatureSkew,
    served: Any,
    offline: Any,
    feature: str,
    inputs: list[str],
    tolerance: float,
) -> Any:
    """One chunk of one feature: counts, the largest numeric difference, a few examples.
    Numbers are compared a column at a time; other values one by one. Returns which rows
    disagree."""
    import numpy as np
    import pandas as pd

    a_missing = served[feature].isna().to_numpy()
    b_missing = offline[feature].isna().to_numpy()
    numbers = _numbers(served[feature], offline[feature])
    if numbers is not None:
        a, b = numbers
        difference = np.abs(a - b)
        both = ~a_missing & ~b_missing
        whole = (a == np.round(a)) & (b == np.round(b))
        allowed = np.where(whole, 0.0, tolerance * np.maximum(1.0, np.maximum(abs(a), abs(b))))
        different = both & ~(difference <= allowed)
        if both.any():
            largest = float(difference[both].max())
            if skew.largest_difference is None or largest > skew.largest_difference:
                skew.largest_difference = largest
    else:
        pairs = zip(served[feature].tolist(), offline[feature].tolist(), strict=True)
        different = np.array(
            [
                not (x or y) and not _same(a, b)
                for (a, b), x, y in zip(pairs, a_missing, b_missing, strict=True)
            ],
            dtype=bool,
        )
    online_only = ~a_missing & b_missing
    offline_only = a_missing & ~b_missing
    skew.rows += len(a_missing)
    skew.both_missing += int((a_missing & b_missing).sum())
    skew.online_only += int(online_only.sum())
    skew.offline_only += int(offline_only.sum())
    skew.mismatches += int(different.sum())
    skew.equal += int((~a_missing & ~b_missing & ~different).sum())
    for kind, mask in (
        ("different", different),
        ("missing offline", online_only),
        ("missing online", offline_only),
    ):
        for i in np.flatnonzero(mask)[: EXAMPLES - len(skew.examples)]:
            skew.examples.append(
                {
                    "request_id": str(served["request_id"].iat[i]),
                    "requested_at": str(pd.Timestamp(served["requested_at"].iat[i])),
                    "entity": {k: _plain(served[k].iat[i]) for k in inputs},
                    "online": _plain(served[feature].iat[i]),
                    "offline": _plain(offline[feature].iat[i]),
                    "kind": kind,
                }
            )
    return different | online_only | offline_only


def _numbers(online: Any, offline: Any) -> tuple[Any, Any] | None:
    """Both columns as float arrays (missing as NaN), when both hold numbers (not bools)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(online) or pd.api.types.is_bool_dtype(offline):
        return None
    try:
        a = pd.to_numeric(online, errors="raise").to_numpy(dtype=float, na_value=float("nan"))
        b = pd.to_numeric(offline, errors="raise").to_numpy(dtype=float, na_value=float("nan"))
    except (TypeError, ValueError):
        return None
    return a, b


def _same(a: Any, b: Any) -> bool:
    """Strings, lists and maps: equal as Python values."""
    if hasattr(a, "tolist"):
        a = a.tolist()
    if hasattr(b, "tolist"):
        b = b.tolist()
    return bool(a == b)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value

"""Point-in-time training sets on the local profile: ours against Feast and a hand-written ASOF join.

One generated Feast repo (``bench_online.write_repo``: entity ``service``, string join key
``service_id``, 5 feature views of 10 Int64/Float64 features each, TTL 1 day, each view over
its own parquet file) with a local yaml: DuckDB offline store, file registry, SQLite online
store; no servers. Two feature patterns: ``train3`` (3 features of one view) and ``train50``
(all 50 features, 5 views).

Feature data, per view: hourly rows (on a per-view minute offset) for each service from a
random hour of the first day to the end of the span (quick: 2,000 services, full: 10,000, over
7 days); one service in five stops reporting at a random time, so its values expire; about 5%
of the hours missing, about 1% of the values null. (service_id, event_timestamp) is unique in
each file.

Entity DataFrame (the same object for every contender): ``row_id`` (0..n-1), ``service_id``
(string; about 9% of the rows name a service with no data at all) and ``event_timestamp``
(tz-aware UTC, second resolution, from 12 hours before the data starts to 36 hours after it
ends, so some rows precede any data and some are past the TTL); about 1% of the rows land
exactly on a feature row's time, and about 1% are on services that stopped reporting, exactly
at the TTL after their last row (a value) or one second later (expired).

Compared, after a warm-up round, in interleaved rounds:

- ours:        ``dl.features(pattern).historical(entity_df)`` (public API; on parquet sources
               it searches each file's sorted (join keys, time) index, built on the first call
               and kept while the file is unchanged, then gathers the feature columns read
               from the file on every call; returns rows in input order, Int64 features as
               pandas ``Int64``), called again and again as a training job would;
- ours-first-call: the same call with the store's file indexes dropped first, as the first
               call after opening the store (or after a file changed) runs: it builds them;
- feast:       ``FeatureStore.get_historical_features(entity_df, features=refs,
               full_feature_names=True).to_df()`` on the same FeatureStore object
               (``dl.store("features").feature_store``);
- duckdb-asof: a hand-written DuckDB query on one held connection: the entity frame
               registered, one ``ASOF LEFT JOIN read_parquet(...)`` per view on ``service_id``
               and ``entity time >= feature time``, the TTL as ``CASE WHEN feature time >=
               entity time - INTERVAL ...``, ``.df()`` (no dedup of equal feature times: the
               files have none; rows in DuckDB's order, ints as DuckDB returns them).

Before timing, each case checks that ours == feast == duckdb-asof on the same input: per column
after sorting by ``row_id`` (NaN/None/pd.NA as missing, ints compared as floats), plus ours'
rows in input order; any difference fails the run.

Targets (from the issue): ours <= 1.2x duckdb-asof (median) at every size; Feast >= 5x slower
than ours at 50,000 rows x 3 features and >= 2.5x at 1,000,000 rows x 50 features. The first
call's ratios are printed beside them, with no target.

Run from the repository root (``--profile`` adds a breakdown and a cProfile of ours):

    PYTHONPATH=src:. python bench/bench_training.py --size quick   # or --size full
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from bench_online import (
    FEATURES_PER_VIEW,
    JOIN_KEY,
    TTL,
    VIEWS,
    code_revision,
    entity_id,
    feature_names,
    references,
    view_name,
    write_repo,
)
from harness import (
    Round,
    Stats,
    console,
    interleave,
    parse_args,
    print_table,
    profile_top,
    ratio,
    summarize,
    time_once,
    write_results,
)

import datalayer
from datalayer.categories.feature import FeatureView
from datalayer.stores.feast.environment import quiet
from datalayer.stores.feast.store import FeastStore
from datalayer.testing import registry as test_registry
from datalayer.testing.feast_repo import feature_store_yaml, write_feast_repo

TIMESTAMP = "event_timestamp"
ROW_ID = "row_id"
#: Start of the feature data (fixed: results do not depend on the day the bench runs).
DATA_START = pd.Timestamp("2026-01-05T00:00:00Z")
NULL_FRACTION = 0.01
MISSING_HOURS = 0.05
STOPPING_FRACTION = 0.2
NO_DATA_FRACTION = 0.1  # share of entity ids beyond the services that have data (~9% of rows)
EXACT_FRACTION = 0.01  # entity rows snapped to a feature row's time
EDGE_FRACTION = 0.01  # entity rows exactly at / 1 s past the TTL after a service's last row
TARGET_ASOF = 1.2  # ours / duckdb-asof, at most (median)
TARGET_FEAST_SMALL = 5.0  # feast / ours at 50,000 rows x 3 features, at least (median)
TARGET_FEAST_LARGE = 2.5  # feast / ours at 1,000,000 rows, at least (median)


@dataclass(frozen=True)
class Case:
    rows: int
    features: int  # 3 (pattern train3, one view) or 50 (train50, 5 views)
    rounds: int

    @property
    def pattern(self) -> str:
        return f"train{self.features}"

    @property
    def label(self) -> str:
        views = 1 if self.features <= FEATURES_PER_VIEW else VIEWS
        return f"{self.rows:,} rows x {self.features} features ({views} view{'s' * (views > 1)})"


@dataclass(frozen=True)
class Size:
    services: int  # services with feature data
    days: int  # span of the feature data
    cases: tuple[Case, ...]


SIZES: dict[str, Size] = {
    "quick": Size(
        services=2_000,
        days=7,
        cases=(Case(50_000, 3, rounds=15), Case(50_000, 50, rounds=9)),
    ),
    "full": Size(
        services=10_000,
        days=7,
        cases=(Case(1_000_000, 50, rounds=5), Case(50_000, 3, rounds=15)),
    ),
}


def pattern_references(features: int) -> list[str]:
    """train3: the first 3 features of view 0; train50: all 50."""
    return references()[:features]


def by_view(refs: list[str]) -> dict[str, list[str]]:
    views: dict[str, list[str]] = {}
    for ref in refs:
        view, feature = ref.split(":", 1)
        views.setdefault(view, []).append(feature)
    return views


def view_offset(v: int) -> pd.Timedelta:
    """Each view's rows sit at a few minutes past the hour (views do not share times)."""
    return pd.Timedelta(minutes=7 * v)


@dataclass(frozen=True)
class FeatureData:
    rows: int  # feature rows written, all views
    #: Services of view 0 that stop reporting before the end: their id and last row's time
    #: (nanoseconds), for entity rows exactly at and just past the TTL.
    stopped_ids: np.ndarray
    stopped_last: np.ndarray


def write_data(data: Path, services: int, days: int, seed: int) -> FeatureData:
    """One parquet file per view (see the module docstring)."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hours = days * 24
    ids = np.array([entity_id(i) for i in range(services)], dtype=object)
    total = 0
    stopped_ids, stopped_last = np.array([], dtype=object), np.array([], dtype=np.int64)
    for v in range(VIEWS):
        # Active window per service: starts within the first day; one in five services stops
        # reporting at a random time after at least a day (its values then expire).
        first = rng.integers(0, 24, services)
        stops = rng.random(services) < STOPPING_FRACTION
        last = np.where(
            stops, np.minimum(first + 24 + rng.integers(0, hours, services), hours), hours
        )
        grid = np.arange(hours)
        keep = (grid >= first[:, None]) & (grid < last[:, None])
        keep &= rng.random((services, hours)) >= MISSING_HOURS
        service_index, hour = np.nonzero(keep)
        n = len(hour)
        stamps = DATA_START + view_offset(v) + pd.to_timedelta(hour, unit="h")
        if v == 0:
            stopped = stops & keep.any(axis=1) & (last < hours)
            last_hour = hours - 1 - np.argmax(keep[:, ::-1], axis=1)
            stopped_ids = ids[stopped]
            stopped_last = (DATA_START + pd.to_timedelta(last_hour[stopped], unit="h")).as_unit(
                "ns"
            ).asi8 + view_offset(0).value
        frame: dict[str, Any] = {JOIN_KEY: ids[service_index]}
        for name, dtype in feature_names(v):
            null = rng.random(n) < NULL_FRACTION
            if dtype == "Int64":
                values = rng.integers(0, 1_000_000, n, dtype=np.int64)
                frame[name] = pd.array(np.where(null, 0, values), dtype="Int64")
                frame[name][null] = pd.NA
            else:
                frame[name] = np.where(null, np.nan, rng.random(n) * 1_000)
        frame[TIMESTAMP] = pd.DatetimeIndex(stamps).astype("datetime64[us, UTC]")
        frame["created"] = frame[TIMESTAMP]
        pd.DataFrame(frame).to_parquet(data / f"{view_name(v)}.parquet", index=False)
        total += n
    return FeatureData(total, stopped_ids, stopped_last)


def entity_frame(
    rows: int, services: int, days: int, seed: int, features: FeatureData
) -> pd.DataFrame:
    """The entity DataFrame every contender gets (see the module docstring)."""
    rng = np.random.default_rng(seed + rows)
    ids = np.array(
        [entity_id(i) for i in range(int(services * (1 + NO_DATA_FRACTION)))], dtype=object
    )
    keys = ids[rng.integers(0, len(ids), rows)]
    start = (DATA_START - pd.Timedelta(hours=12)).value
    span = int((pd.Timedelta(days=days) + pd.Timedelta(hours=48)).total_seconds())
    nanos = start + rng.integers(0, span, rows) * 1_000_000_000
    # Some rows exactly on a feature row's time (the hour plus a view's offset).
    hour = 3_600 * 1_000_000_000
    snapped = nanos // hour * hour + rng.integers(0, VIEWS, rows) * view_offset(1).value
    nanos = np.where(rng.random(rows) < EXACT_FRACTION, snapped, nanos)
    # Some rows of services that stopped: exactly at the TTL after their last row (a value)
    # and one second later (expired).
    edges = min(int(rows * EDGE_FRACTION), 2 * len(features.stopped_ids))
    if edges:
        at = rng.choice(rows, edges, replace=False)
        which = rng.integers(0, len(features.stopped_ids), edges)
        keys[at] = features.stopped_ids[which]
        past = np.arange(edges) % 2 * 1_000_000_000
        nanos[at] = features.stopped_last[which] + TTL // timedelta(microseconds=1) * 1000 + past
    return pd.DataFrame(
        {
            ROW_ID: np.arange(rows, dtype=np.int64),
            JOIN_KEY: keys,
            TIMESTAMP: pd.to_datetime(nanos, unit="ns", utc=True),
        }
    )


def write_local_yaml(repo: Path) -> None:
    """The local profile for the generated repo: file registry, SQLite online, DuckDB offline."""
    write_feast_repo(repo, {"local": feature_store_yaml("sqlite", "duckdb")})


def write_registry(folder: Path, repo: Path, project: str) -> Path:
    store = {"type": "feast", "repo": str(repo), "profile": "local", "project": project}
    patterns = {
        f"train{count}": {
            "category": "feature",
            "store": "features",
            "features": pattern_references(count),
        }
        for count in (3, VIEWS * FEATURES_PER_VIEW)
    }
    return test_registry.write_registry(folder, {"local": {"features": store}}, patterns)


class HandWrittenAsof:
    """What a hand-written DuckDB training-set query looks like: one ASOF LEFT JOIN per view.

    The contender is the plain form. The variants only serve ``--profile``'s breakdown:
    ``dedup`` keeps one row per (key, time), the latest ``created`` (as Feast and ours do),
    ``ordered`` returns rows in input order (``ORDER BY row_id``), ``fresh`` opens a new
    in-memory connection per call instead of holding one.
    """

    def __init__(
        self,
        refs: list[str],
        data: Path,
        *,
        dedup: bool = False,
        ordered: bool = False,
        fresh: bool = False,
    ) -> None:
        self.fresh = fresh
        self.con = duckdb.connect()
        ttl_seconds = int(TTL.total_seconds())
        ctes, selects, joins = [], ["e.*"], []
        for i, (view, features) in enumerate(by_view(refs).items()):
            path = str(data / f"{view}.parquet").replace("'", "''")
            source = f"read_parquet('{path}')"
            if dedup:
                ctes.append(
                    f"d{i} AS (SELECT * FROM {source} QUALIFY row_number() OVER "
                    f"(PARTITION BY {JOIN_KEY}, {TIMESTAMP} ORDER BY created DESC) = 1)"
                )
                source = f"d{i}"
            joins.append(
                f"ASOF LEFT JOIN {source} f{i} "
                f"ON e.{JOIN_KEY} = f{i}.{JOIN_KEY} AND e.{TIMESTAMP} >= f{i}.{TIMESTAMP}"
            )
            for feature in features:
                selects.append(
                    f"CASE WHEN f{i}.{TIMESTAMP} >= e.{TIMESTAMP} - INTERVAL {ttl_seconds} SECOND "
                    f'THEN f{i}."{feature}" END AS "{view}__{feature}"'
                )
        self.sql = (
            ("WITH " + ", ".join(ctes) + " " if ctes else "")
            + f"SELECT {', '.join(selects)} FROM entities e {' '.join(joins)}"
            + (f" ORDER BY e.{ROW_ID}" if ordered else "")
        )

    def __call__(self, entity_df: pd.DataFrame) -> pd.DataFrame:
        if self.fresh:
            with duckdb.connect() as con:
                con.register("entities", entity_df)
                fresh_result: pd.DataFrame = con.execute(self.sql).df()
            return fresh_result
        self.con.register("entities", entity_df)
        try:
            result: pd.DataFrame = self.con.execute(self.sql).df()
        finally:
            self.con.unregister("entities")
        return result

    def close(self) -> None:
        self.con.close()


def normalized(name: str, frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns as comparable numpy arrays, rows sorted by row_id (one per input row)."""
    missing = [c for c in [ROW_ID, JOIN_KEY, TIMESTAMP, *columns] if c not in frame.columns]
    if missing:
        raise SystemExit(f"{name}: no column(s) {missing}; it has {list(frame.columns)[:8]} ...")
    frame = frame.sort_values(ROW_ID, kind="stable")
    row_ids = frame[ROW_ID].to_numpy(dtype=np.int64)
    if not np.array_equal(row_ids, np.arange(len(frame))):
        raise SystemExit(f"{name}: not exactly one result row per entity row")
    out: dict[str, np.ndarray] = {
        JOIN_KEY: frame[JOIN_KEY].astype(str).to_numpy(),
        TIMESTAMP: pd.to_datetime(frame[TIMESTAMP], utc=True)
        .dt.as_unit("ns")
        .astype(np.int64)
        .to_numpy(),
    }
    for column in columns:
        series = frame[column]
        if series.dtype == object:  # None or pd.NA for missing values
            series = series.where(series.notna(), np.nan).astype("float64")
        out[column] = pd.to_numeric(series).to_numpy(dtype="float64", na_value=np.nan)
    return out


def check_same(name: str, got: pd.DataFrame, want: pd.DataFrame, columns: list[str]) -> None:
    g, w = normalized(name, got, columns), normalized("ours", want, columns)
    for column, expected in w.items():
        actual = g[column]
        same = (
            np.array_equal(actual, expected, equal_nan=True)
            if actual.dtype.kind == "f"
            else np.array_equal(actual, expected)
        )
        if not same:
            if actual.dtype.kind == "f":
                differs = ~((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
            else:
                differs = actual != expected
            rows = np.flatnonzero(differs)
            examples = ", ".join(
                f"row {r}: {actual[r]!r} vs ours {expected[r]!r}" for r in rows[:3]
            )
            raise SystemExit(
                f"{name} differs from ours in {column} on {len(rows):,} rows ({examples})"
            )


def coverage(result: pd.DataFrame, entity_df: pd.DataFrame, refs: list[str]) -> str:
    """How many rows got values, per view (missing: no data, too early, or expired)."""
    parts = []
    for view, features in by_view(refs).items():
        present = result[f"{view}__{features[0]}"].notna().mean()
        parts.append(f"{view} {present:.0%}")
    return "rows with a value: " + ", ".join(parts)


def stats_row(s: Stats, ours: Stats, asof: Stats) -> tuple[object, ...]:
    return (
        s.name,
        s.median_ns / 1e9,
        s.p99_ns / 1e9,
        s.min_ns / 1e9,
        s.samples,
        f"{ratio(s.median_ns, asof.median_ns):.2f}x",
        f"{ratio(s.median_ns, ours.median_ns):.2f}x",
    )


def breakdown(
    features: FeatureView, store: FeastStore, entity_df: pd.DataFrame, refs: list[str], data: Path
) -> list[tuple[object, ...]]:
    """Where ours' time goes: the public call warm and cold, reading the feature columns alone
    (what every call does; the rest is the index search and the gather), and the hand-written
    query with, one by one, what Feast's semantics add to it (dedup by created time, input
    order) and a fresh connection per call (median of 5 runs each, interleaved, after a
    warm-up)."""

    def cold() -> object:
        store.parquet_indexes.clear()
        return features.historical(entity_df)

    def read_only() -> object:
        return [
            pq.read_table(data / f"{view}.parquet", columns=names)
            for view, names in by_view(refs).items()
        ]

    variants: dict[str, Callable[[], object]] = {
        "ours: historical() (public call)": lambda: features.historical(entity_df),
        "ours: historical(), file indexes dropped first": cold,
        "ours: reading its feature columns alone": read_only,
    }
    asofs = {
        "duckdb-asof (the contender: held connection)": HandWrittenAsof(refs, data),
        "  + fresh connection per call": HandWrittenAsof(refs, data, fresh=True),
        "  + dedup (row_number per key, time)": HandWrittenAsof(refs, data, dedup=True),
        "  + dedup + ORDER BY row_id": HandWrittenAsof(refs, data, dedup=True, ordered=True),
        "  + dedup + ORDER BY + fresh connection": HandWrittenAsof(
            refs, data, dedup=True, ordered=True, fresh=True
        ),
    }
    for name, asof in asofs.items():
        variants[name] = functools.partial(asof, entity_df)
    samples = interleave(
        {name: functools.partial(time_once, fn) for name, fn in variants.items()}, rounds=5
    )
    for asof in asofs.values():
        asof.close()
    medians = {name: statistics.median(s) / 1e9 for name, s in samples.items()}
    base = medians["duckdb-asof (the contender: held connection)"]
    return [(name, seconds, f"{seconds / base:.2f}x") for name, seconds in medians.items()]


def timed(fn: Callable[[pd.DataFrame], pd.DataFrame], entity_df: pd.DataFrame) -> Round:
    """One round of one contender: one call on the entity DataFrame, timed."""
    return lambda: time_once(lambda: fn(entity_df))


def run(size_name: str, seed: int, profile: bool) -> int:
    size = SIZES[size_name]
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-training-"))
    repo, data = folder / "feature_repo", folder / "data"
    project = f"bench_{uuid.uuid4().hex[:8]}"
    dl: datalayer.DataLayer | None = None
    started = time.perf_counter()
    try:
        console.print(
            f"writing feature data: {size.services:,} services, hourly over {size.days} days, "
            f"{VIEWS} views ..."
        )
        feature_data = write_data(data, size.services, size.days, seed)
        feature_rows = feature_data.rows
        write_repo(repo, data)
        write_local_yaml(repo)
        dl = datalayer.open(write_registry(folder, repo, project), profile="local")
        console.print(f"feast apply (project {project}, {feature_rows:,} feature rows) ...")
        dl.apply()
        store = dl.store("features")
        assert isinstance(store, FeastStore)
        fs = store.feature_store

        results: list[dict[str, Any]] = []
        tables: list[tuple[Case, dict[str, Stats]]] = []
        for case in size.cases:
            refs = pattern_references(case.features)
            columns = FeatureView.columns(refs)
            features = dl.features(case.pattern)
            assert isinstance(features, FeatureView)
            entity_df = entity_frame(case.rows, size.services, size.days, seed, feature_data)
            dtypes = entity_df.dtypes.copy()
            asof = HandWrittenAsof(refs, data)

            def ours(df: pd.DataFrame, features: FeatureView = features) -> pd.DataFrame:
                result: pd.DataFrame = features.historical(df)
                return result

            def ours_first_call(df: pd.DataFrame, features: FeatureView = features) -> pd.DataFrame:
                store.parquet_indexes.clear()
                result: pd.DataFrame = features.historical(df)
                return result

            def feast(df: pd.DataFrame, refs: list[str] = refs) -> pd.DataFrame:
                with quiet():  # Feast's DuckDB path warns on every query
                    job = fs.get_historical_features(
                        entity_df=df, features=refs, full_feature_names=True
                    )
                    result: pd.DataFrame = job.to_df()
                return result

            contenders: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
                "ours": ours,
                "ours-first-call": ours_first_call,
                "feast": feast,
                "duckdb-asof": asof,
            }
            console.print(f"[bold]{case.label}[/] (pattern {case.pattern})")
            mine = ours_first_call(entity_df)
            if not np.array_equal(mine[ROW_ID].to_numpy(), entity_df[ROW_ID].to_numpy()):
                raise SystemExit("ours: rows are not in the entity DataFrame's order")
            check_same("feast", feast(entity_df), mine, columns)
            check_same("duckdb-asof", asof(entity_df), mine, columns)
            check_same("ours (indexes kept)", ours(entity_df), mine, columns)
            if not entity_df.dtypes.equals(dtypes):
                raise SystemExit("a contender changed the entity DataFrame's dtypes")
            console.print(
                f"  sanity check: ours == feast == duckdb-asof on all {case.rows:,} rows; "
                + coverage(mine, entity_df, refs)
            )
            del mine
            console.print(f"  {case.rounds} rounds after a warm-up ({size_name})")
            samples = interleave(
                {name: timed(fn, entity_df) for name, fn in contenders.items()},
                case.rounds,
            )
            st = {name: summarize(name, s, case.rows) for name, s in samples.items()}
            tables.append((case, st))
            ours_s, feast_s, asof_s = st["ours"], st["feast"], st["duckdb-asof"]
            targets = [
                {
                    "what": "ours / duckdb-asof, median",
                    "target": f"<= {TARGET_ASOF}x",
                    "value": ratio(ours_s.median_ns, asof_s.median_ns),
                    "met": ratio(ours_s.median_ns, asof_s.median_ns) <= TARGET_ASOF,
                }
            ]
            feast_target = (
                TARGET_FEAST_LARGE
                if case.rows >= 1_000_000
                else TARGET_FEAST_SMALL
                if case.features == 3
                else None
            )
            feast_ratio = ratio(feast_s.median_ns, ours_s.median_ns)
            targets.append(
                {
                    "what": "feast / ours, median",
                    "target": f">= {feast_target}x" if feast_target else "(none)",
                    "value": feast_ratio,
                    "met": feast_ratio >= feast_target if feast_target else None,
                }
            )
            first = st["ours-first-call"]
            targets += [
                {
                    "what": "ours-first-call / duckdb-asof, median",
                    "target": "(none)",
                    "value": ratio(first.median_ns, asof_s.median_ns),
                    "met": None,
                },
                {
                    "what": "feast / ours-first-call, median",
                    "target": "(none)",
                    "value": ratio(feast_s.median_ns, first.median_ns),
                    "met": None,
                },
            ]
            if profile:
                print_table(
                    f"where ours' time goes, {case.label}",
                    ["variant", "median s", "vs duckdb-asof"],
                    breakdown(features, store, entity_df, refs, data),
                )
                console.print(f"  ours, {case.label}, by cumulative time:")
                console.print(
                    profile_top(functools.partial(ours, entity_df), limit=20, sort="cumulative")
                )
            results.append(
                {
                    "case": case.label,
                    "entity_rows": case.rows,
                    "features": case.features,
                    "pattern": case.pattern,
                    "rounds": case.rounds,
                    "targets": targets,
                    "contenders": {name: s.as_dict() for name, s in st.items()},
                }
            )
            asof.close()

        for case, st in tables:
            print_table(
                f"training set, {case.label}, local profile ({size_name})",
                [
                    "contender",
                    "median s",
                    "p99 s",
                    "min s",
                    "runs",
                    "vs duckdb-asof",
                    "vs ours",
                ],
                [stats_row(s, st["ours"], st["duckdb-asof"]) for s in st.values()],
                note=f"p99 of {case.rounds} runs is their maximum",
            )
        print_table(
            "targets",
            ["case", "ratio", "target", "measured", "verdict"],
            [
                (
                    r["case"],
                    t["what"],
                    t["target"],
                    f"{t['value']:.2f}x",
                    "-" if t["met"] is None else "[green]met[/]" if t["met"] else "[red]missed[/]",
                )
                for r in results
                for t in r["targets"]
            ],
        )
        write_results(
            "training",
            {
                "size": size_name,
                "code": code_revision(),
                "load_average_1_5_15m_at_end": os.getloadavg(),
                "feature_data": {
                    "services": size.services,
                    "days": size.days,
                    "views": VIEWS,
                    "features_per_view": FEATURES_PER_VIEW,
                    "rows": feature_rows,
                    "ttl_seconds": int(TTL / timedelta(seconds=1)),
                },
                "cases": results,
            },
        )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        console.print(f"total time {time.perf_counter() - started:.0f} s; load average {load}")
        return 0
    finally:
        if dl is not None:
            dl.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    args = parse_args("Point-in-time training sets: ours against Feast and a DuckDB ASOF join.")
    return run(args.size, args.seed, args.profile)


if __name__ == "__main__":
    sys.exit(main())

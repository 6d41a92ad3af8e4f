"""The ``feast init`` template at 100,000 drivers: datalayer against Feast, online reads,
training sets and materialization, in one run, as ratios.

The repository is what a new Feast user starts from: ``feast init`` run by Feast's own CLI
(``datalayer.testing.feast_template.init_template``), its online store moved to Redis, nothing
else changed: entity ``driver`` (``driver_id`` int64), view ``driver_hourly_stats`` (TTL 1 day;
Float32, Int64, Map, Json and Struct features) over ``data/driver_stats.parquet`` (a relative
path; the file offline store), a request source and the pandas on-demand view
``transformed_conv_rate`` over the whole view plus request data, file registry. Two patterns
read its feature services:

- ``v1``: ``driver_activity_v1``, ``conv_rate`` plus the on-demand view;
- ``v2``: ``driver_activity_v2``, the whole view (Map, Json, Struct too) plus the on-demand view.

Data: the template's ``driver_stats.parquet`` replaced, before ``apply``, by the same schema
(read from the generated file, cast to it, so a changed template fails the run) and value
shapes for many drivers: 4 hourly rows per driver within the 4 days before the run, the latest
within its last 12 hours (so an online read at any time of the run is within the TTL); the
template's fixed 2021-04-12 07:00 row for every driver; one driver in a hundred with a row
written twice (the template has one); ``created`` one naive instant for every row (as the
template's). Map (vehicle type, rating), Json (max distance, two preferred zones) and Struct
(name, age) values of the template's shapes, drawn at random.

Compared, contenders interleaved in rounds (harness.interleave):

- online, for ``v1`` and ``v2``, 1 and 100 random drivers per request with random request data:
  ours ``dl.features(p).online(rows)`` against Feast's
  ``FeatureStore.get_online_features(features=<feature service>, entity_rows=rows,
  full_feature_names=True).to_dict()`` on the same FeatureStore object (``dl.store(...)``),
  after a warm-up round; p50 and p99 per call. Checked before timing: ours' columns all in
  Feast's answer and equal, on 5 requests per size and pattern;
- training set of ``v2`` (the view's six features and the on-demand view's two) for as many
  entity rows as drivers: ``driver_id`` (5% of them with no data), an event time within the
  5 days before the run (so some rows precede a driver's data and some are past its TTL),
  request data, a ``row_id``. Ours ``historical(entity_df)`` (its file indexes kept, as a
  training job calling again has them), ours with its file indexes dropped first (the first
  call; no target) and Feast's ``get_historical_features(...).to_df()``; the sanity check's
  calls are the warm-up. Checked before timing on every row: ours equals Feast on the rows
  Feast returns (its file offline store leaves out rows it has no value for), and ours has
  nothing but missing values on the rows Feast leaves out;
- materialization of ``driver_hourly_stats`` over the 7 days before the run, each contender in
  its own fresh process, timed from opening the store to the end of the call, rows/s (a row:
  one driver's hash, what both write): ours ``dl.features("v2").materialize(start, end)``,
  Feast's ``FeatureStore(repo_path).materialize(start, end, feature_views=[view])``; peak RSS
  (VmHWM) beside. Both write into the same project, emptied before each run. Feast runs up to
  ``--feast-max-drivers`` (default: every driver); below the full size, Feast and ours first
  run on a copy of the repo holding that many drivers, and the speedup is taken there, then
  ours runs on all of them. After each run: one key per driver; where both ran at one size,
  ours' hashes of a sample of drivers hold Feast's fields and values, byte for byte or, where
  the bytes differ, the same ValueProto: protobuf writes a map's entries (Feast's Map and
  Struct values) in an order that changes with the process's hash seed, Feast's own writes
  included (counted and reported). Ours' last run leaves the data the online reads use.

Sizes: quick, 10,000 drivers (about two minutes); full, 100,000 drivers (about eight).

Targets (from the issue): Feast's p50 >= 4x ours' (online, both patterns, both sizes); Feast's
training set >= 5x slower than ours (median); ours' materialization >= 5x Feast's rows/s.

Redis comes from the project's launcher ($DATALAYER_REDIS_URL if set, else a container or a
local server). Run from the repository root (``--profile``: cProfile listings of ours' online
reads and of an extra, untimed materialization run of ours):

    PYTHONPATH=src:.:bench python bench/bench_template.py --size quick   # or --size full
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis
from bench_materialize import (
    RssSampler,
    delete_keys,
    fail,
    measured_in_child,
    peak_rss_mib,
    project_keys,
)
from bench_online import code_revision
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from harness import (
    Stats,
    console,
    interleave,
    parse_args,
    print_table,
    profile_top,
    ratio,
    summarize,
    time_calls,
    time_once,
    write_results,
)
from tests.services.launcher import Launcher

import datalayer
from datalayer.errors import redact
from datalayer.stores.feast.environment import quiet
from datalayer.stores.feast.store import FeastStore
from datalayer.testing.feast_template import init_template
from datalayer.testing.registry import write_registry

#: Pattern name -> the template's feature service it reads.
SERVICES = {"v1": "driver_activity_v1", "v2": "driver_activity_v2"}
TRAINING_PATTERN = "v2"
MATERIALIZED_PATTERN = "v2"  # its views: driver_hourly_stats alone
VIEW = "driver_hourly_stats"
JOIN_KEY = "driver_id"
TIMESTAMP = "event_timestamp"
ROW_ID = "row_id"
REQUEST_FIELDS = ("val_to_add", "val_to_add_2")
FIRST_DRIVER = 1001  # the template's drivers are 1001..1005
ROWS_PER_DRIVER = 4
SPAN_HOURS = 96  # a driver's rows are within the SPAN_HOURS before the run
FRESH_HOURS = 12  # ... and its latest within the FRESH_HOURS before it
QUICKSTART_ROW = datetime(2021, 4, 12, 7, tzinfo=UTC)  # the template's fixed row per driver
DUPLICATE_FRACTION = 0.01
UNKNOWN_FRACTION = 0.05  # entity rows naming a driver with no data
TRAINING_SPAN = timedelta(days=5)
MATERIALIZE_SPAN = timedelta(days=7)
BATCHES = (1, 100)
KEY_VERSION = 3  # the template's entity_key_serialization_version
TARGET_ONLINE = 4.0  # feast / ours, p50, at least
TARGET_TRAINING = 5.0  # feast / ours, median, at least
TARGET_MATERIALIZE = 5.0  # ours rows/s / feast rows/s, at least

#: The template's columns and what the generator writes in each (its types come from the file).
COLUMNS = (
    TIMESTAMP,
    JOIN_KEY,
    "conv_rate",
    "acc_rate",
    "avg_daily_trips",
    "created",
    "driver_metadata",
    "driver_config",
    "driver_profile",
)
VEHICLES = ("sedan", "suv", "truck")
ZONES = ("north", "south", "east", "west")

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Size:
    drivers: int  # drivers with data; also the training set's entity rows
    rounds: int  # online rounds
    requests: dict[int, int]  # online requests per contender per round, by batch size
    training_rounds: int
    sample: int  # drivers whose hashes are compared after materialization


SIZES: dict[str, Size] = {
    "quick": Size(
        drivers=10_000, rounds=4, requests={1: 150, 100: 30}, training_rounds=3, sample=500
    ),
    "full": Size(
        drivers=100_000, rounds=8, requests={1: 300, 100: 60}, training_rounds=3, sample=2_000
    ),
}


# --- data -------------------------------------------------------------------------------------


def driver_stats(template: pa.Schema, drivers: int, now: datetime, seed: int) -> pa.Table:
    """The template's ``driver_stats`` for ``drivers`` drivers (see the module docstring), cast
    to the schema of the file ``feast init`` wrote."""
    if tuple(template.names) != COLUMNS:
        raise SystemExit(f"feast init wrote other columns than expected: {template.names}")
    rng = np.random.default_rng(seed)
    ids = np.arange(FIRST_DRIVER, FIRST_DRIVER + drivers, dtype=np.int64)
    # Hours before the run: the latest within FRESH_HOURS, the others distinct and older.
    older = np.argsort(rng.random((drivers, SPAN_HOURS - FRESH_HOURS)), axis=1)
    hours = np.concatenate(
        [rng.integers(0, FRESH_HOURS, (drivers, 1)), FRESH_HOURS + older[:, : ROWS_PER_DRIVER - 1]],
        axis=1,
    )
    top = np.datetime64(now.replace(minute=0, second=0, microsecond=0, tzinfo=None), "ns")
    stamps = top - hours.astype("timedelta64[h]")
    quickstart = np.datetime64(QUICKSTART_ROW.replace(tzinfo=None), "ns")
    driver = np.concatenate([np.repeat(ids, ROWS_PER_DRIVER), ids])
    event = np.concatenate([stamps.ravel(), np.full(drivers, quickstart)])
    twice = rng.choice(len(driver), int(drivers * DUPLICATE_FRACTION), replace=False)
    order = rng.permutation(np.concatenate([np.arange(len(driver)), twice]))
    written = pa.table(
        {
            TIMESTAMP: pa.array(event, pa.timestamp("ns", "UTC")),
            JOIN_KEY: driver,
            "conv_rate": rng.random(len(driver), dtype=np.float32),
            "acc_rate": rng.random(len(driver), dtype=np.float32),
            "avg_daily_trips": rng.integers(0, 1000, len(driver)),
            "created": pa.array(
                np.full(len(driver), np.datetime64(now.replace(tzinfo=None), "ms")),
                pa.timestamp("us"),
            ),
            "driver_metadata": pa.StructArray.from_arrays(
                [
                    pick(VEHICLES, rng, len(driver)),
                    pick([f"{r / 10:.1f}" for r in range(30, 51)], rng, len(driver)),
                ],
                names=["vehicle_type", "rating"],
            ),
            "driver_config": driver_configs(rng, len(driver)),
            "driver_profile": pa.StructArray.from_arrays(
                [
                    pc.binary_join_element_wise(
                        "driver_", pc.cast(pa.array(driver), pa.string()), ""
                    ),
                    pick([str(age) for age in range(25, 60)], rng, len(driver)),
                ],
                names=["name", "age"],
            ),
        }
    ).take(pa.array(order))
    return written.cast(template.remove_metadata())


def pick(choices: Sequence[str], rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` strings drawn from ``choices``."""
    return pa.array(np.asarray(choices, dtype=object)[rng.integers(0, len(choices), n)])


def driver_configs(rng: np.random.Generator, n: int) -> pa.Array:
    """The Json feature's shape: a max distance and two distinct preferred zones."""
    pairs = [json.dumps([a, b]) for a in ZONES for b in ZONES if a != b]
    distances = rng.integers(10, 200, n).tolist()
    zones = rng.integers(0, len(pairs), n).tolist()
    return pa.array(
        [
            f'{{"max_distance_km": {d}, "preferred_zones": {pairs[z]}}}'
            for d, z in zip(distances, zones, strict=True)
        ]
    )


def subset_repo(repo: Path, into: Path, table: pa.Table, drivers: int) -> Path:
    """A copy of the repo (same project, its own registry) holding the first ``drivers``."""
    copy = into / repo.parent.name / repo.name
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("registry.db*", "__pycache__"))
    keep = pc.less(table[JOIN_KEY], FIRST_DRIVER + drivers)
    pq.write_table(table.filter(keep), copy / "data" / "driver_stats.parquet")
    return copy


def registry_for(folder: Path, repo: Path) -> Path:
    """The datalayer registry of a template repo: one pattern per feature service."""
    patterns = {
        name: {"category": "feature", "store": "features", "feature_service": service}
        for name, service in SERVICES.items()
    }
    relative = os.path.relpath(repo, folder)
    return write_registry(
        folder, {"local": {"features": {"type": "feast", "repo": relative}}}, patterns
    )


def request_rows(drivers: Any, rng: np.random.Generator) -> Rows:
    """One entity row per driver (an array of ids), with random request data."""
    values = rng.integers(0, 10, (len(drivers), len(REQUEST_FIELDS))).tolist()
    return [
        {JOIN_KEY: int(d), **dict(zip(REQUEST_FIELDS, v, strict=True))}
        for d, v in zip(drivers, values, strict=True)
    ]


def entity_frame(rows: int, drivers: int, now: datetime, seed: int) -> pd.DataFrame:
    """The training set's entity DataFrame (see the module docstring)."""
    rng = np.random.default_rng([seed, rows])
    known = int(drivers / (1 - UNKNOWN_FRACTION))
    seconds = rng.integers(0, int(TRAINING_SPAN.total_seconds()), rows)
    return pd.DataFrame(
        {
            ROW_ID: np.arange(rows, dtype=np.int64),
            JOIN_KEY: rng.integers(FIRST_DRIVER, FIRST_DRIVER + known, rows),
            TIMESTAMP: pd.Timestamp(now.replace(microsecond=0))
            - pd.to_timedelta(seconds, unit="s"),
            **{name: rng.integers(0, 10, rows) for name in REQUEST_FIELDS},
        }
    )


# --- checks -----------------------------------------------------------------------------------


def missing(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or (isinstance(value, float | np.floating) and math.isnan(value))
    )


def same(got: Any, want: Any) -> bool:
    """Equal, missing alike (None, NaN, pd.NA), numbers compared by value (Feast's training set
    gives an Int64 feature as float64 when it has a null)."""
    if missing(got) or missing(want):
        return missing(got) and missing(want)
    if isinstance(got, int | float | np.number) and isinstance(want, int | float | np.number):
        return float(got) == float(want)
    return bool(got == want)


def check_online(name: str, ours: dict[str, list[Any]], feast: dict[str, list[Any]]) -> None:
    """Every column of ours in Feast's answer, value for value; nothing missing (fresh data)."""
    problems = [f"{name}: Feast has no column {c}" for c in ours if c not in feast]
    for column, values in ours.items():
        if None in values:
            problems.append(f"{name}: ours has a missing value in {column} on fresh data")
        for i, (got, want) in enumerate(zip(values, feast.get(column, values), strict=True)):
            if not same(got, want):
                problems.append(f"{name}: {column} row {i}: ours {got!r}, Feast {want!r}")
    fail("online, ours vs Feast", problems)


def check_training(ours: pd.DataFrame, feast: pd.DataFrame, entity_df: pd.DataFrame) -> str:
    """Ours in the entity DataFrame's order; equal to Feast on the rows Feast returns, nothing
    but missing values on the others. Returns a line saying how many rows were compared."""
    problems: list[str] = []
    if not np.array_equal(ours[ROW_ID].to_numpy(), entity_df[ROW_ID].to_numpy()):
        problems.append("ours: rows are not in the entity DataFrame's order")
    features = [c for c in ours.columns if c not in entity_df.columns]
    absent = [c for c in features if c not in feast.columns]
    if absent:
        fail("training set, ours vs Feast", [f"Feast has no column(s) {absent}"])
    theirs = feast.set_index(ROW_ID)
    if not theirs.index.is_unique:
        fail("training set, Feast", ["more than one row per entity row"])
    returned = np.isin(ours[ROW_ID].to_numpy(), theirs.index.to_numpy())
    for column in features:
        mine = ours[column].tolist()
        want = theirs[column].reindex(ours[ROW_ID]).tolist()
        for i in np.flatnonzero(returned).tolist():
            if not same(mine[i], want[i]):
                problems.append(f"{column} row {i}: ours {mine[i]!r}, Feast {want[i]!r}")
        for i in np.flatnonzero(~returned).tolist():
            if not missing(mine[i]):
                problems.append(f"{column} row {i}: ours {mine[i]!r}, Feast left the row out")
    fail("training set, ours vs Feast", problems)
    valued = int(ours[features[0]].notna().sum())
    return (
        f"{int(returned.sum()):,} rows compared with Feast's, {int((~returned).sum()):,} "
        f"left out by Feast and missing in ours; {valued:,} rows with a value"
    )


def entity_key(project: str, driver: int) -> bytes:
    proto = EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(int64_val=driver)])
    return serialize_entity_key(proto, KEY_VERSION) + project.encode()


def read_hashes(client: redis.Redis, project: str, drivers: list[int]) -> list[dict[Any, Any]]:
    pipe = client.pipeline(transaction=False)
    for driver in drivers:
        pipe.hgetall(entity_key(project, driver))  # type: ignore[arg-type]  # bytes keys
    hashes: list[dict[Any, Any]] = pipe.execute()
    return hashes


def compare_hashes(
    drivers: list[int], ours: list[dict[Any, Any]], feast: list[dict[Any, Any]]
) -> int:
    """Ours' hashes must hold Feast's fields and values: byte for byte, or else the same
    ValueProto (a map's entries in another order: protobuf's order follows the hash seed);
    returns how many fields differ in their bytes only."""
    problems = []
    reordered = 0
    for driver, mine, theirs in zip(drivers, ours, feast, strict=True):
        if not theirs:
            problems.append(f"driver {driver}: Feast wrote no hash")
        for name in sorted(set(mine) | set(theirs)):
            got, want = mine.get(name), theirs.get(name)
            if got == want:
                continue
            if (
                got
                and want
                and not name.startswith(b"_ts:")
                and ValueProto.FromString(got) == ValueProto.FromString(want)
            ):
                reordered += 1
                continue
            problems.append(f"driver {driver} field {name!r}: ours {got!r}, Feast {want!r}")
    fail("materialization, ours' hashes vs Feast's", problems)
    return reordered


# --- materialization, one contender per process -------------------------------------------------


def child(spec: dict[str, Any]) -> int:
    """Materialize as one contender; print its time and memory as one JSON line."""
    start = datetime.fromisoformat(spec["start"])
    end = datetime.fromisoformat(spec["end"])
    after_imports = peak_rss_mib()
    sampler = RssSampler()
    sampler.start()

    def materialize() -> None:
        if spec["contender"] == "ours":
            with datalayer.open(spec["registry"], profile="local") as dl:
                dl.features(MATERIALIZED_PATTERN).materialize(start, end)
        else:
            FeatureStore(repo_path=spec["repo"]).materialize(start, end, feature_views=[VIEW])

    return measured_in_child(materialize, bool(spec.get("profile")), sampler, after_imports)


@dataclass
class Run:
    contender: str
    drivers: int
    seconds: float
    peak_rss_mib: float
    ru_maxrss_mib: float
    rss_after_imports_mib: float
    rss_timeline_mib: list[float] = field(default_factory=list)
    keys: int = 0
    #: Sampled hash fields whose bytes differ from Feast's but not their value (map order).
    bytes_only_differences: int | None = None

    @property
    def rows_per_s(self) -> float:
        return self.keys / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


def materialize_in_child(
    contender: str,
    repo: Path,
    registry: Path,
    window: tuple[datetime, datetime],
    log: Path,
    profile: bool = False,
) -> dict[str, Any]:
    spec = {
        "contender": contender,
        "registry": str(registry),
        "repo": str(repo),
        "start": window[0].isoformat(),
        "end": window[1].isoformat(),
        "profile": profile,
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    with log.open("w") as errors:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{contender} failed (exit {done.returncode}):\n{redact(tail)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def apply(registry: Path) -> None:
    with datalayer.open(registry, profile="local") as dl, quiet():
        dl.apply()


def materialization(
    client: redis.Redis,
    project: str,
    folder: Path,
    repo: Path,
    table: pa.Table,
    drivers: int,
    feast_max: int,
    sample_size: int,
    seed: int,
    window: tuple[datetime, datetime],
    profile: bool,
) -> list[Run]:
    """Feast and ours at min(feast_max, drivers), then ours at ``drivers`` if larger; each run
    checked. Ours' last run is left in Redis."""
    compared = min(feast_max, drivers)
    registries = {repo: folder / "datalayer.yaml"}
    at_compared = repo
    if compared < drivers:
        at_compared = subset_repo(repo, folder / "subset", table, compared)
        registries[at_compared] = registry_for(folder / "subset", at_compared)
        apply(registries[at_compared])
    plan = [("feast", compared, at_compared)]
    plan += [("profiled", compared, at_compared)] if profile else []
    plan += [("ours", compared, at_compared)] if compared < drivers else []
    plan.append(("ours", drivers, repo))
    rng = np.random.default_rng([seed, compared])
    sample = sorted(
        {FIRST_DRIVER, FIRST_DRIVER + compared - 1}
        | set((FIRST_DRIVER + rng.choice(compared, min(sample_size, compared), False)).tolist())
    )
    feast_hashes: list[dict[Any, Any]] | None = None
    runs: list[Run] = []
    for contender, size, where in plan:
        delete_keys(client, project)
        label = "ours (cProfile, untimed)" if contender == "profiled" else contender
        console.print(f"  {label}: materializing {size:,} drivers in a child process ...")
        result = materialize_in_child(
            "ours" if contender == "profiled" else contender,
            where,
            registries[where],
            window,
            folder / f"{contender}-{size}.log",
            profile=contender == "profiled",
        )
        listing = result.pop("profile", "")
        keys = sum(1 for _ in project_keys(client, project))
        if keys != size:
            fail(label, [f"{keys:,} keys in Redis for {size:,} drivers"])
        if contender == "profiled":
            console.print(f"  {label}, by cumulative time:\n{listing}")
            continue
        run = Run(contender, size, keys=keys, **result)
        runs.append(run)
        if size == compared:
            hashes = read_hashes(client, project, sample)
            if contender == "feast":
                feast_hashes = hashes
            elif feast_hashes is not None:
                reordered = compare_hashes(sample, hashes, feast_hashes)
                console.print(
                    f"  ours' hashes of {len(sample):,} drivers hold Feast's values; "
                    f"{reordered:,} fields differ in bytes only (map entries in another order)"
                    if reordered
                    else f"  ours' hashes of {len(sample):,} drivers are byte for byte Feast's"
                )
                run.bytes_only_differences = reordered
        console.print(
            f"  {contender}: {run.seconds:.1f} s, {run.rows_per_s:,.0f} rows/s, peak RSS "
            f"{run.peak_rss_mib:,.0f} MiB (after imports {run.rss_after_imports_mib:,.0f})"
        )
    return runs


# --- the benchmark ------------------------------------------------------------------------------


def online_reads(
    dl: datalayer.DataLayer,
    fs: Any,
    size: Size,
    drivers: int,
    seed: int,
    profile: bool,
) -> dict[int, dict[str, Stats]]:
    """Per batch size, the stats of ours and Feast for each pattern (all four interleaved)."""
    readers: dict[str, Callable[[Rows], object]] = {}
    for pattern, service_name in SERVICES.items():
        features = dl.features(pattern)
        service = fs.get_feature_service(service_name)
        readers[f"ours {pattern}"] = features.online
        readers[f"feast {pattern}"] = functools.partial(feast_online, fs, service)
    rng = np.random.default_rng([seed, 1])
    requests = {
        batch: [
            request_rows(FIRST_DRIVER + rng.choice(drivers, batch, replace=False), rng)
            for _ in range(size.requests[batch])
        ]
        for batch in BATCHES
    }
    for batch in BATCHES:
        for rows in requests[batch][:5]:
            for pattern in SERVICES:
                got = readers[f"ours {pattern}"](rows)
                want = readers[f"feast {pattern}"](rows)
                assert isinstance(got, dict) and isinstance(want, dict)
                check_online(f"{pattern}, {batch} entities", got, want)
    console.print("  sanity check: ours == Feast on 5 requests per size and pattern")
    results: dict[int, dict[str, Stats]] = {}
    for batch in BATCHES:
        reqs = requests[batch]
        console.print(
            f"  {batch} entit{'y' if batch == 1 else 'ies'} per request: {size.rounds} rounds "
            f"x {len(reqs):,} requests per contender"
        )
        samples = interleave(
            {name: functools.partial(time_calls, reader, reqs) for name, reader in readers.items()},
            size.rounds,
        )
        results[batch] = {name: summarize(name, s, batch) for name, s in samples.items()}
    if profile:
        for pattern in SERVICES:
            for batch in BATCHES:
                reqs = requests[batch]
                for sort in ("cumulative", "tottime"):
                    console.print(
                        f"ours {pattern}, {batch} entities, {len(reqs)} calls, by {sort}:"
                    )
                    calls = functools.partial(each, readers[f"ours {pattern}"], reqs)
                    console.print(profile_top(calls, limit=25, sort=sort))
    return results


def each(read: Callable[[Rows], object], requests: list[Rows]) -> None:
    for rows in requests:
        read(rows)


def feast_online(fs: Any, service: Any, rows: Rows) -> dict[str, list[Any]]:
    response = fs.get_online_features(features=service, entity_rows=rows, full_feature_names=True)
    result: dict[str, list[Any]] = response.to_dict()
    return result


def training(
    dl: datalayer.DataLayer, store: FeastStore, size: Size, now: datetime, seed: int
) -> tuple[dict[str, Stats], str]:
    fs = store.feature_store
    features = dl.features(TRAINING_PATTERN)
    service = fs.get_feature_service(SERVICES[TRAINING_PATTERN])
    entity_df = entity_frame(size.drivers, size.drivers, now, seed)

    def ours() -> pd.DataFrame:
        result: pd.DataFrame = features.historical(entity_df)
        return result

    def ours_first_call() -> pd.DataFrame:
        store.parquet_indexes.clear()
        return ours()

    def feast() -> pd.DataFrame:
        with quiet():
            job = fs.get_historical_features(
                entity_df=entity_df, features=service, full_feature_names=True
            )
            result: pd.DataFrame = job.to_df()
        return result

    contenders: dict[str, Callable[[], pd.DataFrame]] = {
        "ours": ours,
        "ours-first-call": ours_first_call,
        "feast": feast,
    }
    console.print(f"  checking ours against Feast on {len(entity_df):,} entity rows ...")
    checked = check_training(ours_first_call(), feast(), entity_df)
    console.print(f"  sanity check: {checked}")
    console.print(f"  {size.training_rounds} rounds (the check's calls were the warm-up)")
    samples = interleave(
        {name: functools.partial(time_once, fn) for name, fn in contenders.items()},
        size.training_rounds,
        warmup_rounds=0,
    )
    return {name: summarize(name, s, len(entity_df)) for name, s in samples.items()}, checked


def target(what: str, value: float, minimum: float) -> dict[str, Any]:
    return {"what": what, "target": f">= {minimum:g}x", "value": value, "met": value >= minimum}


def run(size_name: str, seed: int, feast_max: int | None, profile: bool) -> int:
    size = SIZES[size_name]
    drivers = size.drivers
    feast_max = drivers if feast_max is None else feast_max
    launcher = Launcher()
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-template-"))
    project = f"tmpl_{uuid.uuid4().hex[:8]}"
    client: redis.Redis | None = None
    started = time.perf_counter()
    try:
        console.print("starting redis ...")
        redis_url = launcher.start("redis").url
        client = redis.Redis.from_url(redis_url)
        console.print(f"feast init {project} (Feast's CLI) ...")
        repo = init_template(folder, redis_url, project)
        now = datetime.now(UTC).replace(microsecond=0)
        data = repo / "data" / "driver_stats.parquet"
        table = driver_stats(pq.read_schema(data), drivers, now, seed)
        pq.write_table(table, data)
        console.print(f"  {drivers:,} drivers, {table.num_rows:,} rows in {data.name}")
        registry = registry_for(folder, repo)
        console.print("feast apply ...")
        apply(registry)

        window = (now - MATERIALIZE_SPAN, now)
        console.print("[bold]materialization[/]")
        runs = materialization(
            client,
            project,
            folder,
            repo,
            table,
            drivers,
            feast_max,
            size.sample,
            seed,
            window,
            profile,
        )

        with datalayer.open(registry, profile="local") as dl:
            store = dl.store("features")
            assert isinstance(store, FeastStore)
            fs = store.feature_store
            console.print("[bold]online reads[/]")
            online = online_reads(dl, fs, size, drivers, seed, profile)
            console.print(f"[bold]training set[/], pattern {TRAINING_PATTERN}")
            train, checked = training(dl, store, size, now, seed)

        targets = report(size_name, size, runs, online, train)
        write_results(
            "template",
            {
                "size": size_name,
                "code": code_revision(),
                "load_average_1_5_15m_at_end": os.getloadavg(),
                "data": {
                    "drivers": drivers,
                    "rows": table.num_rows,
                    "rows_per_driver": ROWS_PER_DRIVER,
                    "span_hours": SPAN_HOURS,
                    "training_rows": drivers,
                    "training_check": checked,
                },
                "feast_max_drivers": feast_max,
                "targets": targets,
                "online": {
                    f"{batch}_entities": {name: s.as_dict() for name, s in st.items()}
                    for batch, st in online.items()
                },
                "training": {name: s.as_dict() for name, s in train.items()},
                "materialize": [r.as_dict() for r in runs],
            },
        )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        console.print(f"total time {time.perf_counter() - started:.0f} s; load average {load}")
        return 0
    finally:
        if client is not None:
            delete_keys(client, project)
            client.close()
        shutil.rmtree(folder, ignore_errors=True)
        launcher.down()


def report(
    size_name: str,
    size: Size,
    runs: list[Run],
    online: dict[int, dict[str, Stats]],
    train: dict[str, Stats],
) -> list[dict[str, Any]]:
    """Print the tables; return the targets."""
    targets: list[dict[str, Any]] = []
    for batch, st in online.items():
        rows = []
        for pattern in SERVICES:
            ours, feast = st[f"ours {pattern}"], st[f"feast {pattern}"]
            p50, p99 = ratio(feast.median_ns, ours.median_ns), ratio(feast.p99_ns, ours.p99_ns)
            rows.append(
                (
                    pattern,
                    ours.median_ns / 1e6,
                    feast.median_ns / 1e6,
                    f"{p50:.2f}x",
                    ours.p99_ns / 1e6,
                    feast.p99_ns / 1e6,
                    f"{p99:.2f}x",
                )
            )
            who = "1 entity" if batch == 1 else f"{batch} entities"
            targets.append(
                target(f"online {pattern}, {who}: feast / ours, p50", p50, TARGET_ONLINE)
            )
        print_table(
            f"online read, {batch} entit{'y' if batch == 1 else 'ies'}, {size.drivers:,} drivers "
            f"in Redis ({size_name})",
            [
                "pattern",
                "ours p50 ms",
                "feast p50 ms",
                "p50 ratio",
                "ours p99 ms",
                "feast p99 ms",
                "p99 ratio",
            ],
            rows,
            note="v1: conv_rate + on-demand view; v2: the whole view (Map, Json, Struct) + "
            "on-demand view; ratio: feast / ours",
        )
    ours_t, feast_t = train["ours"], train["feast"]
    print_table(
        f"training set, pattern {TRAINING_PATTERN}, {size.drivers:,} entity rows ({size_name})",
        ["contender", "median s", "min s", "max s", "runs", "feast / it"],
        [
            (
                s.name,
                s.median_ns / 1e9,
                s.min_ns / 1e9,
                s.p99_ns / 1e9,
                s.samples,
                f"{ratio(feast_t.median_ns, s.median_ns):.2f}x",
            )
            for s in train.values()
        ],
    )
    targets.append(
        target(
            f"training set {TRAINING_PATTERN}, {size.drivers:,} rows: feast / ours, median",
            ratio(feast_t.median_ns, ours_t.median_ns),
            TARGET_TRAINING,
        )
    )
    feast_runs = {r.drivers: r for r in runs if r.contender == "feast"}
    ours_runs = {r.drivers: r for r in runs if r.contender == "ours"}
    print_table(
        f"materialize {VIEW} into Redis ({size_name})",
        ["contender", "drivers", "seconds", "rows/s", "peak RSS MiB", "rows/s vs feast"],
        [
            (
                r.contender,
                r.drivers,
                r.seconds,
                r.rows_per_s,
                r.peak_rss_mib,
                f"{ratio(r.rows_per_s, feast_runs[r.drivers].rows_per_s):.2f}x"
                if r.contender == "ours" and r.drivers in feast_runs
                else "",
            )
            for r in runs
        ],
        note="each run in its own process, timed from opening the store; a row: one driver's hash",
    )
    compared = max(feast_runs)
    targets.append(
        target(
            f"materialize, {compared:,} drivers: ours rows/s / feast rows/s",
            ratio(ours_runs[compared].rows_per_s, feast_runs[compared].rows_per_s),
            TARGET_MATERIALIZE,
        )
    )
    print_table(
        "targets",
        ["ratio", "target", "measured", "verdict"],
        [
            (
                t["what"],
                t["target"],
                f"{t['value']:.2f}x",
                "[green]met[/]" if t["met"] else "[red]missed[/]",
            )
            for t in targets
        ],
    )
    return targets


def main() -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--child", help=argparse.SUPPRESS)
    extra.add_argument("--feast-max-drivers", type=int, default=None)
    known, rest = extra.parse_known_args()
    if known.child:
        return child(json.loads(known.child))
    args = parse_args(
        "The feast init template at scale: ours against Feast, online, training set and "
        "materialization (also: --feast-max-drivers N, Feast's materialization size).",
        rest,
    )
    return run(args.size, args.seed, known.feast_max_drivers, args.profile)


if __name__ == "__main__":
    sys.exit(main())

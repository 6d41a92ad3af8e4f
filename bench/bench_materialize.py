"""Materialization into Redis: datalayer's ``materialize`` against Feast's, rows/s and peak RSS.

The generated Feast repo of ``bench_online`` (entity ``service``, string join key
``service_id``, 5 feature views of 10 Int64/Float64 features each, TTL 1 day, each view over
its own parquet file; DuckDB offline store, file registry, Redis online store), one repo per
size. Its data, per view, written in chunks with pyarrow (the generator stays small at millions
of entities):

- 3 rows per entity, event times within the 12 hours before the run started (Feast's own
  online read drops values older than the TTL, so the data must be recent), rows shuffled;
- a ``created`` column, from 0 to 3 hours after the event time, so the latest event time wins
  even when an older row was created later;
- 10% of the entities (per view) have their two latest rows at the same event time: the one
  created later must win;
- 5% of the entities (per view) have their latest row after the window's end: it must not win;
- 1% of the values are null, and one entity in 97 has nothing but nulls (Feast still writes its
  hash, with empty values).

Every entity has rows in the window, so each contender writes entities x 5 rows (Feast's unit:
one row per entity and view), into one Redis hash per entity.

Contenders, each in its own fresh subprocess (``--child``), timed from before opening the
store to the end of the call (both child processes import the same modules first; what Feast
imports lazily during a run counts for whoever triggers it):

- ours:  ``datalayer.open(registry).features("bench").materialize(start, end)``;
- feast: ``FeatureStore(repo_path=..., fs_yaml_file=...).materialize(start, end)``.

Peak RSS is the child's own: Linux's VmHWM, the high-water mark of its address space since exec
(``ru_maxrss`` where /proc is missing). A child's ``ru_maxrss`` is no use here: Linux carries the
peak of the forked (or vforked) parent image across exec, so it starts at the parent's RSS,
generator and verifier included (the JSON results keep it for reference). Memory of processes a
contender starts is not counted. The RSS is also sampled every 0.2 s to show how it grows.

Each run has its own Feast project (applied by the parent, untimed), so both write to empty key
spaces; its keys are deleted once it is checked. The check, after every run: the project holds
exactly one key per entity; for a sample of entities (random ones, and ones with duplicate event
times, with a row after the end, with only nulls) Feast's ``get_online_features`` and the raw
hashes (fields, values and ``_ts:view`` event times) equal the latest row computed by DuckDB
over the parquet files (latest event time, then latest created time, within the window); and
where Feast ran at the same size, ours' hashes for the sample are byte for byte Feast's. Any
difference fails the run.

Sizes: quick, 20,000 and 40,000 entities (a minute or two); full, 1,000,000 and 2,000,000.
Feast runs only up to ``--feast-max-entities`` (default: the smaller size; Feast took 506 s and
9.3 GB at 1,000,000 entities on a 2-core machine), so the speedup is taken at the largest size
both ran. ``--entities N`` sets the smaller size (the larger is twice it).

Targets (from the issue): ours >= 5x Feast's rows/s; ours' peak RSS <= 1 GiB; ours' peak RSS
the same within 20% when the number of entities doubles.

Redis comes from the project's launcher ($DATALAYER_REDIS_URL if set, else a container or a
local server). Run from the repository root:

    PYTHONPATH=src:. python bench/bench_materialize.py --size quick   # or --size full,
                                # --entities N, --feast-max-entities N, --profile (an extra,
                                # untimed run of ours at the smaller size under cProfile)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis
from bench_online import (
    JOIN_KEY,
    TTL,
    VIEWS,
    RawReader,
    code_revision,
    entity_id,
    feature_names,
    references,
    view_name,
    write_registry,
    write_repo,
)
from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp
from harness import console, parse_args, print_table, profile_top, ratio, write_results
from tests.services.launcher import Launcher

import datalayer
from datalayer.errors import redact
from datalayer.stores.feast.environment import quiet
from datalayer.stores.feast.store import FeastStore

TIMESTAMP = "event_timestamp"
CREATED = "created"
ROWS_PER_ENTITY = 3
SPAN = timedelta(hours=12)  # event times within the SPAN before the run started
MAX_CREATED_LAG = 3 * 3600  # seconds
DUPLICATE_FRACTION = 0.10
AFTER_END_FRACTION = 0.05
NULL_FRACTION = 0.01
ALL_NULL_EVERY = 97  # entity i has only nulls when i % ALL_NULL_EVERY == ALL_NULL_AT
ALL_NULL_AT = 5
CHUNK_ENTITIES = 50_000  # entities per generated chunk (and parquet row group)
READ_BATCH = 500  # entities per get_online_features call in the check
TARGET_SPEEDUP = 5.0  # ours rows/s / feast rows/s, at least
TARGET_RSS_MIB = 1024.0  # ours' peak RSS, at most (1 GiB)
TARGET_RSS_GROWTH = 0.20  # |ours' peak RSS at 2N / at N - 1|, at most
MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    entities: int  # the smaller size; the larger is twice it
    sample: int  # random entities checked after each run (plus the special cases)


SIZES: dict[str, Size] = {
    "quick": Size(entities=20_000, sample=600),
    "full": Size(entities=1_000_000, sample=2_000),
}

#: Names of the special cases in the sample (see the module docstring).
CASES = ("duplicate_time", "after_end", "all_null")


# --- data -------------------------------------------------------------------------------------


def view_schema(v: int) -> pa.Schema:
    features = [
        pa.field(name, pa.int64() if dtype == "Int64" else pa.float64())
        for name, dtype in feature_names(v)
    ]
    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [pa.field(JOIN_KEY, pa.string()), *features, (TIMESTAMP, stamp), (CREATED, stamp)]
    )


def view_chunk(
    v: int, ids: pa.Array, all_null: np.ndarray, now_s: int, rng: np.random.Generator
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """One view's rows for a chunk of entities, shuffled, and which entities are special cases."""
    n = len(ids)
    # Strictly increasing event times per entity: the last row is the latest.
    ages = np.sort(rng.integers(60, int(SPAN.total_seconds()), (n, ROWS_PER_ENTITY)), axis=1)
    ages = ages[:, ::-1] + np.arange(ROWS_PER_ENTITY - 1, -1, -1)
    event = now_s - ages
    draw = rng.random(n)
    duplicate = draw < DUPLICATE_FRACTION
    after_end = (draw >= DUPLICATE_FRACTION) & (draw < DUPLICATE_FRACTION + AFTER_END_FRACTION)
    event[duplicate, -1] = event[duplicate, -2]
    event[after_end, -1] = now_s + rng.integers(60, 7_200, int(after_end.sum()))
    created = event + rng.integers(0, MAX_CREATED_LAG, (n, ROWS_PER_ENTITY))
    created[duplicate & (created[:, -1] == created[:, -2]), -1] += 1  # a single winner

    order = rng.permutation(n * ROWS_PER_ENTITY)
    entity = np.repeat(np.arange(n), ROWS_PER_ENTITY)[order]
    rows = len(order)
    nulls = all_null[entity]
    columns: list[pa.Array] = [ids.take(pa.array(entity))]
    for _, dtype in feature_names(v):
        mask = nulls | (rng.random(rows) < NULL_FRACTION)
        values: np.ndarray
        if dtype == "Int64":
            values = rng.integers(0, 1_000_000, rows, dtype=np.int64)
        else:
            values = rng.random(rows) * 1_000
        columns.append(pa.array(values, mask=mask))
    stamp = pa.timestamp("us", tz="UTC")
    columns.append(pa.array(event.ravel()[order] * 1_000_000, stamp))
    columns.append(pa.array(created.ravel()[order] * 1_000_000, stamp))
    table = pa.Table.from_arrays(columns, schema=view_schema(v))
    return table, {"duplicate_time": duplicate, "after_end": after_end}


def write_data(data: Path, entities: int, now_s: int, seed: int, per_case: int) -> dict[str, Any]:
    """Every view's parquet file, a chunk of entities at a time; returns the row count and
    about ``per_case`` entity ids of each special case, spread over all chunks and views."""
    data.mkdir(parents=True, exist_ok=True)
    writers = [
        pq.ParquetWriter(data / f"{view_name(v)}.parquet", view_schema(v)) for v in range(VIEWS)
    ]
    chunks = math.ceil(entities / CHUNK_ENTITIES)
    picks = math.ceil(per_case / chunks / VIEWS)
    special: dict[str, list[str]] = {case: [] for case in CASES}
    rows = 0
    try:
        for c, low in enumerate(range(0, entities, CHUNK_ENTITIES)):
            index = np.arange(low, min(low + CHUNK_ENTITIES, entities))
            names = [entity_id(i) for i in index.tolist()]
            ids = pa.array(names, pa.string())
            all_null = index % ALL_NULL_EVERY == ALL_NULL_AT
            for v, writer in enumerate(writers):
                rng = np.random.default_rng([seed, c, v])
                table, cases = view_chunk(v, ids, all_null, now_s, rng)
                writer.write_table(table, row_group_size=table.num_rows)
                rows += table.num_rows
                if v == 0:  # all-null entities are the same in every view
                    cases["all_null"] = all_null
                for case, mask in cases.items():
                    members = np.flatnonzero(mask)
                    wanted = picks * VIEWS if case == "all_null" else picks
                    chosen = rng.choice(members, min(wanted, len(members)), replace=False)
                    special[case].extend(names[i] for i in chosen.tolist())
    finally:
        for writer in writers:
            writer.close()
    return {"rows": rows, "special": {case: sorted(set(ids)) for case, ids in special.items()}}


def expected_latest(
    data: Path, sample: list[str], start: datetime, end: datetime
) -> dict[str, dict[str, Any]]:
    """Per sampled entity: ``view__feature`` -> the value of its view's latest row in
    [start, end] (latest event time, then latest created time), and ``_ts:view`` -> that row's
    event time in seconds; what any correct materialization leaves in the online store."""
    expected: dict[str, dict[str, Any]] = {entity: {} for entity in sample}
    con = duckdb.connect()
    try:
        con.register("sample", pa.table({"id": sample}))
        for v in range(VIEWS):
            view = view_name(v)
            names = [name for name, _ in feature_names(v)]
            path = str(data / f"{view}.parquet").replace("'", "''")
            rows = con.execute(
                f"""
                SELECT {JOIN_KEY}, epoch({TIMESTAMP})::BIGINT, {", ".join(names)}
                FROM read_parquet('{path}') JOIN sample ON {JOIN_KEY} = sample.id
                WHERE {TIMESTAMP} BETWEEN to_timestamp(?) AND to_timestamp(?)
                QUALIFY row_number() OVER (
                    PARTITION BY {JOIN_KEY} ORDER BY {TIMESTAMP} DESC, {CREATED} DESC) = 1
                """,
                [start.timestamp(), end.timestamp()],
            ).fetchall()
            for entity, seconds, *values in rows:
                expected[entity][f"_ts:{view}"] = seconds
                expected[entity].update(
                    (f"{view}__{n}", value) for n, value in zip(names, values, strict=True)
                )
    finally:
        con.close()
    empty = [entity for entity, columns in expected.items() if not columns]
    if empty:
        raise SystemExit(f"generator: no rows in the window for {empty[:3]}")
    return expected


def choose_sample(entities: int, size: Size, special: dict[str, list[str]], seed: int) -> list[str]:
    rng = np.random.default_rng([seed, entities])
    picked = rng.choice(entities, min(size.sample, entities), replace=False)
    ids = {entity_id(int(i)) for i in picked} | {entity_id(0), entity_id(entities - 1)}
    for members in special.values():
        ids.update(members)
    return sorted(ids)


# --- Redis ------------------------------------------------------------------------------------


def project_keys(client: redis.Redis, project: str) -> Iterator[bytes]:
    """Feast's keys end with the project name (and bench project names share no suffix)."""
    yield from client.scan_iter(match=b"*" + project.encode(), count=10_000)


def delete_keys(client: redis.Redis, project: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in project_keys(client, project):
        batch.append(key)
        if len(batch) >= 10_000:
            deleted += int(client.unlink(*batch))  # type: ignore[arg-type]
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))  # type: ignore[arg-type]
    return deleted


def read_hashes(client: redis.Redis, project: str, sample: list[str]) -> dict[str, dict[Any, Any]]:
    reader = RawReader(client, project)
    pipe = client.pipeline(transaction=False)
    for entity in sample:
        pipe.hgetall(reader.key(entity))  # type: ignore[arg-type]  # bytes keys are fine
    return dict(zip(sample, pipe.execute(), strict=True))


def hash_layout() -> dict[bytes, str]:
    """Feast's hash fields -> the expected column (``view__feature``) or ``_ts:view``."""
    layout = {}
    for v in range(VIEWS):
        view = view_name(v)
        for name, _ in feature_names(v):
            layout[_mmh3(f"{view}:{name}")] = f"{view}__{name}"
        layout[f"_ts:{view}".encode()] = f"_ts:{view}"
    return layout


def decode_field(column: str, raw: bytes) -> Any:
    """A hash field as a Python value: seconds for ``_ts:view``, else the ValueProto's value."""
    if column.startswith("_ts:"):
        stamp = Timestamp()
        stamp.ParseFromString(raw)
        return stamp.seconds if not stamp.nanos else stamp.seconds + stamp.nanos / 1e9
    value = ValueProto()
    value.ParseFromString(raw)
    kind = value.WhichOneof("val")
    return None if kind is None else getattr(value, kind)


# --- checks -----------------------------------------------------------------------------------


def same(got: Any, want: Any) -> bool:
    """Equal and of the same type (an Int64 feature must come back as an int, not a float)."""
    return type(got) is type(want) and got == want


def check_run(
    name: str,
    fs: Any,
    client: redis.Redis,
    project: str,
    entities: int,
    sample: list[str],
    expected: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[Any, Any]], int]:
    """Fail loudly unless the run left exactly what Feast's materialize should; returns the
    sample's raw hashes and the project's key count."""
    problems: list[str] = []
    keys = sum(1 for _ in project_keys(client, project))
    if keys != entities:
        problems.append(f"{keys:,} keys in Redis for {entities:,} entities")

    refs = references()
    for low in range(0, len(sample), READ_BATCH):
        batch = sample[low : low + READ_BATCH]
        with quiet():
            got = fs.get_online_features(
                features=refs, entity_rows=[{JOIN_KEY: e} for e in batch], full_feature_names=True
            ).to_dict()
        for column, values in got.items():
            if column == JOIN_KEY:
                continue
            for entity, value in zip(batch, values, strict=True):
                want = expected[entity][column]
                if not same(value, want):
                    problems.append(
                        f"get_online_features {entity} {column}: {value!r}, expected {want!r}"
                    )

    layout = hash_layout()
    hashes = read_hashes(client, project, sample)
    for entity, fields in hashes.items():
        if set(fields) != set(layout):
            problems.append(
                f"hash of {entity}: {len(fields)} fields, expected Feast's {len(layout)}"
            )
            continue
        for raw_field, raw in fields.items():
            column = layout[raw_field]
            value, want = decode_field(column, raw), expected[entity][column]
            if not same(value, want):
                problems.append(f"hash of {entity} {column}: {value!r}, expected {want!r}")
    fail(name, problems)
    return hashes, keys


def compare_hashes(ours: dict[str, dict[Any, Any]], feast: dict[str, dict[Any, Any]]) -> None:
    """Ours' hashes must be byte for byte Feast's (keys differ only by the project suffix)."""
    layout = hash_layout()
    problems = []
    for entity, fields in ours.items():
        theirs = feast[entity]
        for raw_field in sorted(set(fields) | set(theirs)):
            mine, other = fields.get(raw_field), theirs.get(raw_field)
            if mine != other:
                column = layout.get(raw_field, repr(raw_field))
                problems.append(f"{entity} {column}: ours {mine!r}, feast {other!r}")
    fail("ours vs feast (raw hashes)", problems)


def fail(name: str, problems: list[str]) -> None:
    if problems:
        listing = "\n  ".join(problems[:15])
        raise SystemExit(f"{name}: {len(problems):,} mismatches, first ones:\n  {listing}")


# --- one contender in its own process -----------------------------------------------------------


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return math.nan
    return pages * resource.getpagesize() / MIB


def ru_maxrss_mib() -> float:
    """``ru_maxrss`` (KiB on Linux). In a child it is at least the parent's RSS when it was
    started: Linux carries the forked (or vforked) address space's peak across exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mib() -> float:
    """This process's peak RSS since exec: Linux's VmHWM, the high-water mark of the current
    address space (``ru_maxrss`` where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return ru_maxrss_mib()


class RssSampler(threading.Thread):
    """Records the RSS every ``interval`` seconds, to show how memory grows during a run."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.samples.append(current_rss_mib())

    def stop(self, points: int = 10) -> list[float]:
        """Stop; the RSS at ``points`` evenly spaced instants of the run (the last at its end)."""
        self._done.set()
        self.join()
        if not self.samples:
            return []
        count = min(points, len(self.samples))
        picks = np.linspace(0, len(self.samples) - 1, count).round().astype(int).tolist()
        return [round(self.samples[i], 1) for i in picks]


def child(spec: dict[str, Any]) -> int:
    """Run one contender's materialize and print its time and memory as one JSON line."""
    start = datetime.fromisoformat(spec["start"])
    end = datetime.fromisoformat(spec["end"])
    after_imports = peak_rss_mib()
    sampler = RssSampler()
    sampler.start()

    def materialize() -> None:
        if spec["contender"] == "ours":
            with datalayer.open(spec["registry"], profile="bench") as dl:
                dl.features("bench").materialize(start, end)
        else:
            store = FeatureStore(repo_path=spec["repo"], fs_yaml_file=Path(spec["yaml"]))
            store.materialize(start, end)

    return measured_in_child(materialize, bool(spec.get("profile")), sampler, after_imports)


def measured_in_child(
    materialize: Callable[[], object], profile: bool, sampler: RssSampler, after_imports: float
) -> int:
    """Run a child's contender, then print its time and memory as one JSON line (its
    cProfile listing too, when asked): stdout carries only that line."""
    listing = ""
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        if profile:
            listing = profile_top(materialize, limit=30, sort="cumulative")
        else:
            materialize()
    seconds = time.perf_counter() - began
    timeline = sampler.stop()
    result = {
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "ru_maxrss_mib": ru_maxrss_mib(),
        "rss_after_imports_mib": after_imports,
        "rss_timeline_mib": timeline,
    }
    if listing:
        result["profile"] = listing
    print(json.dumps(result), flush=True)
    return 0


def run_child(spec: dict[str, Any], env: dict[str, str], log: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    with log.open("w") as errors:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"{spec['contender']} failed (exit {done.returncode}):\n{redact(tail)}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark ------------------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    entities: int
    seconds: float
    peak_rss_mib: float
    ru_maxrss_mib: float
    rss_after_imports_mib: float
    rss_timeline_mib: list[float] = field(default_factory=list)
    keys: int = 0
    checked_entities: int = 0

    @property
    def rows(self) -> int:
        return self.entities * VIEWS

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "rows_per_s": self.rows_per_s}


@dataclass(frozen=True)
class Setup:
    """What every run of one size shares."""

    entities: int
    folder: Path
    repo: Path
    redis_url: str
    window: tuple[datetime, datetime]
    sample: list[str]
    expected: dict[str, dict[str, Any]]


def measure(
    setup: Setup, contender: str, client: redis.Redis, project: str, profile: bool = False
) -> tuple[Run, dict[str, dict[Any, Any]]]:
    """Apply a fresh project, materialize it in a child process, check what it wrote."""
    entities, window, sample = setup.entities, setup.window, setup.sample
    run_folder = setup.folder / project
    run_folder.mkdir()
    registry = write_registry(run_folder, setup.repo, setup.redis_url, project)
    with datalayer.open(registry, profile="bench") as dl:
        with quiet():
            dl.apply()
        store = dl.store("features")
        assert isinstance(store, FeastStore)
        delete_keys(client, project)  # a new project has none: both start from an empty space
        spec = {
            "contender": contender,
            "registry": str(registry),
            "repo": str(store.repo),
            "yaml": str(store.yaml_file),
            "start": window[0].isoformat(),
            "end": window[1].isoformat(),
            "profile": profile,
        }
        env = dict(os.environ)
        if contender == "feast":  # what datalayer sets around its own Feast calls
            env.update(store.config.environment())
        label = f"{contender} (cProfile)" if profile else contender
        console.print(f"  {label}: materializing {entities:,} entities x {VIEWS} views ...")
        result = run_child(spec, env, run_folder / f"{contender}.log")
        hashes, keys = check_run(
            label, store.feature_store, client, project, entities, sample, setup.expected
        )
    listing = result.pop("profile", "")
    run = Run(contender, entities, keys=keys, checked_entities=len(sample), **result)
    if listing:
        console.print(f"  {label}, by cumulative time:\n{listing}")
    console.print(
        f"  {label}: {run.seconds:.1f} s, {run.rows_per_s:,.0f} rows/s, peak RSS "
        f"{run.peak_rss_mib:,.0f} MiB (after imports {run.rss_after_imports_mib:,.0f}); RSS over "
        f"the run: {', '.join(f'{x:,.0f}' for x in run.rss_timeline_mib)} MiB; "
        f"checked {keys:,} keys and {len(sample):,} entities"
    )
    return run, hashes


def run(size_name: str, seed: int, base: int, feast_max: int, profile: bool) -> int:
    size = SIZES[size_name]
    launcher = Launcher()
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-materialize-"))
    tag = uuid.uuid4().hex[:8]
    client: redis.Redis | None = None
    live: list[str] = []  # projects whose keys may still be in Redis
    started = time.perf_counter()
    try:
        console.print("starting redis ...")
        redis_url = launcher.start("redis").url
        client = redis.Redis.from_url(redis_url)
        now = datetime.now(UTC).replace(microsecond=0)
        window = (now - TTL, now)
        runs: list[Run] = []
        special_counts: dict[str, dict[str, int]] = {}
        for entities in (base, 2 * base):
            size_folder = folder / f"n{entities}"
            data, repo = size_folder / "data", size_folder / "feature_repo"
            console.print(
                f"[bold]{entities:,} entities[/]: writing {VIEWS} views x {ROWS_PER_ENTITY} rows "
                "per entity ..."
            )
            generated = write_data(data, entities, int(now.timestamp()), seed, size.sample // 4)
            write_repo(repo, data)
            sample = choose_sample(entities, size, generated["special"], seed)
            expected = expected_latest(data, sample, *window)
            special_counts[str(entities)] = {k: len(v) for k, v in generated["special"].items()}
            setup = Setup(entities, size_folder, repo, redis_url, window, sample, expected)
            feast_hashes: dict[str, dict[Any, Any]] | None = None
            contenders = ["feast"] if entities <= feast_max else []
            contenders += ["ours", "profiled"] if profile and entities == base else ["ours"]
            for contender in contenders:
                project = f"bm_{tag}_{contender}_{entities}"
                live.append(project)
                if contender == "profiled":  # an extra run, not in the results
                    measure(setup, "ours", client, project, profile=True)
                else:
                    measured, hashes = measure(setup, contender, client, project)
                    runs.append(measured)
                    if contender == "feast":
                        feast_hashes = hashes
                    elif feast_hashes is not None:
                        compare_hashes(hashes, feast_hashes)
                        console.print("  ours' hashes for the sample are byte for byte Feast's")
                delete_keys(client, project)
                live.remove(project)
            shutil.rmtree(size_folder, ignore_errors=True)
        report(size_name, base, feast_max, runs, special_counts, generated["rows"])
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        console.print(f"total time {time.perf_counter() - started:.0f} s; load average {load}")
        return 0
    finally:
        if client is not None:
            for project in live:
                delete_keys(client, project)
            client.close()
        shutil.rmtree(folder, ignore_errors=True)
        launcher.down()


def report(
    size_name: str,
    base: int,
    feast_max: int,
    runs: list[Run],
    special_counts: dict[str, dict[str, int]],
    largest_rows: int,
) -> None:
    feast_runs = {r.entities: r for r in runs if r.contender == "feast"}
    ours_runs = {r.entities: r for r in runs if r.contender == "ours"}

    def speedup(r: Run) -> str:
        other = feast_runs.get(r.entities)
        return f"{ratio(r.rows_per_s, other.rows_per_s):.2f}x" if other else "-"

    compared = max(feast_runs, default=None)
    note = (
        f"Feast ran up to {feast_max:,} entities (--feast-max-entities); rows/s are compared "
        f"at {compared:,} entities, the largest size both ran."
        if compared
        else "Feast did not run (--feast-max-entities below both sizes)."
    )
    print_table(
        f"materialize into Redis, {VIEWS} views x 10 features ({size_name})",
        [
            "contender",
            "entities",
            "rows written",
            "seconds",
            "rows/s",
            "peak RSS MiB",
            "RSS after imports",
            "rows/s vs feast",
            "peak RSS / 1 GiB",
        ],
        [
            (
                r.contender,
                r.entities,
                r.rows,
                r.seconds,
                r.rows_per_s,
                r.peak_rss_mib,
                r.rss_after_imports_mib,
                speedup(r) if r.contender == "ours" else "",
                f"{r.peak_rss_mib / TARGET_RSS_MIB:.2f}",
            )
            for r in sorted(runs, key=lambda r: (r.entities, r.contender))
        ],
        note=note,
    )

    targets: list[dict[str, Any]] = []
    if compared:
        value = ratio(ours_runs[compared].rows_per_s, feast_runs[compared].rows_per_s)
        targets.append(
            {
                "what": f"ours rows/s / feast rows/s at {compared:,} entities",
                "target": f">= {TARGET_SPEEDUP:g}x",
                "value": f"{value:.2f}x",
                "met": value >= TARGET_SPEEDUP,
            }
        )
    for entities, r in sorted(ours_runs.items()):
        targets.append(
            {
                "what": f"ours peak RSS at {entities:,} entities",
                "target": f"<= {TARGET_RSS_MIB:,.0f} MiB",
                "value": f"{r.peak_rss_mib:,.0f} MiB",
                "met": r.peak_rss_mib <= TARGET_RSS_MIB,
            }
        )
    growth = ratio(ours_runs[2 * base].peak_rss_mib, ours_runs[base].peak_rss_mib)
    targets.append(
        {
            "what": f"ours peak RSS at {2 * base:,} / at {base:,} entities",
            "target": f"{1 - TARGET_RSS_GROWTH:.1f}x .. {1 + TARGET_RSS_GROWTH:.1f}x",
            "value": f"{growth:.2f}x",
            "met": abs(growth - 1) <= TARGET_RSS_GROWTH,
        }
    )
    if len(feast_runs) == 2:
        feast_growth = ratio(feast_runs[2 * base].peak_rss_mib, feast_runs[base].peak_rss_mib)
        targets.append(
            {
                "what": f"feast peak RSS at {2 * base:,} / at {base:,} entities",
                "target": "(none)",
                "value": f"{feast_growth:.2f}x",
                "met": None,
            }
        )
    print_table(
        "targets",
        ["ratio", "target", "measured", "verdict"],
        [
            (
                t["what"],
                t["target"],
                t["value"],
                "-" if t["met"] is None else "[green]met[/]" if t["met"] else "[red]missed[/]",
            )
            for t in targets
        ],
        note="the targets are set for the full size (1,000,000 and 2,000,000 entities)",
    )
    write_results(
        "materialize",
        {
            "size": size_name,
            "code": code_revision(),
            "load_average_1_5_15m_at_end": os.getloadavg(),
            "feature_data": {
                "entities": [base, 2 * base],
                "views": VIEWS,
                "features_per_view": len(feature_names(0)),
                "rows_per_entity_per_view": ROWS_PER_ENTITY,
                "feature_rows_at_largest_size": largest_rows,
                "span_hours": SPAN.total_seconds() / 3600,
                "duplicate_time_fraction": DUPLICATE_FRACTION,
                "after_end_fraction": AFTER_END_FRACTION,
                "null_fraction": NULL_FRACTION,
                "all_null_every": ALL_NULL_EVERY,
                "special_cases_checked": special_counts,
            },
            "feast_max_entities": feast_max,
            "speedup_compared_at_entities": compared,
            "targets": targets,
            "runs": [r.as_dict() for r in runs],
        },
    )


def main() -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--child", help=argparse.SUPPRESS)
    extra.add_argument("--entities", type=int, default=None)
    extra.add_argument("--feast-max-entities", type=int, default=None)
    known, rest = extra.parse_known_args()
    if known.child:
        return child(json.loads(known.child))
    args = parse_args(
        "Materialization into Redis: ours against Feast's materialize, rows/s and peak RSS "
        "(also: --entities N, the smaller size; --feast-max-entities N, Feast's largest size).",
        rest,
    )
    base = known.entities or SIZES[args.size].entities
    feast_max = base if known.feast_max_entities is None else known.feast_max_entities
    return run(args.size, args.seed, base, feast_max, args.profile)


if __name__ == "__main__":
    sys.exit(main())

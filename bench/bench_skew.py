"""``datalayer skew`` on a large log: its comparison against building the same training set.

The repo and data of ``bench_training`` (5 views of 10 Int64/Float64 features over parquet
files, local profile, pattern ``train50``). The log: one landed row per entity row of
``bench_training.entity_frame`` (quick 100,000, full 1,000,000), holding the values a
consistent online store would have served (the training set's own values at the row's
instant), written as the landed parquet files of ``features land-logs`` (50,000 rows a file).

Measured, each in a fresh process so peak memory is the job's own:

- training set: ``historical()`` of the same entity rows (its per-file indexes built by a
  first call, as the skew check's first chunk builds them too);
- skew: ``feature_skew.compare`` over the landed files (every chunk rebuilt with
  ``historical()`` and compared column by column), on the log and on the log doubled.

Targets (from the issue): skew <= 3x the training set's time; skew's peak RSS on the doubled
log within 1.2x of the log's (memory flat when the log doubles).

    PYTHONPATH=src:. python bench/bench_skew.py --size quick   # or --size full
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
from bench_online import code_revision, write_repo
from bench_training import entity_frame, write_data, write_local_yaml, write_registry
from harness import console, parse_args, print_table, write_results

import datalayer

SIZES = {
    "quick": {"rows": 100_000, "services": 2_000},
    "full": {"rows": 1_000_000, "services": 10_000},
}
DAYS = 7
FILE_ROWS = 50_000
PATTERN = "train50"
TARGET_RATIO = 3.0
TARGET_MEMORY = 1.2


def land(registry: Path, entity_df: pd.DataFrame, folder: Path, copies: int) -> None:
    """The log a consistent store would have produced, as landed parquet files."""
    with datalayer.open(registry, "local") as dl:
        served = dl.features(PATTERN).historical(entity_df)
    features = [c for c in served.columns if "__" in c]
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for start in range(0, len(served), FILE_ROWS):
            part = served.iloc[start : start + FILE_ROWS]
            instants = part["event_timestamp"].reset_index(drop=True)  # UTC, as landing writes
            frame = pd.DataFrame(
                {
                    "request_id": [f"r{copy}-{i}" for i in range(start, start + len(part))],
                    "row": 0,
                    "requested_at": instants,
                    "logged_at": instants,
                    "model": None,
                    "version": None,
                    "features_read": ",".join(features),
                    "service_id": part["service_id"].to_numpy(),
                    **{c: part[c].to_numpy() for c in features},
                }
            )
            frame.to_parquet(folder / f"part-{copy:02d}-{start:09d}.parquet", index=False)


def child(job: str, registry: Path, argument: Path) -> None:
    """One measured job in this process: prints its seconds and peak RSS as JSON."""
    from datalayer.categories.feature_log import ParquetFolder
    from datalayer.categories.feature_skew import Thresholds, compare

    with datalayer.open(registry, "local") as dl:
        view = dl.features(PATTERN)
        if job == "training":
            entity_df = pd.read_parquet(argument)
            view.historical(entity_df.head(1000))  # the per-file indexes, as skew's first chunk
            began = time.perf_counter()
            view.historical(entity_df)
        else:
            view.historical(pd.read_parquet(argument.parent / "entities.parquet").head(1000))
            began = time.perf_counter()
            report = compare(
                view, ParquetFolder(argument).chunks(None, None), thresholds=Thresholds()
            )
            if report.failures:
                raise SystemExit(f"skew found differences in a consistent log: {report.failures}")
        seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_rss": peak}))


def measure(job: str, registry: Path, argument: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", job, str(registry), str(argument)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    if done.returncode:
        raise SystemExit(f"{job}: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(size: str, seed: int) -> int:
    settings = SIZES[size]
    rows, services = settings["rows"], settings["services"]
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-skew-"))
    try:
        repo, data = folder / "feature_repo", folder / "data"
        features = write_data(data, services, DAYS, seed)
        write_repo(repo, data)
        write_local_yaml(repo)
        registry = write_registry(folder, repo, f"bench_{uuid.uuid4().hex[:8]}")
        with datalayer.open(registry, "local") as dl:
            dl.apply()
        entity_df = entity_frame(rows, services, DAYS, seed, features)
        entities = folder / "entities.parquet"
        entity_df.to_parquet(entities, index=False)
        console.print(f"landing a log of {rows:,} reads x 50 features, and one twice as long ...")
        land(registry, entity_df, folder / "log", 1)
        land(registry, entity_df, folder / "log2", 2)
        console.print("measuring (each job in its own process) ...")
        training = measure("training", registry, entities)
        skew = measure("skew", registry, folder / "log")
        doubled = measure("skew", registry, folder / "log2")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = skew["seconds"] / training["seconds"]
    memory = doubled["peak_rss"] / skew["peak_rss"]
    mib = 1024 * 1024
    print_table(
        f"skew of {rows:,} logged reads x 50 features ({size})",
        ["job", "seconds", "peak RSS MiB"],
        [
            ("training set, historical()", training["seconds"], training["peak_rss"] / mib),
            ("skew", skew["seconds"], skew["peak_rss"] / mib),
            ("skew, log doubled", doubled["seconds"], doubled["peak_rss"] / mib),
        ],
    )
    targets = [
        {
            "what": "skew / training set, seconds",
            "target": f"<= {TARGET_RATIO}x",
            "value": ratio,
            "met": ratio <= TARGET_RATIO,
        },
        {
            "what": "skew peak RSS, log doubled / log",
            "target": f"<= {TARGET_MEMORY}x",
            "value": memory,
            "met": memory <= TARGET_MEMORY,
        },
    ]
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
    write_results(
        "skew",
        {
            "size": size,
            "code": code_revision(),
            "rows": rows,
            "training": training,
            "skew": skew,
            "skew_doubled": doubled,
            "targets": targets,
        },
    )
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    args = parse_args("datalayer skew on a large log, against building the same training set.")
    return run(args.size, args.seed)


if __name__ == "__main__":
    sys.exit(main())

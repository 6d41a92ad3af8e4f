"""Shared helpers for the benchmark scripts in ``bench/`` (not tests).

- ``parse_args``: the ``--size quick|full`` option (plus ``--profile`` and ``--seed``);
- ``interleave``: runs contenders in rounds (A, B, C, then B, C, A, ...) after a warm-up
  round, so machine noise (other processes, GC, server checkpoints) hits each alike;
- ``time_calls``: per-call latencies with ``time.perf_counter_ns``;
- ``Stats`` / ``summarize``: median, p99, mean and ops/s of the samples;
- ``ratio``, ``print_table`` (rich) and ``write_results`` (``bench/results/<name>.json``);
- ``profile_top``: a short cProfile listing of one contender.

Run a script from the repository root: ``PYTHONPATH=. python bench/bench_xxx.py --size quick``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Wide enough for the tables when output goes to a file or pipe.
console = Console(width=None if sys.stdout.isatty() else 130)

T = TypeVar("T")

#: One round of one contender: returns its samples in nanoseconds (one per timed unit).
Round = Callable[[], list[int]]


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size",
        choices=("quick", "full"),
        default="quick",
        help="quick: about a minute in all; full: more rounds and messages",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the benchmark, cProfile our contender and print its top functions",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed for random keys")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Stats:
    """Summary of samples in nanoseconds; ``units`` is how many operations each sample covers."""

    name: str
    samples: int
    units: int
    median_ns: float
    p99_ns: float
    mean_ns: float
    min_ns: float
    total_ns: int

    @property
    def ops_per_s(self) -> float:
        """Operations per second over the whole timed span (units / total time)."""
        return self.units * 1e9 / self.total_ns if self.total_ns else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ops_per_s": self.ops_per_s}


def percentile(sorted_samples: Sequence[int], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of already sorted samples."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


def summarize(name: str, samples: Sequence[int], units_per_sample: int = 1) -> Stats:
    ordered = sorted(samples)
    return Stats(
        name=name,
        samples=len(ordered),
        units=len(ordered) * units_per_sample,
        median_ns=float(statistics.median(ordered)) if ordered else math.nan,
        p99_ns=percentile(ordered, 99),
        mean_ns=statistics.fmean(ordered) if ordered else math.nan,
        min_ns=float(ordered[0]) if ordered else math.nan,
        total_ns=sum(ordered),
    )


def ratio(ours: float, baseline: float) -> float:
    """ours / baseline (inf when the baseline is 0)."""
    return ours / baseline if baseline else math.inf


def time_calls(fn: Callable[[T], object], args: Iterable[T]) -> list[int]:
    """Call ``fn(arg)`` for each arg and return each call's duration in nanoseconds."""
    clock = time.perf_counter_ns
    samples = []
    for arg in args:
        started = clock()
        fn(arg)
        samples.append(clock() - started)
    return samples


def time_once(fn: Callable[[], object]) -> list[int]:
    """One sample: the duration of ``fn()`` in nanoseconds (for throughput rounds)."""
    started = time.perf_counter_ns()
    fn()
    return [time.perf_counter_ns() - started]


def interleave(
    contenders: Mapping[str, Round], rounds: int, warmup_rounds: int = 1
) -> dict[str, list[int]]:
    """Run every contender once per round, rotating who goes first; warm-up rounds are dropped.

    Round r runs the contenders starting at index r (A, B, C / B, C, A / ...), so each one is
    interleaved with the others and none always runs first after a pause.
    """
    names = list(contenders)
    for _ in range(warmup_rounds):
        for name in names:
            contenders[name]()
    samples: dict[str, list[int]] = {name: [] for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            samples[name].extend(contenders[name]())
        if console.is_terminal:
            console.print(f"  round {r + 1}/{rounds} done", style="dim", end="\r")
    return samples


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], note: str = ""
) -> None:
    table = Table(title=title, caption=note or None)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console.print(table)


def fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def environment() -> dict[str, Any]:
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (the folder is created and git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"benchmark": name, "environment": environment(), **payload}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    console.print(f"results written to {path}")
    return path


def profile_top(fn: Callable[[], object], limit: int = 20, sort: str = "tottime") -> str:
    """cProfile ``fn()`` and return the top ``limit`` functions by ``sort`` as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(limit)
    return out.getvalue()

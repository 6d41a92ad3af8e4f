"""What a rollout costs: a key-value pattern moving from the embedded store to Redis.

Contenders, each a key-value pattern opened through datalayer, in rounds that rotate who goes
first (``harness.interleave``):

- plain-old: the pattern on the embedded store (SQLite), no rollout;
- plain-new: the pattern on Redis, no rollout;
- shadow: the pattern in ``shadow`` (writes both stores; 1% of reads also read Redis);
- split: the pattern in ``split`` at 50% (writes both stores).

Targets (from the issue): a write in ``shadow`` and in ``split`` costs at most plain-old's
plus plain-new's write, plus 10%; a read in ``shadow`` with a 1% comparison sample costs at
most 1.1x plain-old's read. Medians of per-round means.

Redis comes from the project's launcher ($DATALAYER_REDIS_URL if set, else a local server).

    PYTHONPATH=src:. python bench/bench_rollout.py --size quick   # or --size full
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from harness import (
    console,
    interleave,
    parse_args,
    print_table,
    profile_top,
    ratio,
    time_once,
    write_results,
)
from tests.services.launcher import Launcher

import datalayer
from datalayer.testing.registry import write_registry

SIZES = {"quick": (15, 300), "full": (40, 1000)}  # rounds, operations per round
KEYS = 2_000
WRITE_TARGET = 1.10
READ_TARGET = 1.10


def registry(folder: Path, redis_url: str, prefix: str) -> Path:
    stores = {
        "cache": {"type": "embedded-kv", "path": str(folder / "kv.db")},
        "redis": {"type": "redis", "url": redis_url},
    }
    kv = {"category": "key-value"}
    patterns = {
        "plain_old": {**kv, "store": "cache", "prefix": f"{prefix}o"},
        "plain_new": {**kv, "store": "redis", "prefix": f"{prefix}n"},
        "shadow": {
            **kv,
            "store": "cache",
            "prefix": f"{prefix}s",
            "rollout": {"to": "redis", "stage": "shadow", "compare_sample": 0.01},
        },
        "split": {
            **kv,
            "store": "cache",
            "prefix": f"{prefix}p",
            "rollout": {"to": "redis", "stage": "split", "percent": 50},
        },
    }
    return write_registry(folder, {"bench": stores}, patterns)


def run(size: str, profile: bool) -> int:
    rounds, per_round = SIZES[size]
    launcher = Launcher()
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-rollout-"))
    prefix = f"b{uuid.uuid4().hex[:8]}"
    try:
        console.print("starting redis ...")
        url = launcher.start("redis").url
        with datalayer.open(registry(folder, url, prefix), "bench") as dl:
            names = ("plain_old", "plain_new", "shadow", "split")
            spaces = {name: dl.kv(name) for name in names}
            value = {"incident_id": "inc-1", "hits": 3, "last_seen": "2026-12-02T12:00:00Z"}
            for space in spaces.values():
                for i in range(KEYS):
                    space.set(f"k{i}", value)
            keys = [f"k{i % KEYS}" for i in range(per_round)]

            def writes(space: Any) -> Any:
                return lambda: time_once(lambda: [space.set(k, value) for k in keys])

            def reads(space: Any) -> Any:
                return lambda: time_once(lambda: [space.get(k) for k in keys])

            wrote = interleave({n: writes(s) for n, s in spaces.items()}, rounds)
            read = interleave(
                {n: reads(spaces[n]) for n in ("plain_old", "shadow", "plain_new")}, rounds
            )
            (rollout,) = [r for r in dl.rollouts() if r.pattern == "shadow"]
            compared = rollout.stats.compared
            if profile:
                console.print(profile_top(lambda: [spaces["shadow"].set(k, value) for k in keys]))
            for space in spaces.values():  # a shared Redis keeps nothing of the bench's
                for i in range(KEYS):
                    space.delete(f"k{i}")

        def micros(samples: list[int]) -> float:
            return statistics.median(samples) / per_round / 1000

        write = {name: micros(samples) for name, samples in wrote.items()}
        reading = {name: micros(samples) for name, samples in read.items()}
        both = write["plain_old"] + write["plain_new"]
        ratios = {
            "shadow write / (old + new write)": ratio(write["shadow"], both),
            "split write / (old + new write)": ratio(write["split"], both),
            "shadow read (1% compared) / old read": ratio(reading["shadow"], reading["plain_old"]),
        }
        targets = {
            "shadow write / (old + new write)": WRITE_TARGET,
            "split write / (old + new write)": WRITE_TARGET,
            "shadow read (1% compared) / old read": READ_TARGET,
        }
        print_table(
            f"rollout cost, key-value, embedded store to Redis ({size})",
            ["contender", "write µs", "read µs"],
            [
                (name, f"{write[name]:.1f}", f"{reading[name]:.1f}" if name in reading else "")
                for name in write
            ],
            note=f"{rounds} rounds of {per_round} operations; shadow compared {compared:,} reads",
        )
        print_table(
            "targets",
            ["ratio", "target", "measured", "verdict"],
            [
                (
                    name,
                    f"<= {targets[name]:.2f}x",
                    f"{value:.3f}x",
                    "met" if value <= targets[name] else "missed",
                )
                for name, value in ratios.items()
            ],
        )
        write_results(
            "rollout",
            {
                "size": size,
                "rounds": rounds,
                "operations_per_round": per_round,
                "write_us": write,
                "read_us": reading,
                "targets": [
                    {
                        "what": name,
                        "target": f"<= {targets[name]:.2f}x",
                        "value": value,
                        "met": value <= targets[name],
                    }
                    for name, value in ratios.items()
                ],
            },
        )
        return 0
    finally:
        launcher.down()


def main() -> int:
    args = parse_args("What a key-value rollout costs: writes in shadow and split, shadow reads.")
    return run(args.size, args.profile)


if __name__ == "__main__":
    sys.exit(main())

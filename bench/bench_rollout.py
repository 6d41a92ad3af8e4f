"""What a rollout costs: a key-value pattern moving from the embedded store to Redis, and a
transactional pattern moving from SQLite to PostgreSQL.

Contenders for each move, each a pattern opened through datalayer, in rounds that rotate who
goes first (``harness.interleave``):

- plain-old: the pattern on the current store, no rollout;
- plain-new: the pattern on the new store, no rollout;
- by-hand: a write through plain-old, then the same write through plain-new, in one loop:
  the two stores' writes as a hand-written dual write pays them;
- shadow: the pattern in ``shadow`` (writes both stores; 1% of reads compared with the new);
- split: the pattern in ``split`` at 50% (writes both stores).

Targets (from the issue): a write in ``shadow`` and in ``split`` costs at most the two
stores' writes (by-hand) plus 10%; a read in ``shadow`` with a 1% comparison sample costs at
most 1.1x plain-old's read. Medians of per-round means. Also reported: shadow's write against
plain-old's and plain-new's timed apart and added up, which alternating between two stores
costs more than (SQLite then PostgreSQL by hand: 1.27x their sum measured apart, here).

Redis and PostgreSQL come from the project's launcher ($DATALAYER_REDIS_URL and
$DATALAYER_POSTGRES_URL if set, else local servers).

    PYTHONPATH=src:. python bench/bench_rollout.py --size quick   # or --size full
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable
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


NAMES = ("plain_old", "plain_new", "shadow", "split")
ROLLOUTS = {
    "shadow": {"stage": "shadow", "compare_sample": 0.01},
    "split": {"stage": "split", "percent": 50},
}


def registry(folder: Path, redis_url: str, postgres_url: str, prefix: str) -> Path:
    """Both moves' contenders: ``kv_<name>`` and ``sql_<name>``, each on its own key prefix
    or table (a run's own, on shared servers)."""
    stores = {
        "cache": {"type": "embedded-kv", "path": str(folder / "kv.db")},
        "redis": {"type": "redis", "url": redis_url},
        "sqlite": {"type": "sqlite", "path": str(folder / "rows.db")},
        "postgres": {"type": "postgres", "url": postgres_url},
    }
    patterns: dict[str, Any] = {}
    for name in NAMES:
        kv = {"category": "key-value", "store": "cache", "prefix": f"{prefix}{name}"}
        sql = {
            "category": "transactional",
            "store": "sqlite",
            "table": f"{prefix}_{name}",
            "key": ["account_id", "entry_no"],
            "schema": "datalayer.testing.contracts.schemas:Ledger",
        }
        if name == "plain_new":
            kv["store"], sql["store"] = "redis", "postgres"
        if name in ROLLOUTS:
            kv["rollout"] = {"to": "redis", **ROLLOUTS[name]}
            sql["rollout"] = {"to": "postgres", **ROLLOUTS[name]}
        patterns[f"kv_{name}"], patterns[f"sql_{name}"] = kv, sql
    return write_registry(folder, {"bench": stores}, patterns)


#: Per move: the handle of a contender, its write and its read of operation ``i``.
MOVES: dict[str, tuple[str, Callable[[Any, int], Any], Callable[[Any, int], Any]]] = {
    "key-value, embedded store to Redis": (
        "kv",
        lambda kv, i: kv.set(f"k{i % KEYS}", {"incident_id": "inc-1", "hits": i}),
        lambda kv, i: kv.get(f"k{i % KEYS}"),
    ),
    "transactional, SQLite to PostgreSQL": (
        "transactional",
        lambda table, i: table.put(
            {"account_id": f"a{i % 7}", "entry_no": i % KEYS, "amount": i * 0.5}
        ),
        lambda table, i: table.get((f"a{i % 7}", i % KEYS)),
    ),
}


def run(size: str, profile: bool) -> int:
    rounds, per_round = SIZES[size]
    launcher = Launcher()
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-rollout-"))
    prefix = f"b{uuid.uuid4().hex[:8]}"
    try:
        console.print("starting redis and postgres ...")
        redis_url, postgres_url = launcher.start("redis").url, launcher.start("postgres").url
        results: dict[str, Any] = {}
        with datalayer.open(registry(folder, redis_url, postgres_url, prefix), "bench") as dl:
            dl.apply()
            for move, (kind, write, read) in MOVES.items():
                results[move] = measure(dl, move, kind, write, read, rounds, per_round, profile)
            for kind in ("kv", "sql"):  # shared servers keep nothing of the bench's
                for name in NAMES:
                    forget(dl, f"{kind}_{name}")
        targets = [target for result in results.values() for target in result["targets"]]
        print_table(
            "targets",
            ["ratio", "target", "measured", "verdict"],
            [
                (t["what"], t["target"], f"{t['value']:.3f}x", "met" if t["met"] else "missed")
                for t in targets
            ],
        )
        write_results(
            "rollout",
            {
                "size": size,
                "rounds": rounds,
                "operations_per_round": per_round,
                "moves": results,
                "targets": targets,
            },
        )
        return 0
    finally:
        launcher.down()


def measure(
    dl: Any,
    move: str,
    kind: str,
    write: Callable[[Any, int], Any],
    read: Callable[[Any, int], Any],
    rounds: int,
    per_round: int,
    profile: bool,
) -> dict[str, Any]:
    """One move's contenders timed (writes, then reads), its table and its targets."""
    prefix = "kv" if kind == "kv" else "sql"
    handles = {name: getattr(dl, kind)(f"{prefix}_{name}") for name in NAMES}
    for handle in handles.values():
        for i in range(KEYS):
            write(handle, i)

    def writes(handle: Any) -> Any:
        return lambda: time_once(lambda: [write(handle, i) for i in range(per_round)])

    def reads(handle: Any) -> Any:
        return lambda: time_once(lambda: [read(handle, i) for i in range(per_round)])

    old, new = handles["plain_old"], handles["plain_new"]

    def by_hand() -> list[int]:
        return time_once(lambda: [(write(old, i), write(new, i)) for i in range(per_round)])

    wrote = interleave({**{n: writes(h) for n, h in handles.items()}, "by_hand": by_hand}, rounds)
    reading_names = ("plain_old", "shadow", "plain_new")
    timed_reads = interleave({n: reads(handles[n]) for n in reading_names}, rounds)
    (rollout,) = [r for r in dl.rollouts() if r.pattern == f"{prefix}_shadow"]
    if profile:
        shadow = handles["shadow"]
        console.print(profile_top(lambda: [write(shadow, i) for i in range(per_round)]))

    def micros(samples: list[int]) -> float:
        return statistics.median(samples) / per_round / 1000

    written = {name: micros(samples) for name, samples in wrote.items()}
    reading = {name: micros(samples) for name, samples in timed_reads.items()}
    both = written["by_hand"]
    apart = written["plain_old"] + written["plain_new"]
    ratios = {
        "shadow write / both stores' writes by hand": (
            ratio(written["shadow"], both),
            WRITE_TARGET,
        ),
        "split write / both stores' writes by hand": (ratio(written["split"], both), WRITE_TARGET),
        "shadow read (1% compared) / old read": (
            ratio(reading["shadow"], reading["plain_old"]),
            READ_TARGET,
        ),
    }
    print_table(
        f"rollout cost, {move}",
        ["contender", "write µs", "read µs"],
        [
            (name, f"{written[name]:.1f}", f"{reading[name]:.1f}" if name in reading else "")
            for name in written
        ],
        note=f"{rounds} rounds of {per_round} operations; shadow compared "
        f"{rollout.stats.compared:,} reads; shadow write / (old + new timed apart): "
        f"{ratio(written['shadow'], apart):.3f}x",
    )
    return {
        "shadow_write_over_writes_apart": ratio(written["shadow"], apart),
        "write_us": written,
        "read_us": reading,
        "compared": rollout.stats.compared,
        "targets": [
            {
                "what": f"{move}: {name}",
                "target": f"<= {target:.2f}x",
                "value": value,
                "met": value <= target,
            }
            for name, (value, target) in ratios.items()
        ],
    }


def forget(dl: Any, name: str) -> None:
    """Delete what the bench wrote through one contender (its rollout's stores too)."""
    if name.startswith("kv_"):
        kv = dl.kv(name)
        for i in range(KEYS):
            kv.delete(f"k{i}")
        return
    table = dl.transactional(name)
    for i in range(KEYS):
        table.delete((f"a{i % 7}", i))


def main() -> int:
    args = parse_args("What a key-value rollout costs: writes in shadow and split, shadow reads.")
    return run(args.size, args.profile)


if __name__ == "__main__":
    sys.exit(main())

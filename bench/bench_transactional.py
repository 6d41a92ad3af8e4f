"""Get-by-key latency on PostgreSQL: datalayer's transactional ``get`` against the drivers below it.

Compared, on one table of 10,000 ``datalayer.testing.contracts.schemas:Item`` rows written by
``put_many``:

- ours:           ``dl.transactional("items").get(key)`` (registry with a ``postgres`` store);
- psycopg:        raw psycopg 3 on one held autocommit connection,
                  ``conn.execute(sql, (key,), prepare=True)`` with dict rows;
- sa-core-held:   SQLAlchemy Core ``select`` on one held connection (AUTOCOMMIT);
- sa-core-pool:   SQLAlchemy Core ``select`` with a pool checkout per call
                  (``with engine.connect()``, default pool settings).

Every contender reads the same random keys; contenders are interleaved in rounds after a
warm-up. Target (from the issue): ours' median at most 1.3x raw psycopg prepared.

PostgreSQL comes from the project's launcher ($DATALAYER_POSTGRES_URL if set, else a container
or a local server). Run from the repository root:

    PYTHONPATH=. python bench/bench_transactional.py --size quick   # or --size full, --profile
"""

from __future__ import annotations

import random
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from harness import (
    console,
    interleave,
    parse_args,
    print_table,
    profile_top,
    ratio,
    summarize,
    time_calls,
    write_results,
)
from psycopg.rows import dict_row
from tests.services.launcher import Launcher

import datalayer
from datalayer.testing import registry as test_registry

ROWS = 10_000
TARGET = 1.3
SIZES = {
    # rounds, get calls per contender per round
    "quick": (10, 1_000),
    "full": (30, 5_000),
}


def make_rows(count: int) -> list[dict[str, Any]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "item_id": f"item-{i:06d}",
            "name": f"Item number {i}",
            "price": round(1 + i * 0.01, 2),
            "quantity": i % 50,
            "active": i % 7 != 0,
            "tier": "abc"[i % 3],
            "created_at": start + timedelta(minutes=i),
            "attributes": {"color": ["red", "green", "blue"][i % 3], "size": str(i % 5)},
        }
        for i in range(count)
    ]


def write_registry(folder: Path, url: str, table: str) -> Path:
    return test_registry.write_registry(
        folder,
        {"bench": {"sql": {"type": "postgres", "url": url}}},
        {
            "items": {
                "category": "transactional",
                "store": "sql",
                "table": table,
                "key": "item_id",
                "schema": "datalayer.testing.contracts.schemas:Item",
            }
        },
    )


def psycopg_url(url: str) -> str:
    """The URL for psycopg (libpq) itself: no SQLAlchemy driver suffix."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def run(size: str, seed: int, profile: bool) -> int:
    rounds, per_round = SIZES[size]
    launcher = Launcher()
    folder = Path(tempfile.mkdtemp(prefix="datalayer-bench-"))
    table = f"bench_items_{uuid.uuid4().hex[:10]}"
    dl: datalayer.DataLayer | None = None
    closers: list[Callable[[], object]] = []  # run in reverse order at the end
    try:
        console.print("starting postgres ...")
        url = launcher.start("postgres").url
        dl = datalayer.open(write_registry(folder, url, table), profile="bench")
        dl.apply()
        items = dl.transactional("items")
        rows = make_rows(ROWS)
        for start in range(0, ROWS, 2_000):
            items.put_many(rows[start : start + 2_000])
        console.print(f"table {table}: {items.count():,} rows")

        # (a) raw psycopg: held autocommit connection, server-side prepared statement.
        raw = psycopg.connect(psycopg_url(url), autocommit=True, row_factory=dict_row)
        closers.append(raw.close)
        raw_sql = f'SELECT * FROM "{table}" WHERE item_id = %s'

        def get_psycopg(key: str) -> dict[str, Any] | None:
            return raw.execute(raw_sql, (key,), prepare=True).fetchone()

        # (b), (c) SQLAlchemy Core on the reflected table.
        held_engine = sa.create_engine(sqlalchemy_url(url))
        pool_engine = sa.create_engine(sqlalchemy_url(url))
        closers += [held_engine.dispose, pool_engine.dispose]
        reflected = sa.Table(table, sa.MetaData(), autoload_with=held_engine)
        stmt = sa.select(reflected).where(reflected.c.item_id == sa.bindparam("key"))
        held = held_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        closers.append(held.close)

        def get_sa_held(key: str) -> dict[str, Any] | None:
            row = held.execute(stmt, {"key": key}).mappings().first()
            return dict(row) if row is not None else None

        def get_sa_pool(key: str) -> dict[str, Any] | None:
            with pool_engine.connect() as conn:
                row = conn.execute(stmt, {"key": key}).mappings().first()
            return dict(row) if row is not None else None

        get_ours: Callable[[str], dict[str, Any] | None] = items.get
        contenders_fns: dict[str, Callable[[str], dict[str, Any] | None]] = {
            "ours": get_ours,
            "psycopg": get_psycopg,
            "sa-core-held": get_sa_held,
            "sa-core-pool": get_sa_pool,
        }
        for name, fn in contenders_fns.items():
            found = fn("item-000042")
            if found is None or found["name"] != "Item number 42":
                raise SystemExit(f"{name}: wrong row for item-000042: {found!r}")

        rng = random.Random(seed)
        keys = [f"item-{rng.randrange(ROWS):06d}" for _ in range(per_round)]

        def round_of(fn: Callable[[str], object]) -> Callable[[], list[int]]:
            return lambda: time_calls(fn, keys)

        console.print(f"{rounds} rounds x {per_round:,} gets per contender ({size})")
        samples = interleave({n: round_of(f) for n, f in contenders_fns.items()}, rounds)
        stats = {name: summarize(name, s) for name, s in samples.items()}
        base = stats["psycopg"]
        print_table(
            f"get-by-key on PostgreSQL, {ROWS:,} rows ({size})",
            ["contender", "median µs", "p99 µs", "mean µs", "ops/s", "median vs psycopg"],
            [
                (
                    s.name,
                    s.median_ns / 1e3,
                    s.p99_ns / 1e3,
                    s.mean_ns / 1e3,
                    s.ops_per_s,
                    f"{ratio(s.median_ns, base.median_ns):.2f}x",
                )
                for s in stats.values()
            ],
            note=f"target: ours <= {TARGET}x psycopg prepared (median)",
        )
        ours_ratio = ratio(stats["ours"].median_ns, base.median_ns)
        met = ours_ratio <= TARGET
        verdict = "[green]met[/]" if met else "[red]missed[/]"
        console.print(
            f"ours / psycopg: median {ours_ratio:.2f}x, "
            f"p99 {ratio(stats['ours'].p99_ns, base.p99_ns):.2f}x "
            f"(target <= {TARGET}x: {verdict})"
        )
        write_results(
            "transactional",
            {
                "size": size,
                "rows": ROWS,
                "rounds": rounds,
                "gets_per_round": per_round,
                "target": {"max_ratio_median": TARGET, "ratio_median": ours_ratio, "met": met},
                "contenders": {name: s.as_dict() for name, s in stats.items()},
            },
        )
        if profile:
            console.print(profile_top(lambda: [items.get(k) for k in keys]))
        return 0
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:
                console.print(f"cleanup: {exc}", style="yellow")
        if dl is not None:
            try:
                with dl.store("sql").engine.begin() as conn:  # type: ignore[attr-defined]
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            except Exception as exc:
                console.print(f"could not drop {table}: {exc}", style="yellow")
            dl.close()
        launcher.down()


def main() -> int:
    args = parse_args("Get-by-key latency on PostgreSQL: ours against psycopg and SQLAlchemy.")
    return run(args.size, args.seed, args.profile)


if __name__ == "__main__":
    sys.exit(main())

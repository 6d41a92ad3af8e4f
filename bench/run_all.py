"""Every benchmark in one command, then one table of every target: the README's table.

Runs each ``bench_*.py`` in its own process, one after another (never two at once: they would
measure each other), with the launcher's servers started once and shared through the
environment. Then reads their ``bench/results/*.json`` and prints one markdown table of each
target (what, measured, target, met) and writes it to ``bench/results/summary.md``.

    PYTHONPATH=src:. python bench/run_all.py --size full     # or quick; --only online,training
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: Script and results name of each benchmark, in the order they run.
BENCHES = {
    "transactional": "bench_transactional.py",
    "online": "bench_online.py",
    "training": "bench_training.py",
    "publish": "bench_publish.py",
    "consume": "bench_consume.py",
    "materialize": "bench_materialize.py",
    "template": "bench_template.py",
    "serve": "bench_serve.py",
    "skew": "bench_skew.py",
    "rollout": "bench_rollout.py",
}


@contextlib.contextmanager
def servers() -> Iterator[dict[str, str]]:
    """The launcher's URLs as environment variables, started once for every benchmark (those
    already set in the environment are used as they are)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.services.launcher import Launcher

    wanted = {
        "DATALAYER_POSTGRES_URL": "postgres",
        "DATALAYER_REDIS_URL": "redis",
        "DATALAYER_KAFKA_BOOTSTRAP": "kafka",
    }
    launcher = Launcher()
    try:
        yield {
            name: os.environ.get(name) or launcher.start(service).url
            for name, service in wanted.items()
        }
    finally:
        launcher.down()


def target_rows(name: str, document: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(what, measured, target, met) for each target a result file records."""

    def verdict(met: Any) -> str:
        return "" if met is None else ("yes" if met else "**no**")

    def value(measured: Any) -> str:
        return f"{measured:.2f}x" if isinstance(measured, float) else str(measured)

    if name == "online":
        for t in document["targets"]:
            who = "1 entity" if t["entities"] == 1 else f"{t['entities']} entities"
            yield (f"online, {who}: {t['what']}", value(t["value"]),
                   t["target"], verdict(t["met"]))  # fmt: skip
    elif name == "training":
        for case in document["cases"]:
            for t in case["targets"]:
                if t["met"] is not None:
                    yield (f"training set, {case['case']}: {t['what']}", value(t["value"]),
                           t["target"], verdict(t["met"]))  # fmt: skip
    elif name == "materialize":
        for t in document["targets"]:
            yield f"materialize: {t['what']}", value(t["value"]), t["target"], verdict(t["met"])
    elif name == "template":
        for t in document["targets"]:
            what = f"feast init template: {t['what']}"
            yield what, value(t["value"]), t["target"], verdict(t["met"])
    elif name == "publish":
        t = document["target"]
        yield ("publish (publisher, one flush) / raw confluent-kafka, throughput",
               value(t["ratio"]), f">= {t['min_ratio']}x", verdict(t["met"]))  # fmt: skip
        ratios = document.get("ratios", {})
        for key, what in [
            (
                "publisher_vs_raw_serializing",
                "raw serializing its dicts with json.dumps, no validation",
            ),
            ("publisher_vs_raw_tuned", "raw with failure-only reports and positional arguments"),
        ]:
            if key in ratios:
                yield f"publish (publisher) / {what}", value(ratios[key]), "(for scale)", ""
    elif name == "consume":
        for t in document["targets"]:
            yield f"consume: {t['what']}", t["value"], t["target"], verdict(t["met"])
        for c in document.get("catch_up", []):
            yield (f"consume: catch-up of {c['backlog']:,} messages, {c['store']}",
                   f"{c['catch_up_s']:.1f} s", "(reported)", "")  # fmt: skip
    elif name == "serve":
        for t in document["targets"]:
            yield (f"serve, {t['scenario']}: {t['what']}", value(t["value"]),
                   t["target"], verdict(t["met"]))  # fmt: skip
        for s in document.get("scenarios", {}).values():
            ours, feast = s["ours"], s["feast"]
            yield (f"serve, {s['title']}: requests/s, p50, p99 (ours / feast)",
                   f"{ours['requests_per_s']:,.0f} / {feast['requests_per_s']:,.0f}; "
                   f"{ours['p50_ms']:.2f} / {feast['p50_ms']:.2f} ms; "
                   f"{ours['p99_ms']:.2f} / {feast['p99_ms']:.2f} ms", "(reported)", "")  # fmt: skip
    elif name == "skew":
        for t in document["targets"]:
            yield f"skew: {t['what']}", value(t["value"]), t["target"], verdict(t["met"])
    elif name == "rollout":
        for t in document["targets"]:
            yield f"rollout: {t['what']}", value(t["value"]), t["target"], verdict(t["met"])
        for move, measured in document.get("moves", {}).items():
            yield (f"rollout: {move}: shadow write / (old + new write timed apart)",
                   value(measured["shadow_write_over_writes_apart"]), "(reported)", "")  # fmt: skip
    elif name == "transactional":
        t = document["target"]
        yield ("get-by-key / raw psycopg prepared, median", value(t["ratio_median"]),
               f"<= {t['max_ratio_median']}x", verdict(t["met"]))  # fmt: skip


def summary(names: list[str]) -> str:
    lines = ["| benchmark | measured | target | met |", "|---|---|---|---|"]
    for name in names:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            lines.append(f"| {name}: no results (the run failed) | | | |")
            continue
        document = json.loads(path.read_text())
        for row in target_rows(name, document):
            lines.append("| " + " | ".join(row) + " |")
        when = document.get("environment", {}).get("when", "?")
        lines.append(f"| *{name}: size {document.get('size', '?')}, run {when}* | | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHES))
    args = parser.parse_args()
    names = [n for n in BENCHES if not args.only or n in args.only.split(",")]
    failed = []
    with servers() as urls:
        env = {**os.environ, **urls}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, ["src", ".", env.get("PYTHONPATH")]))
        for name in names:
            print(f"== {name} ({args.size})", flush=True)
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, str(HERE / BENCHES[name]), "--size", args.size],
                cwd=HERE.parent,
                env=env,
                check=False,
            )
            print(f"== {name}: exit {done.returncode} after {time.monotonic() - started:.0f} s")
            if done.returncode:
                failed.append(name)
    table = summary(names)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(table)
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

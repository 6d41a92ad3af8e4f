"""``python -m tests.reliability``: run the suites that try to break datalayer and print the
README's reliability figures as Markdown: cases and failures per suite and profile, what the
adversarial and stream suites counted, and the time to error per store and fault.

The figures come from the tests themselves: pytest's ``--junitxml`` report, with the numbers
the tests record through ``record_property`` (``time_to_error <store> <fault> <call>`` and the
counts of the adversarial, stream and interop suites). Servers start as for ``scripts/test``.
``--report`` reads reports already written instead, e.g. ``./scripts/test --junitxml=r.xml``'s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

#: The suites that attack the contracts: hostile input, faults, concurrency, foreign programs.
SUITES = (
    "tests/contract",
    "tests/unit/test_hostile_registry.py",
    "tests/unit/test_resilience.py",
    "tests/integration/test_bounded_waits.py",
    "tests/integration/test_toxiproxy_faults.py",
    "tests/integration/test_faults.py",
    "tests/integration/test_stream_processes.py",
    "tests/integration/test_sql_errors.py",
    "tests/integration/test_interop.py",
    "tests/contract/test_adversarial.py",
)

#: A test's parameter naming a store, and the profile that store belongs to.
PROFILE_OF = {
    "sqlite": "embedded",
    "embedded-log": "embedded",
    "embedded-documents": "embedded",
    "embedded-kv": "embedded",
    "embedded": "embedded",
    "postgres": "services",
    "kafka": "services",
    "mongodb": "services",
    "redis": "services",
}


def profile(test_name: str) -> str:
    """``embedded``/``services`` from a test's parameters (``test_x[sqlite]``), else ``-``."""
    params = test_name.partition("[")[2].rstrip("]").split("-")
    joined = test_name.partition("[")[2].rstrip("]")
    for candidate in (joined, *params):
        if candidate in PROFILE_OF:
            return PROFILE_OF[candidate]
    return "-"


def run(suites: list[str], report: Path, extra: list[str]) -> int:
    existing = [s for s in suites if Path(s).exists()]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}", *existing, *extra]
    return subprocess.call(command)


def figures(reports: list[Path]) -> str:
    cases: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    counts: dict[tuple[str, str], float] = defaultdict(float)
    times: dict[str, list[float]] = defaultdict(list)
    every = (case for report in reports for case in ET.parse(report).getroot().iter("testcase"))
    for case in every:
        module = case.get("classname", "").split(".")
        suite = "/".join(part for part in module if not part[:1].isupper()) + ".py"
        if not suite.startswith(SUITES):  # a whole-run report holds the other tests too
            continue
        name = case.get("name", "")
        key = (suite, profile(name))
        cases[key][0] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            cases[key][1] += 1
        for prop in case.iter("property"):
            label, value = prop.get("name", ""), prop.get("value", "")
            if label.startswith("time_to_error "):
                times[label.removeprefix("time_to_error ")].append(float(value))
            else:
                try:
                    number = float(value)
                except ValueError:
                    continue  # a label (the store, the surface), not a count
                counts[(label, profile(name))] += number
    lines = ["| suite | profile | cases | failures |", "|---|---|---|---|"]
    for (suite, prof), (total, failed) in sorted(cases.items()):
        lines.append(f"| `{suite}` | {prof} | {total} | {failed} |")
    if counts:
        lines += ["", "| counted | profile | total |", "|---|---|---|"]
        for (label, prof), total in sorted(counts.items()):
            lines.append(f"| {label} | {prof} | {total:g} |")
    if times:
        lines += ["", "| store, fault, call | time to error (s) |", "|---|---|"]
        for label, values in sorted(times.items()):
            lines.append(f"| {label} | {max(values):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--report",
        type=Path,
        action="append",
        help="read this junit XML (repeatable) instead of running the suites",
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    status = 0
    reports = args.report
    if not reports:
        report = Path(tempfile.mkdtemp(prefix="datalayer-reliability-")) / "report.xml"
        status = run(list(SUITES), report, args.pytest_args)
        reports = [report]
    print(figures(reports))
    return status


if __name__ == "__main__":
    sys.exit(main())

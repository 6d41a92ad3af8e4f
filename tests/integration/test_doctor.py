"""``datalayer doctor`` on the example's two profiles, ten times in a row each, while both
cores are kept busy: it never aborts the interpreter (it did, with ``FATAL: exception not
rethrown``, when a timed thread was given up on in the middle of importing Feast), it reports
every store ok when given time, and a timeout too short for the stores is a clean exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

import datalayer
from datalayer.testing.registry import write_registry
from tests.example_project import copy_example

RUNS = 10
#: How long the busy processes may run at most: they stop by themselves.
LOAD_SECONDS = 600


@contextmanager
def both_cores_busy() -> Iterator[None]:
    spin = (
        f"import time\nend = time.monotonic() + {LOAD_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(10)


@pytest.fixture
def example(
    tmp_path: Path,
    postgres_database: str,
    redis_url: str,
    kafka_bootstrap: str,
    mongodb_url: str,
) -> tuple[Path, dict[str, str]]:
    """The example project, applied on both profiles; the environment its services need."""
    registry = yaml.safe_load(copy_example(tmp_path).read_text())
    registry["profiles"]["services"]["features"]["project"] = f"d{uuid.uuid4().hex[:10]}"
    path = write_registry(tmp_path, registry["profiles"], registry["patterns"])
    env = {
        **os.environ,
        "DATALAYER_POSTGRES_URL": postgres_database,
        "DATALAYER_REDIS_URL": redis_url,
        "DATALAYER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DATALAYER_MONGODB_URL": mongodb_url,
        "COLUMNS": "300",
    }
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        for profile in ("local", "services"):
            with datalayer.open(path, profile) as dl:
                dl.apply()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return path, env


def test_doctor_never_aborts_ten_times_in_a_row_on_both_profiles_under_load(
    example: tuple[Path, dict[str, str]],
) -> None:
    path, env = example
    outcomes = []
    with both_cores_busy():
        for profile in ("local", "services"):
            for run in range(RUNS):
                # Every other run gives the stores far too little time: probes are given up.
                timeout = "0.05" if run % 2 else "30"
                command = ["doctor", "--config", str(path), "--profile", profile]
                done = subprocess.run(
                    [sys.executable, "-m", "datalayer.cli", *command, "--timeout", timeout],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                outcomes.append(done.returncode)
                detail = f"{profile} run {run}: exit {done.returncode}\n{done.stdout}{done.stderr}"
                assert done.returncode in (0, 1), detail
                assert "FATAL" not in done.stderr and "Traceback" not in done.stderr, detail
                if timeout == "30":
                    assert done.returncode == 0, detail
                    assert done.stdout.count(": ok, ") == 5, detail
    assert len(outcomes) == 2 * RUNS

"""What the rollout tests share: concurrent writers, each in its own thread with failures
collected, and the ``datalayer rollout`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import datalayer
from datalayer.rollout import Checkpoints, Progress, backfill, sides


def rollout_cli(file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``datalayer rollout ARGS --config FILE``, 160 columns wide (keys listed unwrapped)."""
    return subprocess.run(
        [sys.executable, "-m", "datalayer.cli", "rollout", *args, "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "160"},
    )


def run_writers(writer: Callable[[int], None], count: int, timeout: float = 120.0) -> None:
    """Run ``writer(0)`` to ``writer(count - 1)`` at once; raise ``AssertionError`` with what
    any of them raised, or naming those still running after ``timeout``."""
    failures: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            writer(n)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads), "a writer did not end"


def backfill_killed_after_one_batch(file: Path, pattern: str) -> Checkpoints:
    """Run the backfill of ``pattern``'s rollout in this process, killed once its first batch
    is copied (its progress saved, as a killed ``rollout backfill`` leaves it); the
    checkpoints it saved to."""
    with datalayer.open(file, "local") as dl:
        checkpoints = Checkpoints(dl.rollout_folder)
        config = dl.pattern(pattern)
        rollout = config.store_rollout()
        assert rollout is not None, f"pattern '{pattern}' has no rollout"

        def interrupted(progress: Progress) -> None:
            checkpoints.save(pattern, progress)
            if not progress.in_flight:  # killed once its first batch is copied
                raise KeyboardInterrupt

        old, new = sides(getattr(dl, config.accessor)(pattern).backend, config)
        with pytest.raises(KeyboardInterrupt):
            backfill(old, new, Progress(rollout.to), interrupted)
    return checkpoints

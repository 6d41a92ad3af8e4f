"""What the rollout tests share: concurrent writers, each in its own thread with failures
collected, and the ``datalayer rollout`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path


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

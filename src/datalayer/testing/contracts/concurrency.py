"""Many writers on one key at once: threads sharing a ``DataLayer`` and spawned processes each
opening their own from the same registry, started together so their calls interleave."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier

import datalayer
from datalayer import DataLayer

#: ``job(dl, pattern, key, times)``: ``times`` increments of ``key`` by 1. A module-level
#: function, so a spawned process can import it.
Job = Callable[[DataLayer, str, str, int], None]


def _in_process(
    registry: str, profile: str, job: Job, pattern: str, key: str, times: int, start: Barrier
) -> None:
    with datalayer.open(registry, profile) as dl:
        dl.store(dl.pattern(pattern).store)  # connect before the start, not inside the race
        start.wait(60)
        job(dl, pattern, key, times)


def run_together(
    dl: DataLayer,
    job: Job,
    pattern: str,
    key: str,
    times: int,
    *,
    threads: int = 8,
    processes: int = 4,
    timeout: float = 240.0,
) -> None:
    """Run ``job`` in ``threads`` threads over ``dl`` and ``processes`` spawned processes at
    the same moment; raise ``AssertionError`` naming what failed or did not end in ``timeout``."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(threads + processes + 1)
    children = [
        spawn.Process(
            target=_in_process,
            args=(str(dl.registry.file), dl.profile, job, pattern, key, times, start),
            name=f"writer-{n}",
        )
        for n in range(processes)
    ]
    failures: list[str] = []

    def in_thread() -> None:
        try:
            start.wait(60)
            job(dl, pattern, key, times)
        except BaseException as exc:
            failures.append(f"thread: {type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=in_thread, daemon=True) for _ in range(threads)]
    for child in children:
        child.start()
    for worker in workers:
        worker.start()
    try:
        start.wait(90)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                failures.append(f"{child.name}: still running after {timeout:g}s")
                child.join(10)
    for child in children:
        if child.exitcode not in (0, -9):
            failures.append(f"{child.name}: exit code {child.exitcode} (traceback on stderr)")
    failures += [f"a thread still running after {timeout:g}s" for t in workers if t.is_alive()]
    assert not failures, failures

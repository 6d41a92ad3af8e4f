"""What each local server provides to the launcher."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tests.services.process import process_tree, stop_process


@dataclass
class Running:
    """A started server: the environment that points at it and how to stop it."""

    name: str
    url: str
    mode: str  # env | container | process
    pids: list[int] = field(default_factory=list)
    container: str | None = None
    log: str | None = None
    stop_signal: int = 15


class LocalServer(ABC):
    """A server run as a local process on 127.0.0.1 with a free port."""

    name: ClassVar[str]
    env_var: ClassVar[str]
    start_timeout: ClassVar[float] = 60.0
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 20.0

    def __init__(self, state_dir: Path, cache_dir: Path) -> None:
        self.data_dir = state_dir / self.name
        self.log = state_dir / f"{self.name}.log"
        self.cache_dir = cache_dir
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def install(self) -> None:
        """Make the binaries available (Debian packages, Maven jars, a Go build); cached."""

    @abstractmethod
    def start(self) -> Running:
        """Start the server and return once ``check`` passes."""

    def running(self, url: str) -> Running:
        """What ``start`` returns for this started process, reachable at ``url``."""
        assert self.process is not None, f"{self.name} is not running"
        return Running(
            self.name,
            url,
            "process",
            [self.process.pid],
            log=str(self.log),
            stop_signal=self.stop_signal,
        )

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server's processes stopped by SIGSTOP for the block: its sockets stay open and
        the kernel still accepts connections, but nothing answers. SIGCONT on the way out.

        Every descendant is stopped, parents first (so none forks meanwhile): PostgreSQL's
        backends leave the server's process group."""
        assert self.process is not None, f"{self.name} is not running"
        stopped = []
        try:
            for pid in process_tree(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (its session gets ``stop_signal``, SIGKILL after ``stop_timeout``),
        keeping its port and data for ``restart``."""
        if self.process is None:
            return
        stop_process(self.process.pid, timeout=self.stop_timeout, sig=self.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> Running:
        """Start a stopped server again on the same port with the same data."""
        self.stop()
        return self.start()

    @staticmethod
    @abstractmethod
    def check(url: str) -> None:
        """One real round trip to the server at ``url``; raises when it does not answer."""

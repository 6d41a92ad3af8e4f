"""Start, record and stop the servers; used by ``python -m tests.services`` and pytest.

The four data servers, and Toxiproxy (a fault-injecting TCP proxy for fault tests), which
always runs as a local process: it must reach the others and be reached on this machine.
Tools the tests run (Chromium) are installed the same way but never started.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.services.base import LocalServer, Running
from tests.services.containers import docker_available, start_container, stop_container
from tests.services.process import ServiceError, stop_process, wait_ready

ROOT = Path(__file__).resolve().parents[2]


SERVER_CLASSES = {
    "postgres": "tests.services.postgres:PostgresServer",
    "redis": "tests.services.redis:RedisServer",
    "kafka": "tests.services.kafka:KafkaServer",
    "mongodb": "tests.services.ferretdb:FerretDBServer",
    "toxiproxy": "tests.services.toxiproxy:ToxiproxyServer",
}


def server_class(name: str) -> type[LocalServer]:
    module, _, attr = SERVER_CLASSES[name].partition(":")
    cls: type[LocalServer] = getattr(importlib.import_module(module), attr)
    return cls


ENV_VARS = {
    "postgres": "DATALAYER_POSTGRES_URL",
    "redis": "DATALAYER_REDIS_URL",
    "kafka": "DATALAYER_KAFKA_BOOTSTRAP",
    "mongodb": "DATALAYER_MONGODB_URL",
    "toxiproxy": "DATALAYER_TOXIPROXY_URL",
}
NAMES = list(ENV_VARS)

#: Servers that never run as a container, Docker or not.
LOCAL_ONLY = frozenset({"toxiproxy"})

#: Tools the tests run, not servers: ``install`` puts them on PATH, ``up`` never starts them.
#: Each names the function that installs it (idempotent: nothing to do when it is there).
TOOLS = {"chromium": "tests.services.chromium:install"}


def install(name: str) -> None:
    """Install what server or tool ``name`` needs (the cache and PATH only, no state folder)."""
    if name in TOOLS:
        module, _, attr = TOOLS[name].partition(":")
        getattr(importlib.import_module(module), attr)()
    else:
        server_class(name)(Path(tempfile.gettempdir()), cache_dir()).install()


def cache_dir() -> Path:
    """Downloaded jars and built binaries, kept between runs."""
    return Path(os.environ.get("DATALAYER_CACHE_DIR", Path.home() / ".cache" / "datalayer"))


def new_state_dir() -> Path:
    """A fresh folder for data and logs that the 'postgres' user can enter too."""
    path = Path(tempfile.mkdtemp(prefix="datalayer-services-"))
    path.chmod(0o755)
    return path


class Launcher:
    """Starts servers on demand, remembers how, and stops exactly what it started."""

    def __init__(self, state_dir: Path | None = None, use_docker: bool | None = None) -> None:
        self.state_dir = state_dir or new_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        self.running: dict[str, Running] = {}
        self.servers: dict[str, LocalServer] = {}
        self._containers: dict[str, Any] = {}
        self._use_docker = use_docker
        self._lock = threading.Lock()

    def use_docker(self) -> bool:
        if self._use_docker is None:
            self._use_docker = docker_available()
        return self._use_docker

    def local(self, name: str) -> LocalServer:
        """A local-process server of this launcher's (not yet started)."""
        if name not in self.servers:
            self.servers[name] = server_class(name)(self.state_dir, cache_dir())
        return self.servers[name]

    def in_container(self, name: str) -> bool:
        return name not in LOCAL_ONLY and self.use_docker()

    def start(self, name: str) -> Running:
        """The URL in the environment if set (and reachable), else a container, else a process."""
        if name in self.running:
            return self.running[name]
        env_var = ENV_VARS[name]
        if os.environ.get(env_var):
            url = os.environ[env_var]
            check = server_class(name).check
            wait_ready(f"{name} at ${env_var}", lambda: check(url), timeout=30)
            running = Running(name, url, "env")
        elif self.in_container(name):
            running, container = start_container(name)
            self._containers[name] = container
        else:
            server = self.local(name)
            with self._lock:
                server.install()
            running = server.start()
        self.running[name] = running
        return running

    def up(self, names: list[str], say: Callable[[str], None] | None = None) -> dict[str, Running]:
        """Start several servers: installs one after another, starts in parallel; ``say``
        hears one line per step with its time."""
        tell = say or (lambda line: None)
        for name in names:
            if not os.environ.get(ENV_VARS[name]) and not self.in_container(name):
                started = time.monotonic()
                self.local(name).install()
                tell(f"{name}: installed ({time.monotonic() - started:.1f} s)")
        errors: dict[str, BaseException] = {}

        def start_one(name: str) -> None:
            started = time.monotonic()
            try:
                running = self.start(name)
            except BaseException as exc:
                errors[name] = exc
                return
            tell(f"{name}: ready, {running.mode} ({time.monotonic() - started:.1f} s)")

        threads = [threading.Thread(target=start_one, args=(n,)) for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.down()
            raise ServiceError("\n\n".join(f"{n}: {e}" for n, e in errors.items()))
        return {n: self.running[n] for n in names}

    def down(self) -> None:
        """Stop what this launcher started (a local server by its own hand: it may have restarted)."""
        for name, running in list(self.running.items()):
            if name in self.servers:
                self.servers[name].stop()
            else:
                stop(running)
            del self.running[name]

    def env(self) -> dict[str, str]:
        return {ENV_VARS[n]: r.url for n, r in self.running.items()}


def stop(running: Running) -> None:
    if running.mode == "process":
        for pid in running.pids:
            stop_process(pid, sig=running.stop_signal)
    elif running.mode == "container" and running.container:
        stop_container(running.container)


def save_state(file: Path, state: dict[str, Running]) -> None:
    """Remember what ``up`` started, for ``env`` and ``down`` in later commands."""
    if state:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({n: asdict(r) for n, r in state.items()}, indent=2))
    else:
        file.unlink(missing_ok=True)


def load_state(file: Path) -> dict[str, Running]:
    """Servers started by an earlier ``up`` that still run (a process that died, or a state
    file left by another machine or boot, is forgotten so ``up`` starts it again)."""
    if not file.exists():
        return {}
    state = {n: Running(**r) for n, r in json.loads(file.read_text()).items()}
    return {n: r for n, r in state.items() if r.mode != "process" or all(map(_alive, r.pids))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

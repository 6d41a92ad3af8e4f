"""Starting, checking and stopping local server processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A server could not be installed, started or reached; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    command: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (it outlives this process), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(
    name: str,
    check: Callable[[], None],
    *,
    timeout: float,
    log: Path | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Call ``check`` (one real round trip) until it passes, the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {process.returncode} while starting\n"
                f"--- last lines of {log} ---\n{tail(log)}"
            )
        try:
            check()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.25)
    raise ServiceError(
        f"{name} did not answer within {timeout:g}s (last error: {last})\n"
        f"--- last lines of {log} ---\n{tail(log)}"
    )


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, parents before children (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, index = [root], 0
    while index < len(tree):
        tree.extend(children.get(tree[index], []))
        index += 1
    return tree


def stop_process(pid: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal the server's process group (SIGTERM), then SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def run(
    command: Sequence[str],
    *,
    what: str,
    timeout: float = 900,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a set-up step (install, build, format); a failure names the step and shows its output."""
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    except FileNotFoundError as exc:
        raise ServiceError(f"{what}: {command[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{what}: '{' '.join(command)}' took more than {timeout:g}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        raise ServiceError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(output))
    return done.stdout

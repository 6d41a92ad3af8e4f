"""Cutting a connection whose server stopped answering: when the calling attempt's time is up
the watchdog shuts the socket down, and the call blocked on it fails at once with a dead
connection (that the driver then replaces). For drivers whose waits have no overall deadline:
libpq on a frozen server, redis-py on a slow one (its timeout is per read)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import suppress

from datalayer.resilience import current_attempt


def watch_socket(key: int, fileno: Callable[[], int | None]) -> None:
    """Shut the socket ``fileno()`` gives (looked up when time is up) if the calling attempt
    outlives its timeout; ``key`` names the connection, registered once per attempt."""
    attempt = current_attempt()
    if attempt is not None:
        attempt.on_expiry(key, lambda: _shut(fileno()))


def release(key: int) -> None:
    """The connection went back to its pool: the calling attempt must not cut it any more."""
    attempt = current_attempt()
    if attempt is not None:
        attempt.release(key)


def _shut(fileno: int | None) -> None:
    if fileno is None or fileno < 0:
        return
    with suppress(OSError), socket.socket(fileno=os.dup(fileno)) as sock:
        sock.shutdown(socket.SHUT_RDWR)

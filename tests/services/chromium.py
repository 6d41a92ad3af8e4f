"""Chromium from Debian's packages: a tool the tests run (``tests/browser.py`` opens a page in
it headless), not a server, so ``install`` puts it on PATH and ``up`` never starts it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.services.debian import ensure_packages
from tests.services.process import ServiceError, run


def binary() -> str | None:
    """The ``chromium`` on PATH (Debian's /usr/bin/chromium), if any."""
    return shutil.which("chromium")


def executable() -> str:
    """The browser itself: Debian's /usr/bin/chromium is a shell script that sources
    /etc/chromium.d (one of which prints a '[: ... unexpected operator' line when findmnt
    reports /dev/shm twice) and adds flags; the binary behind it takes flags as given."""
    install()
    behind = Path("/usr/lib/chromium/chromium")
    if behind.is_file() and os.access(behind, os.X_OK):
        return str(behind)
    found = binary()
    if found is None:
        raise ServiceError("chromium: not on PATH after install")
    return found


def install() -> None:
    """``apt-get install chromium`` unless it is on PATH (its fonts come with fontconfig)."""
    ensure_packages(["chromium"], present=binary() is not None)


def version() -> str:
    """What ``chromium --version`` prints, e.g. 'Chromium 156.0.8078.114 built on Debian ...'."""
    install()
    return run([binary() or "chromium", "--version"], what="chromium --version", timeout=60).strip()

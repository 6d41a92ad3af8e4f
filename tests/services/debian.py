"""Installing servers from Debian's packages when their binaries are missing."""

from __future__ import annotations

import glob
import os
import shutil
import threading

from tests.services.process import ServiceError, run

_apt_lock = threading.Lock()
_updated = False


def ensure_packages(packages: list[str], *, present: bool) -> None:
    """``apt-get install`` the packages unless ``present`` says their binaries are there."""
    global _updated
    if present:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            f"{', '.join(packages)} not installed and this is not a root Debian shell: "
            f"install them ({' '.join(packages)}) or point DATALAYER_* URLs at running servers"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock:
        if not _updated:
            run(["apt-get", "update", "-q"], what="apt-get update", env=env, timeout=600)
            _updated = True
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
            what=f"apt-get install {' '.join(packages)}",
            env=env,
            timeout=900,
        )


def postgres_bin_dir() -> str | None:
    """The newest /usr/lib/postgresql/N/bin that has initdb and postgres."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None

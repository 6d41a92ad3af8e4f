"""FerretDB v1 (MongoDB wire protocol over SQLite) embedded in a small Go program we build.

``go install .../cmd/ferretdb`` panics without a generated version file, so the program in
``ferretdb/`` embeds FerretDB's ``ferretdb`` package instead; ``go build`` fetches the modules
through the Go module proxy and the binary is cached under a hash of the sources.

The program hands FerretDB one request at a time (``serial.go``): FerretDB v1 runs an update
as read, change, write back, so two concurrent ``$inc`` on one document could lose one, where
MongoDB applies each single-document update atomically, as the document contract expects.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import ClassVar

from tests.services.base import LocalServer, Running
from tests.services.process import ServiceError, free_port, run, spawn, wait_ready

VERSION = "v1.24.2"
SOURCE = Path(__file__).with_name("ferretdb_server")
SOURCE_FILES = ("main.go", "serial.go", "go.mod", "go.sum")
BINARY = "ferretdb-server"


def source_hash() -> str:
    """Changes whenever the program or its pinned modules do, so a stale binary is not reused."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


class FerretDBServer(LocalServer):
    """One FerretDB process; ``stop``/``restart`` keep its port and SQLite files for fault tests."""

    name: ClassVar[str] = "mongodb"
    env_var: ClassVar[str] = "DATALAYER_MONGODB_URL"
    start_timeout: ClassVar[float] = 30.0

    def __init__(self, state_dir: Path, cache_dir: Path) -> None:
        super().__init__(state_dir, cache_dir)
        self.binary = self.cache_dir / f"ferretdb-{VERSION}-{source_hash()}" / BINARY
        self.port: int | None = None

    def install(self) -> None:
        """Build once per source hash; the first build downloads modules (a few minutes)."""
        if self.binary.exists():
            return
        if shutil.which("go") is None:
            raise ServiceError("mongodb: building FerretDB needs Go >= 1.24 ('go' is not on PATH)")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        partial = self.binary.with_name(f"{BINARY}.partial-{os.getpid()}")
        try:
            run(
                [
                    "go",
                    "build",
                    "-mod=readonly",  # go.sum is complete: never rewrite the committed files
                    "-buildvcs=false",
                    "-trimpath",
                    "-ldflags=-s -w",
                    "-o",
                    str(partial),
                    ".",
                ],
                what=f"mongodb: go build of FerretDB {VERSION} in {SOURCE}",
                timeout=900,
                cwd=SOURCE,
                env={"CGO_ENABLED": "0"},  # modernc.org/sqlite is pure Go
            )
            partial.replace(self.binary)  # atomic: an interrupted build is never taken as cached
        finally:
            partial.unlink(missing_ok=True)

    def start(self) -> Running:
        if self.process is not None and self.process.poll() is None:
            return self.running(self.url)
        if self.port is None:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn(
            [
                str(self.binary),
                "-listen",
                f"127.0.0.1:{self.port}",
                "-data",
                str(self.data_dir),
                "-log-level",
                "info",
            ],
            self.log,
        )
        wait_ready(
            self.name,
            lambda: self.check(self.url),
            timeout=self.start_timeout,
            log=self.log,
            process=self.process,
        )
        return self.running(self.url)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    @staticmethod
    def check(url: str) -> None:
        from pymongo import MongoClient

        client: MongoClient[dict[str, object]] = MongoClient(
            url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
        )
        try:
            client.admin.command("ping")
        finally:
            client.close()

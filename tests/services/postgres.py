"""PostgreSQL from Debian's packages: initdb into a temp folder, one server on a free port."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
from pathlib import Path

from tests.services.base import LocalServer, Running
from tests.services.debian import ensure_packages, postgres_bin_dir
from tests.services.process import ServiceError, free_port, run, spawn, wait_ready

USER = "datalayer"
PASSWORD = "datalayer-secret"
DATABASE = "datalayer"


class PostgresServer(LocalServer):
    name = "postgres"
    env_var = "DATALAYER_POSTGRES_URL"

    stop_signal = int(signal.SIGINT)  # PostgreSQL's fast shutdown
    port: int | None = None

    def install(self) -> None:
        ensure_packages(["postgresql"], present=postgres_bin_dir() is not None)

    def _as_postgres(self, command: list[str]) -> list[str]:
        """initdb and postgres refuse to run as root: run them as the 'postgres' user then."""
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def _owned(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> Running:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError("postgres: no /usr/lib/postgresql/*/bin found after install")
        pgdata = self.data_dir / "pgdata"
        if self.port is None:
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self.data_dir.mkdir(parents=True)
            self._owned(self.data_dir)
            self.initialize(bin_dir, pgdata)
            self.port = free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._owned(self.log)
        self.process = spawn(
            self._as_postgres(
                [
                    f"{bin_dir}/postgres",
                    "-D",
                    str(pgdata),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.data_dir}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]
            ),
            self.log,
        )
        admin = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"
        wait_ready(
            self.name,
            lambda: self.check(admin),
            timeout=self.start_timeout,
            log=self.log,
            process=self.process,
        )
        self._create_database(admin)
        return self.running(self.url)

    def initialize(self, bin_dir: str, pgdata: Path) -> None:
        """A new cluster in ``pgdata`` (initdb), its superuser ``USER``."""
        password_file = self.data_dir / "password"
        password_file.write_text(PASSWORD + "\n")
        self._owned(password_file)
        run(
            self._as_postgres(
                [
                    f"{bin_dir}/initdb",
                    "-D",
                    str(pgdata),
                    "-U",
                    USER,
                    f"--pwfile={password_file}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            what="postgres: initdb",
            timeout=120,
        )

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @staticmethod
    def _create_database(admin: str) -> None:
        import psycopg

        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    @staticmethod
    def check(url: str) -> None:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1").fetchone()


class PostgresReplica(PostgresServer):
    """A streaming replica of a running ``PostgresServer`` on loopback: a base backup of it
    (``pg_basebackup -R``, which writes the standby settings), then a hot standby that
    answers reads and replays the primary's WAL."""

    name = "postgres-replica"

    def __init__(self, primary: PostgresServer, state_dir: Path, cache_dir: Path) -> None:
        super().__init__(state_dir, cache_dir)
        self.primary = primary

    def initialize(self, bin_dir: str, pgdata: Path) -> None:
        assert self.primary.port is not None, "the primary is not running"
        run(
            self._as_postgres(
                [
                    "env",
                    f"PGPASSWORD={PASSWORD}",
                    f"{bin_dir}/pg_basebackup",
                    "-D",
                    str(pgdata),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.primary.port),
                    "-U",
                    USER,
                    "-X",
                    "stream",
                    "-R",
                    "--no-sync",
                ]
            ),
            what="postgres: pg_basebackup",
            timeout=120,
        )

    @staticmethod
    def _create_database(admin: str) -> None:
        """The primary's databases are there already (and a standby takes no writes)."""

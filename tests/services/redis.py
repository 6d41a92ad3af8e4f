"""Redis from Debian's packages: one server on a free port, with a password, no persistence."""

from __future__ import annotations

import shutil

from tests.services.base import LocalServer, Running
from tests.services.debian import ensure_packages
from tests.services.process import free_port, spawn, wait_ready

PASSWORD = "datalayer-secret"


class RedisServer(LocalServer):
    name = "redis"
    env_var = "DATALAYER_REDIS_URL"

    port: int | None = None

    def install(self) -> None:
        ensure_packages(["redis-server"], present=shutil.which("redis-server") is not None)

    def start(self) -> Running:
        if self.port is None:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
                "--daemonize",
                "no",
            ],
            self.log,
        )
        wait_ready(
            "redis",
            lambda: self.check(self.url),
            timeout=self.start_timeout,
            log=self.log,
            process=self.process,
        )
        return self.running(self.url)

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    @staticmethod
    def check(url: str) -> None:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            if not client.ping():
                raise RuntimeError("PING did not answer PONG")
        finally:
            client.close()

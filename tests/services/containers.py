"""Servers as containers from the official images, where a Docker engine answers."""

from __future__ import annotations

from typing import Any

from tests.services.base import Running

IMAGES = {
    "postgres": "postgres:16",
    "redis": "redis:7",
    "kafka": "apache/kafka:4.1.1",
    "mongodb": "mongo:7",
}


def docker_available() -> bool:
    """True when a Docker engine answers a ping within two seconds."""
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_container(name: str) -> tuple[Running, Any]:
    """Start one server with testcontainers; returns its Running record and the container."""
    if name == "postgres":
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer(
            IMAGES[name],
            username="datalayer",
            password="datalayer-secret",
            dbname="datalayer",
            driver=None,
        )
        pg.start()
        url = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        return Running(name, url, "container", container=pg.get_wrapped_container().id), pg
    if name == "redis":
        from testcontainers.redis import RedisContainer

        rd = RedisContainer(IMAGES[name], password="datalayer-secret")
        rd.start()
        host, port = rd.get_container_host_ip(), rd.get_exposed_port(6379)
        url = f"redis://:datalayer-secret@{host}:{port}/0"
        return Running(name, url, "container", container=rd.get_wrapped_container().id), rd
    if name == "kafka":
        from testcontainers.kafka import KafkaContainer

        kf = KafkaContainer(IMAGES[name]).with_kraft()
        kf.start()
        return Running(
            name, kf.get_bootstrap_server(), "container", container=kf.get_wrapped_container().id
        ), kf
    if name == "mongodb":
        from testcontainers.mongodb import MongoDbContainer

        mg = MongoDbContainer(IMAGES[name])
        mg.start()
        return Running(
            name, mg.get_connection_url(), "container", container=mg.get_wrapped_container().id
        ), mg
    raise KeyError(name)


def stop_container(container_id: str) -> None:
    import docker

    client = docker.from_env(timeout=10)
    try:
        client.containers.get(container_id).remove(force=True)
    finally:
        client.close()

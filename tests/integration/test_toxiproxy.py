"""Toxiproxy in front of each real server, driven with the raw drivers only: every fault the
resilience tests build on does what it says, and a reset undoes it.

redis-py retries timeouts and connection errors three times by default, and pymongo retries
reads once: the clients here turn that off, so each test sees the fault itself.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pymongo
import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pymongo.errors import ConnectionFailure
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.services.toxiproxy import NOWHERE, Proxied, ProxiedKafka, Toxiproxy, ToxiproxyError


@contextmanager
def raw_redis(url: str, timeout: float = 5.0) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield client
    finally:
        client.close()


@contextmanager
def raw_mongo(url: str) -> Iterator[pymongo.MongoClient[dict[str, object]]]:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        url,
        serverSelectionTimeoutMS=2000,
        connectTimeoutMS=2000,
        socketTimeoutMS=5000,
        retryReads=False,
        retryWrites=False,
    )
    try:
        yield client
    finally:
        client.close()


def timed(call: object) -> float:
    assert callable(call)
    started = time.monotonic()
    call()
    return time.monotonic() - started


# --- Redis ------------------------------------------------------------------------------


def test_latency_slows_every_redis_round_trip_until_it_is_removed(redis_proxy: Proxied) -> None:
    with raw_redis(redis_proxy.url) as client:
        assert client.ping()
        with redis_proxy.proxy.toxic(redis_proxy.proxy.latency(300)):
            assert timed(client.ping) >= 0.3  # the open connection is slowed too
            with raw_redis(redis_proxy.url) as fresh:
                assert timed(fresh.ping) >= 0.3
        assert timed(client.ping) < 0.25


def test_a_black_hole_stalls_redis_until_the_client_times_out(redis_proxy: Proxied) -> None:
    with raw_redis(redis_proxy.url, timeout=1.0) as client:
        assert client.ping()
        redis_proxy.proxy.timeout()  # bytes dropped, the connection never closed
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert 0.9 <= time.monotonic() - started < 5
    redis_proxy.proxy.reset()
    with raw_redis(redis_proxy.url) as client:
        assert client.ping()


def test_bandwidth_caps_a_large_redis_read(redis_proxy: Proxied) -> None:
    key = f"toxiproxy-test:{uuid.uuid4().hex}"
    with raw_redis(redis_proxy.direct_url) as direct, raw_redis(redis_proxy.url) as client:
        direct.set(key, b"x" * 200_000, ex=60)
        try:
            assert timed(lambda: client.get(key)) < 0.3
            redis_proxy.proxy.bandwidth(400)  # 200 kB at 400 kB/s: about half a second
            assert timed(lambda: client.get(key)) >= 0.35
        finally:
            direct.delete(key)


def test_slow_close_holds_back_the_close_the_server_sent(redis_proxy: Proxied) -> None:
    password = urllib.parse.urlsplit(redis_proxy.url).password
    commands = (f"AUTH {password}\r\n" if password else "") + "QUIT\r\n"

    def close_takes() -> float:
        with socket.create_connection(("127.0.0.1", redis_proxy.proxy.port), timeout=5) as sock:
            sock.sendall(commands.encode())
            started = time.monotonic()
            while sock.recv(4096):  # +OK, +OK, then the server's close
                pass
            return time.monotonic() - started

    assert close_takes() < 0.3
    redis_proxy.proxy.slow_close(600)
    assert close_takes() >= 0.5


# --- PostgreSQL -------------------------------------------------------------------------


def test_a_disabled_proxy_refuses_postgres_then_serves_on_the_same_port(
    postgres_proxy: Proxied,
) -> None:
    live = psycopg.connect(postgres_proxy.url, connect_timeout=2, autocommit=True)
    try:
        assert live.execute("SELECT 1").fetchone() == (1,)
        with postgres_proxy.proxy.down():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", postgres_proxy.proxy.port), timeout=2)
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(postgres_proxy.url, connect_timeout=2)
            with pytest.raises(psycopg.OperationalError):
                live.execute("SELECT 1")  # the open connection was closed under it
    finally:
        live.close()
    with psycopg.connect(postgres_proxy.url, connect_timeout=2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_reset_peer_fails_a_postgres_query_until_reset(
    postgres_proxy: Proxied, toxiproxy: Toxiproxy
) -> None:
    with psycopg.connect(postgres_proxy.url, connect_timeout=2, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        postgres_proxy.proxy.reset_peer()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres_proxy.url, connect_timeout=2)
    toxiproxy.reset()
    with psycopg.connect(postgres_proxy.url, connect_timeout=2) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_through_gives_another_database_behind_the_same_proxy(
    postgres_proxy: Proxied, postgres_database: str
) -> None:
    url = postgres_proxy.through(postgres_database)
    assert f":{postgres_proxy.proxy.port}/" in url
    with psycopg.connect(url, connect_timeout=2) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
    assert name == (postgres_database.rpartition("/")[2],)


# --- MongoDB (FerretDB) -----------------------------------------------------------------


def test_mongodb_through_the_proxy_feels_latency_an_outage_and_resets(
    mongodb_proxy: Proxied,
) -> None:
    with raw_mongo(mongodb_proxy.url) as client:
        ping = lambda: client.admin.command("ping")  # noqa: E731
        ping()
        with mongodb_proxy.proxy.toxic(mongodb_proxy.proxy.latency(300)):
            assert timed(ping) >= 0.3
        mongodb_proxy.proxy.reset_peer()
        with pytest.raises(ConnectionFailure):
            ping()
        mongodb_proxy.proxy.reset()
        with mongodb_proxy.proxy.down():
            started = time.monotonic()
            with pytest.raises(ConnectionFailure):
                ping()
            assert time.monotonic() - started < 5
        ping()


# --- Kafka ------------------------------------------------------------------------------


def test_kafka_behind_the_proxy_advertises_it_and_feels_its_faults(
    kafka_proxy: ProxiedKafka,
) -> None:
    topic = f"toxiproxy-{uuid.uuid4().hex[:8]}"
    direct = AdminClient({"bootstrap.servers": kafka_proxy.direct_url})
    direct.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=20)

    proxied = AdminClient({"bootstrap.servers": kafka_proxy.url})
    brokers = proxied.list_topics(timeout=10).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", kafka_proxy.proxy.port)]
    assert kafka_proxy.direct_url != kafka_proxy.url

    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {
            "bootstrap.servers": kafka_proxy.url,
            "message.timeout.ms": 3000,
            "socket.timeout.ms": 3000,
            "linger.ms": 0,
            "reconnect.backoff.max.ms": 500,
        }
    )

    def publish() -> None:
        producer.produce(topic, b"v", on_delivery=delivered)
        assert producer.flush(10) == 0

    publish()
    assert failures == []
    with kafka_proxy.proxy.toxic(kafka_proxy.proxy.latency(300)):
        assert timed(publish) >= 0.3
    assert failures == []

    with kafka_proxy.proxy.down():
        started = time.monotonic()
        publish()
        assert time.monotonic() - started < 8
    assert [f.code() for f in failures] == [KafkaError._MSG_TIMED_OUT]

    failures.clear()
    publish()
    assert failures == []
    producer.flush(1)
    reader = Consumer({"bootstrap.servers": kafka_proxy.direct_url, "group.id": topic})
    try:  # the three publishes that were acknowledged, and not the one that timed out
        assert reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 3)
    finally:
        reader.close()


# --- the client -------------------------------------------------------------------------


def test_toxics_are_listed_removed_and_api_errors_name_the_call(toxiproxy: Toxiproxy) -> None:
    proxy = toxiproxy.create_proxy("api", NOWHERE)
    assert proxy.name.startswith(toxiproxy.prefix) and proxy.port > 0
    proxy.latency(100, stream="upstream")
    proxy.bandwidth(50)
    assert sorted((t.name, t.type, t.stream) for t in proxy.toxics()) == [
        ("bandwidth_downstream", "bandwidth", "downstream"),
        ("latency_upstream", "latency", "upstream"),
    ]
    with pytest.raises(ToxiproxyError, match="409") as exists:
        proxy.bandwidth(10)
    assert exists.value.status == 409 and "toxics" in str(exists.value)
    with pytest.raises(ToxiproxyError, match="400"):
        proxy.add_toxic("no_such_toxic", {})
    proxy.remove_toxic("bandwidth_downstream")
    assert [t.name for t in proxy.toxics()] == ["latency_upstream"]
    proxy.disable()
    assert not proxy.enabled
    proxy.reset()
    assert proxy.enabled and proxy.toxics() == []
    with pytest.raises(ToxiproxyError, match="404"):
        toxiproxy.proxy(f"{toxiproxy.prefix}missing")


def test_reset_and_delete_leave_other_clients_proxies_alone(
    toxiproxy: Toxiproxy, toxiproxy_url: str
) -> None:
    other = Toxiproxy(toxiproxy_url, prefix=f"other-{uuid.uuid4().hex[:8]}-")
    try:
        theirs = other.create_proxy("p", NOWHERE)
        mine = toxiproxy.create_proxy("p", NOWHERE)
        assert theirs.name != mine.name
        theirs.latency(10)
        mine.latency(10)
        toxiproxy.reset()
        assert mine.toxics() == [] and len(theirs.toxics()) == 1
        toxiproxy.delete_proxies()
        names = {p.name for p in toxiproxy.proxies()}
        assert theirs.name in names and mine.name not in names
    finally:
        other.delete_proxies()

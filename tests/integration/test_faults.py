"""Kafka and Redis stopped under a live client: a bounded, clear failure, then recovery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer import StoreUnavailable
from datalayer.testing.registry import write_registry
from tests.services.kafka import KafkaServer
from tests.services.redis import PASSWORD as REDIS_PASSWORD
from tests.services.redis import RedisServer


def open_layer(
    tmp_path: Path, store: dict[str, Any], pattern: dict[str, Any]
) -> datalayer.DataLayer:
    file = write_registry(tmp_path, {"p": {"main": store}}, {"it": {"store": "main", **pattern}})
    dl = datalayer.open(file, "p")
    dl.apply()
    return dl


def test_stopped_redis_fails_fast_then_recovers(private_redis: RedisServer, tmp_path: Path) -> None:
    store = {
        "type": "redis",
        "url": private_redis.url,
        "connect_timeout": 1,
        "resilience": {"timeout": "1s"},
    }
    with open_layer(tmp_path, store, {"category": "key-value", "ttl": "1h"}) as dl:
        kv = dl.kv("it")
        kv.set("k", {"v": 1})
        private_redis.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            kv.set("k", {"v": 2})
        assert time.monotonic() - started < 15
        assert "store 'main'" in str(caught.value) and REDIS_PASSWORD not in str(caught.value)
        private_redis.restart()
        kv.set("k", {"v": 3})
        assert kv.get("k") == {"v": 3}


def test_stopped_kafka_fails_publish_within_the_delivery_timeout_then_recovers(
    private_kafka: KafkaServer, tmp_path: Path
) -> None:
    store = {
        "type": "kafka",
        "bootstrap_servers": private_kafka.bootstrap,
        "delivery_timeout_ms": 4000,
        "request_timeout_ms": 2000,
    }
    pattern = {
        "category": "streaming",
        "topic": "faults",
        "partitions": 2,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    event = {"event_id": "e", "device": "d", "seq": 1}
    with open_layer(tmp_path, store, pattern) as dl:
        stream = dl.stream("it")
        stream.publish(event)
        private_kafka.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            stream.publish(event)
        assert time.monotonic() - started < 4 + 6
        assert "store 'main'" in str(caught.value)
        private_kafka.restart()
        delivery = stream.publish(event)
        assert delivery.offset >= 1
        got = [m.value for m in stream.consume(None, start="earliest", idle_timeout=3)]
        assert got == [{**event, "payload": ""}] * 2, "the failed publish must not have landed"

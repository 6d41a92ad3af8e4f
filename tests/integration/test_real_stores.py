"""What `datalayer apply` creates on the real servers, checked with the servers' own clients."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import datalayer
from datalayer.testing.registry import write_registry


def open_layer(
    tmp_path: Path, store: dict[str, Any], patterns: dict[str, Any]
) -> datalayer.DataLayer:
    return datalayer.open(write_registry(tmp_path, {"p": {"main": store}}, patterns), "p")


def test_apply_creates_kafka_topics_with_partitions_and_retention(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    topic = f"orders_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "streaming",
        "store": "main",
        "topic": topic,
        "partitions": 5,
        "retention": "2d",
        "dead_letter": f"{topic}.dlq",
    }
    store = {"type": "kafka", "bootstrap_servers": kafka_bootstrap, "max_message_bytes": 200_000}
    with open_layer(tmp_path, store, {"orders": pattern}) as dl:
        first = dl.apply()
        again = dl.apply()
        pattern["partitions"] = 7
    assert f"topic '{topic}' created (5 partitions)" in first[0].actions
    assert f"topic '{topic}' exists (5 partitions)" in again[0].actions
    with open_layer(tmp_path, store, {"orders": pattern}) as dl:
        assert f"topic '{topic}' grown to 7 partitions" in dl.apply()[0].actions

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 7
    assert len(metadata.topics[f"{topic}.dlq"].partitions) == 7
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == str(2 * 86400 * 1000)
    assert int(configs["max.message.bytes"].value) > 200_000


def test_apply_creates_mongodb_collections_and_indexes(mongodb_url: str, tmp_path: Path) -> None:
    import pymongo

    collection = f"incidents_{uuid.uuid4().hex[:8]}"
    pattern = {
        "category": "document",
        "store": "main",
        "collection": collection,
        "key": "incident_id",
        "indexes": ["service_id", "-opened_at"],
    }
    store = {"type": "mongodb", "url": mongodb_url, "database": "apply_test"}
    with open_layer(tmp_path, store, {"incidents": pattern}) as dl:
        assert f"collection '{collection}' created" in dl.apply()[0].actions
        assert f"collection '{collection}' exists" in dl.apply()[0].actions
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_url)
    try:
        indexes = client["apply_test"][collection].index_information()
    finally:
        client.close()
    assert indexes[f"ix_{collection}_service_id"]["key"] == [("service_id", 1)]
    assert indexes[f"ix_{collection}_opened_at"]["key"] == [("opened_at", -1)]

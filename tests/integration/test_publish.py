"""The publisher on a real Kafka broker when librdkafka's queue is smaller than what is sent."""

from __future__ import annotations

import uuid
from pathlib import Path

import datalayer
from datalayer.testing.registry import write_registry


def test_publisher_waits_for_room_when_the_producer_queue_is_full(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bounded_{uuid.uuid4().hex[:8]}"
    store = {
        "type": "kafka",
        "bootstrap_servers": kafka_bootstrap,
        "session_timeout": "3s",
        # At most 50 messages queued in the producer: each batch below has to wait for room.
        "options": {"queue.buffering.max.messages": 50},
    }
    pattern = {
        "category": "streaming",
        "store": "main",
        "topic": topic,
        "partitions": 3,
        "key": "device",
        "schema": "datalayer.testing.contracts.schemas:Event",
    }
    file = write_registry(tmp_path, {"p": {"main": store}}, {"e": pattern})
    events = [{"event_id": f"e{n}", "device": f"dev-{n % 7}", "seq": n} for n in range(2_000)]
    with datalayer.open(file, "p") as dl:
        dl.apply()
        stream = dl.stream("e")
        with stream.publisher() as publisher:
            for start in range(0, len(events), 500):
                assert publisher.publish_many(events[start : start + 500]) == 500
        assert sum(stream.end_offsets().values()) == 2_000
        read = [m.value for m in stream.consume(None, start="earliest", max_messages=2_000)]
    assert sorted(v["seq"] for v in read) == list(range(2_000))
    for device in {e["device"] for e in events}:
        seqs = [v["seq"] for v in read if v["device"] == device]
        assert seqs == sorted(seqs)

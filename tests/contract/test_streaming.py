"""The streaming contract against every built-in streaming store type."""

from __future__ import annotations

from typing import Any

from datalayer.testing.contracts import StreamingContract

#: A Kafka fetch after an assignment takes a few hundred milliseconds.
IDLE_BY_BACKEND = {"embedded-log": 0.5, "kafka": 2.0}


class TestStreaming(StreamingContract):
    """The embedded log and Kafka."""

    def idle_for(self, store: dict[str, Any]) -> float:
        return IDLE_BY_BACKEND[store["type"]]

    def refuse_writes(self, stream: Any, topic: str) -> None:
        if stream.store.config.type == "kafka":
            from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

            entry = ConfigEntry(
                "max.message.bytes", "16", incremental_operation=AlterConfigOpType.SET
            )
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
            stream.store.admin.incremental_alter_configs([resource])[resource].result(10)
        else:
            with stream.store.db.write() as conn:
                conn.execute(
                    f"CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.topic = '{topic}' "
                    "BEGIN SELECT RAISE(ABORT, 'the test refuses this message'); END"
                )

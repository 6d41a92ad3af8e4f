"""The Kafka store: topic administration, producer and consumer behind ``StreamBackend``."""

from __future__ import annotations

from collections.abc import Sequence

from datalayer.categories.streaming import (
    AssignmentCallback,
    Delivery,
    OutgoingRecord,
    StartPositions,
    Stream,
    StreamBackend,
    StreamingPattern,
)
from datalayer.stores.base import Store
from datalayer.stores.streaming.kafka.config import KafkaConfig, TopicAdmin
from datalayer.stores.streaming.kafka.consumer import (
    KafkaConsumer,
    committed_offsets,
    end_offsets,
)
from datalayer.stores.streaming.kafka.producer import KafkaProducer, KafkaQueue


class KafkaStore(Store[StreamingPattern, Stream], StreamBackend):
    config: KafkaConfig

    def __init__(self, name: str, config: KafkaConfig) -> None:
        super().__init__(name, config)
        self.commit_policy = config.commit
        self.topics = TopicAdmin(self.label, config)
        #: confluent-kafka's admin client, for what the store itself does not offer.
        self.admin = self.topics.client
        self.producer = KafkaProducer(self.label, config, self.topics.partitions)

    def handle(self, pattern: StreamingPattern) -> Stream:
        return Stream(pattern, self)

    def apply(self, patterns: list[StreamingPattern]) -> list[str]:
        return self.topics.apply(patterns)

    def ping(self) -> None:
        self.topics.ping()

    def problem(self) -> str | None:
        return self.topics.last_error()

    def close(self) -> None:
        self.producer.close()

    def partitions(self, topic: str) -> int:
        return self.topics.partitions(topic)

    def produce(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        return self.producer.produce(topic, records)

    def produce_values(
        self, topic: str, keys: list[str | None], values: list[bytes]
    ) -> list[Delivery]:
        return self.producer.produce_values(topic, keys, values)

    def publish_queue(self, topic: str) -> KafkaQueue:
        return KafkaQueue(self.producer, topic)

    def open_consumer(
        self,
        topic: str,
        group: str | None,
        start: StartPositions,
        on_assignment: AssignmentCallback,
        on_release: AssignmentCallback,
    ) -> KafkaConsumer:
        self.partitions(topic)
        return KafkaConsumer(
            self.label, self.config, topic, group, start, on_assignment, on_release
        )

    def end_offsets(self, topic: str) -> dict[int, int]:
        return end_offsets(self.label, self.config, topic, self.partitions(topic))

    def committed_offsets(self, topic: str, group: str) -> dict[int, int]:
        return committed_offsets(self.label, self.config, topic, group, self.partitions(topic))

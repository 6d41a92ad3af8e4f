"""Kafka settings, the one place its errors are classified, and topic administration."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from datalayer.categories.streaming import CommitPolicy, StreamingPattern
from datalayer.errors import DataLayerError, NotApplied, StoreLabel, StoreUnavailable
from datalayer.stores.base import StoreConfig, require_driver
from datalayer.validators import Duration

if TYPE_CHECKING:
    from datalayer.stores.streaming.kafka.store import KafkaStore

#: librdkafka error codes that mean "the cluster cannot be reached right now".
UNAVAILABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_MSG_TIMED_OUT", "_TIMED_OUT", "_RESOLVE"}


class KafkaConfig(StoreConfig):
    """Bootstrap servers (``host:port[,host:port]``) and client settings."""

    type: Literal["kafka"]
    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "datalayer"
    delivery_timeout_ms: int = Field(default=30_000, ge=1000, le=2_147_483_647)
    request_timeout_ms: int = Field(default=10_000, ge=500, le=300_000)
    session_timeout: Duration = timedelta(seconds=10)
    max_message_bytes: int = Field(default=1_000_000, ge=1024, le=999_000_000)
    linger_ms: int = Field(default=5, ge=0, le=900_000)
    commit: CommitPolicy = Field(default_factory=CommitPolicy)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _librdkafka_takes_them(
        cls, options: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        """Check each setting's name and value with librdkafka itself, at load (``validate``)
        rather than when the first client starts; a client with no broker connects nowhere."""
        try:
            from confluent_kafka import KafkaException, Producer
        except ImportError:  # the loader names the missing extra before this matters
            return options
        try:
            Producer({**options, "bootstrap.servers": "", "log_level": 0})
        except KafkaException as exc:
            raise ValueError(exc.args[0].str() if exc.args else str(exc)) from None
        return options

    def target(self) -> str:
        return self.bootstrap_servers

    def connect(self, name: str, base_dir: Path) -> KafkaStore:
        require_driver("confluent_kafka", "kafka", self.type)
        from datalayer.stores.streaming.kafka.store import KafkaStore

        return KafkaStore(name, self)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings of every client of this store, then ``extra``."""
        # librdkafka's own log lines (dozens while a broker is down) stay off the terminal:
        # failures surface as exceptions. They go to the Python logger "librdkafka" when it
        # shows INFO (``datalayer --verbose``); ``options: {log_level: 7}`` sets the detail.
        librdkafka = logging.getLogger("librdkafka")
        logs: dict[str, Any] = {"log_level": 0}
        if librdkafka.isEnabledFor(logging.INFO):
            logs = {"log_level": 6, "logger": librdkafka}
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "socket.timeout.ms": self.request_timeout_ms,
            **logs,
            **self.options,
            **extra,
        }


@contextmanager
def kafka_errors(label: StoreLabel) -> Iterator[None]:
    """Kafka errors as datalayer errors naming the store (``label``)."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        code = error.name() if isinstance(error, KafkaError) else ""
        if code in UNAVAILABLE:
            raise StoreUnavailable(f"{label} is unavailable: {error}", store=label.name) from exc
        raise DataLayerError(f"{label}: {error or exc}", store=label.name) from exc


class TopicAdmin:
    """Topics of one cluster: creates and grows them, and knows their partition counts."""

    def __init__(self, label: StoreLabel, config: KafkaConfig) -> None:
        from confluent_kafka.admin import AdminClient

        self.label = label
        self.config = config
        self.client = AdminClient(config.client_config(error_cb=self._remember))
        self.timeout = config.request_timeout_ms / 1000
        self._partitions: dict[str, int] = {}
        self._last_error: str | None = None

    def _remember(self, error: Any) -> None:
        self._last_error = error.str()

    def last_error(self) -> str | None:
        """librdkafka's last error report of this client (a refused connection, say): its
        reports wait in a queue until the client is polled."""
        self.client.poll(0)
        return self._last_error

    def partitions(self, topic: str) -> int:
        """Partition count of a topic, from cluster metadata (cached)."""
        if topic not in self._partitions:
            with kafka_errors(self.label):
                metadata = self.client.list_topics(topic=topic, timeout=self.timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise NotApplied(
                    f"{self.label}: topic '{topic}' does not exist; run 'datalayer apply'",
                    store=self.label.name,
                )
            self._partitions[topic] = len(described.partitions)
        return self._partitions[topic]

    def apply(self, patterns: list[StreamingPattern]) -> list[str]:
        """Create each topic and its dead-letter topic, grow partitions, set retention and size."""
        done = []
        for pattern in patterns:
            settings = {"max.message.bytes": str(self.config.max_message_bytes + 1024)}
            if pattern.retention:
                settings["retention.ms"] = str(int(pattern.retention.total_seconds() * 1000))
            for topic in filter(None, [pattern.topic, pattern.dead_letter]):
                with kafka_errors(self.label):
                    done.append(self._converge(topic, pattern, settings))
                self._partitions.pop(topic, None)
        return done

    def ping(self) -> None:
        with kafka_errors(self.label):
            self.client.list_topics(timeout=self.timeout)

    def _converge(self, topic: str, pattern: StreamingPattern, settings: dict[str, str]) -> str:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import (  # type: ignore[attr-defined]
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            NewPartitions,
            NewTopic,
        )

        timeout = self.timeout
        described = self.client.list_topics(topic=topic, timeout=timeout).topics.get(topic)
        if described is None or described.error is not None:
            new = NewTopic(topic, pattern.partitions, pattern.replication_factor, config=settings)
            try:
                self.client.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
                self._await_partitions(topic, pattern.partitions)
                return f"topic '{topic}' created ({pattern.partitions} partitions)"
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            described = self.client.list_topics(topic=topic, timeout=timeout).topics[topic]
        current = len(described.partitions)
        if current > pattern.partitions:
            raise DataLayerError(
                f"{self.label}: topic '{topic}' has {current} partitions; "
                f"it cannot shrink to {pattern.partitions}",
                store=self.label.name,
            )
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in settings.items()
            ],
        )
        self.client.incremental_alter_configs([resource])[resource].result(timeout)
        if current < pattern.partitions:
            self.client.create_partitions([NewPartitions(topic, pattern.partitions)])[topic].result(
                timeout
            )
            self._await_partitions(topic, pattern.partitions)
            return f"topic '{topic}' grown to {pattern.partitions} partitions"
        return f"topic '{topic}' exists ({pattern.partitions} partitions)"

    def _await_partitions(self, topic: str, count: int) -> None:
        """Wait until cluster metadata shows every partition with a leader (it lags creation)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            described = self.client.list_topics(topic=topic, timeout=5).topics.get(topic)
            partitions = described.partitions if described is not None else {}
            if len(partitions) >= count and all(p.leader >= 0 for p in partitions.values()):
                return
            time.sleep(0.1)
        raise StoreUnavailable(
            f"{self.label}: topic '{topic}' did not get {count} partitions in time",
            store=self.label.name,
        )

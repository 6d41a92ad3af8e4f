"""The streaming pattern: what a registry entry of category ``streaming`` declares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from datalayer.patterns import PatternConfig, Target
from datalayer.validators import Duration, FieldPath, TopicName


class StreamingPattern(PatternConfig):
    """A topic with partitions; ``key`` names the payload field that picks the partition."""

    accessor: ClassVar[str] = "stream"

    category: Literal["streaming"]
    topic: TopicName
    # strict: YAML's ``true`` is no count (pydantic would read it as 1)
    partitions: int = Field(default=1, ge=1, le=10_000, strict=True)
    key: FieldPath | None = None
    dead_letter: TopicName | None = None
    max_attempts: int = Field(default=3, ge=1, le=100, strict=True)
    retention: Duration | None = None
    replication_factor: int = Field(default=1, ge=1, le=10, strict=True)

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        if self.key:
            yield "key", self.key

    def targets(self) -> list[Target]:
        topics = [("topic", self.topic), ("dead_letter", self.dead_letter)]
        return [Target(attribute, "topic", topic) for attribute, topic in topics if topic]

    def summary(self) -> str:
        return f"{super().summary()}, {self.partitions} partitions"

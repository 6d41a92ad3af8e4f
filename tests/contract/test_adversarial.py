"""The adversarial suites against every built-in store type of each category."""

from __future__ import annotations

from typing import Any

from datalayer.testing.contracts.adversarial import (
    DocumentAdversarial,
    KeyValueAdversarial,
    StreamingAdversarial,
    TransactionalAdversarial,
)


class TestKeyValueAdversarial(KeyValueAdversarial):
    """Embedded key-value and Redis."""


class TestDocumentAdversarial(DocumentAdversarial):
    """Embedded documents and MongoDB."""


class TestTransactionalAdversarial(TransactionalAdversarial):
    """SQLite and PostgreSQL."""


class TestStreamingAdversarial(StreamingAdversarial):
    """The embedded log and Kafka: a Kafka fetch after an assignment is slower."""

    def idle_for(self, store: dict[str, Any]) -> float:
        return 2.0 if store["type"] == "kafka" else 0.5

"""Where a message goes when it cannot be handled: the pattern's dead-letter topic."""

from __future__ import annotations

import logging

from datalayer.categories.streaming.backend import OutgoingRecord, Record, StreamBackend
from datalayer.categories.streaming.pattern import StreamingPattern

log = logging.getLogger(__name__)

HEADER_ERROR = "x-datalayer-error"
HEADER_ATTEMPTS = "x-datalayer-attempts"
HEADER_SOURCE = "x-datalayer-source"
#: Bytes of error text a dead-letter copy carries: a message at the size limit still fits with
#: its headers in the slack the stores allow above it (Kafka: 1 KiB), so it is never refused.
ERROR_BYTES = 512


def error_text(error: BaseException | str, limit: int = ERROR_BYTES) -> str:
    """The error as header text, cut to ``limit`` UTF-8 bytes (never mid-character)."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    cut = text.encode()[:limit]
    return cut.decode(errors="ignore")


class DeadLetters:
    """Republishes a message to the dead-letter topic with why, how often and where from;
    without a dead-letter topic the message is dropped, and the log says so."""

    def __init__(self, pattern: StreamingPattern, backend: StreamBackend) -> None:
        self.topic = pattern.dead_letter
        self.pattern_name = pattern.name
        self.backend = backend

    def send(self, record: Record, error: BaseException | str, attempts: int) -> None:
        if not self.topic:
            log.error(
                "dropping %s/%s@%s after %s attempts (pattern '%s' has no dead_letter): %s",
                record.topic,
                record.partition,
                record.offset,
                attempts,
                self.pattern_name,
                error,
            )
            return
        headers = {
            **(record.headers or {}),
            HEADER_ERROR: error_text(error),
            HEADER_ATTEMPTS: str(attempts),
            HEADER_SOURCE: f"{record.topic}/{record.partition}/{record.offset}",
        }
        self.backend.produce(self.topic, [OutgoingRecord(record.key, record.value, headers)])

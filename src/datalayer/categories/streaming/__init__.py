"""Streaming: ordered event streams read by consumer groups (the contract is ``Stream``).

``stream`` holds the contract and its guarantees; ``backend`` what a store implements;
``codec`` turns events into bytes and back; ``consumer`` runs the consumer loop over
``offsets`` (acknowledgements to commits) and ``dead_letters``; ``publisher`` publishes for
throughput; ``start`` reads where a consumer starts.
"""

from __future__ import annotations

from datalayer.categories.streaming.backend import (
    AssignmentCallback,
    CommitPolicy,
    ConsumerHandle,
    Delivery,
    OutgoingRecord,
    PublishQueue,
    Record,
    StartPositions,
    StreamBackend,
)
from datalayer.categories.streaming.consumer import ConsumeOptions, Message, MessageBatch
from datalayer.categories.streaming.dead_letters import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_SOURCE,
)
from datalayer.categories.streaming.offsets import ProcessStats
from datalayer.categories.streaming.pattern import StreamingPattern
from datalayer.categories.streaming.publisher import Publisher
from datalayer.categories.streaming.start import StartAt, StartPosition
from datalayer.categories.streaming.stream import Stream

__all__ = [
    "HEADER_ATTEMPTS",
    "HEADER_ERROR",
    "HEADER_SOURCE",
    "AssignmentCallback",
    "CommitPolicy",
    "ConsumeOptions",
    "ConsumerHandle",
    "Delivery",
    "Message",
    "MessageBatch",
    "OutgoingRecord",
    "ProcessStats",
    "PublishQueue",
    "Publisher",
    "Record",
    "StartAt",
    "StartPosition",
    "StartPositions",
    "Stream",
    "StreamBackend",
    "StreamingPattern",
]

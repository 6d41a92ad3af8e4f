"""datalayer: codified data-access patterns, each category of data on a store fit for it."""

from __future__ import annotations

from datalayer.api import DataLayer, open
from datalayer.categories.streaming import (
    Delivery,
    Message,
    MessageBatch,
    ProcessStats,
    Publisher,
    StartAt,
    Stream,
)
from datalayer.errors import (
    CircuitOpen,
    ConfigError,
    Conflict,
    DataLayerError,
    MissingDriver,
    NotApplied,
    NotFound,
    PayloadValidationError,
    QueryError,
    StoreTimeout,
    StoreUnavailable,
)

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

__all__ = [
    "CircuitOpen",
    "ConfigError",
    "Conflict",
    "DataLayer",
    "DataLayerError",
    "Delivery",
    "Message",
    "MessageBatch",
    "MissingDriver",
    "NotApplied",
    "NotFound",
    "PayloadValidationError",
    "ProcessStats",
    "Publisher",
    "QueryError",
    "StartAt",
    "StoreTimeout",
    "StoreUnavailable",
    "Stream",
    "__version__",
    "open",
]

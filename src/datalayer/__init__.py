"""datalayer: codified data-access patterns, each category of data on a store fit for it."""

from __future__ import annotations

from datalayer.api import DataLayer, open
from datalayer.errors import (
    ConfigError,
    DataLayerError,
    MissingDriver,
    NotFound,
    PayloadValidationError,
    QueryError,
    StoreUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataLayer",
    "DataLayerError",
    "MissingDriver",
    "NotFound",
    "PayloadValidationError",
    "QueryError",
    "StoreUnavailable",
    "__version__",
    "open",
]

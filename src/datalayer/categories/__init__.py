"""Category contracts: the operations each category offers and the guarantees it keeps.

A contract is written once here; every store type that serves a category implements it, and
the same contract test suite runs against each implementation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from datalayer.categories.document import DocumentBackend, DocumentCollection, DocumentPattern
from datalayer.categories.feature import FeatureBackend, FeaturePattern, FeatureView
from datalayer.categories.kv import KeyValuePattern, KVBackend, KVNamespace
from datalayer.categories.streaming import Message, Stream, StreamBackend, StreamingPattern
from datalayer.categories.transactional import (
    Migratable,
    TransactionalBackend,
    TransactionalPattern,
    TransactionalTable,
)
from datalayer.patterns import PatternConfig

#: Each category's pattern model by its registry name; adding a category adds it here and to
#: ``AnyPattern``, and gives the facade an accessor named by the pattern's ``accessor``.
CATEGORIES: dict[str, type[PatternConfig]] = {
    "transactional": TransactionalPattern,
    "streaming": StreamingPattern,
    "document": DocumentPattern,
    "key-value": KeyValuePattern,
    "feature": FeaturePattern,
}

AnyPattern = Annotated[
    TransactionalPattern | StreamingPattern | DocumentPattern | KeyValuePattern | FeaturePattern,
    Field(discriminator="category"),
]

__all__ = [
    "CATEGORIES",
    "AnyPattern",
    "DocumentBackend",
    "DocumentCollection",
    "DocumentPattern",
    "FeatureBackend",
    "FeaturePattern",
    "FeatureView",
    "KVBackend",
    "KVNamespace",
    "KeyValuePattern",
    "Message",
    "Migratable",
    "Stream",
    "StreamBackend",
    "StreamingPattern",
    "TransactionalBackend",
    "TransactionalPattern",
    "TransactionalTable",
]

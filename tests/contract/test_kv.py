"""The key-value contract against every built-in key-value store type."""

from __future__ import annotations

from datalayer.testing.contracts import KeyValueContract


class TestKeyValue(KeyValueContract):
    """Embedded key-value and Redis."""

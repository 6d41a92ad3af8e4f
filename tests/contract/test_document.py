"""The document contract against every built-in document store type."""

from __future__ import annotations

from datalayer.testing.contracts import DocumentContract


class TestDocument(DocumentContract):
    """Embedded documents and MongoDB."""

"""The transactional contract against every built-in transactional store type."""

from __future__ import annotations

from datalayer.testing.contracts import TransactionalContract


class TestTransactional(TransactionalContract):
    """SQLite and PostgreSQL."""

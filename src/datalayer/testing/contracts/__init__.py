"""The contract suite of each category, for any store type, built-in or third-party.

A store package proves its store type keeps a category's contract by subclassing the suite in
a test module and providing one fixture, ``datalayer_store``, that returns the store's config
(what a profile would hold for it; the type must be known to datalayer, e.g. through the
``datalayer.stores`` entry point)::

    import pytest
    from datalayer.testing.contracts import KeyValueContract

    class TestMyKV(KeyValueContract):
        @pytest.fixture
        def datalayer_store(self, tmp_path):
            return {"type": "mykv", "path": str(tmp_path / "kv.db")}

Each test opens a registry with profile ``test`` whose only store, ``main``, is that config,
applies it and runs against it; tables, topics, collections and key prefixes get a fresh
suffix per test, so a shared server is fine. ``StreamingContract`` also asks for
``refuse_writes`` (make the store refuse a topic's messages) and may tune ``idle_for``.
Schemas the suites use are in ``datalayer.testing.contracts.schemas``. Needs pytest.

The adversarial suites (``datalayer.testing.contracts.adversarial``) attack the same contracts
with hostile input through every surface and count what each attempt did; a store type runs
them the same way.
"""

from __future__ import annotations

from datalayer.testing.contracts.base import Contract, OpenLayer
from datalayer.testing.contracts.document import DocumentContract
from datalayer.testing.contracts.kv import KeyValueContract
from datalayer.testing.contracts.streaming import StreamingContract
from datalayer.testing.contracts.transactional import TransactionalContract

__all__ = [
    "Contract",
    "DocumentContract",
    "KeyValueContract",
    "OpenLayer",
    "StreamingContract",
    "TransactionalContract",
]

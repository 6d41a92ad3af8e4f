"""What every contract suite shares: a registry of one store, opened per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

import datalayer
from datalayer import DataLayer
from datalayer.testing.registry import write_registry


class OpenLayer(Protocol):
    """Opens a registry whose patterns, given by name, all live on the store under test, and
    applies it unless ``apply`` is false (to see what a store says of what was never applied)."""

    def __call__(self, patterns: dict[str, Any], *, apply: bool = True) -> DataLayer: ...


def unique_targets(name: str, category: str, spec: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Suffix tables, topics, collections and prefixes so tests never share a server's names."""
    out = dict(spec)
    if category == "key-value":
        out.setdefault("prefix", name)
    for key in ("table", "topic", "collection", "dead_letter", "prefix"):
        if key in out:
            out[key] = f"{out[key]}_{suffix}"
    return out


class Contract:
    """A category's suite; a subclass provides the fixture ``datalayer_store``: the config of
    the store under test (``{"type": ..., ...}``), put in profile ``test`` as store ``main``."""

    category: ClassVar[str]

    @pytest.fixture
    def open_layer(self, datalayer_store: dict[str, Any], tmp_path: Path) -> Iterator[OpenLayer]:
        opened: list[DataLayer] = []
        suffix = uuid.uuid4().hex[:8]

        def open_with(patterns: dict[str, Any], *, apply: bool = True) -> DataLayer:
            entries = {
                name: {
                    "store": "main",
                    "category": self.category,
                    **unique_targets(name, self.category, spec, suffix),
                }
                for name, spec in patterns.items()
            }
            file = write_registry(tmp_path, {"test": {"main": datalayer_store}}, entries)
            dl = datalayer.open(file, profile="test")
            opened.append(dl)
            if apply:
                dl.apply()
            return dl

        yield open_with
        for dl in opened:
            dl.close()

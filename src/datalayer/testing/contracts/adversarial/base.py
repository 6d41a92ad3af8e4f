"""What the adversarial suites of every category share: the marker, the tally, the scan for
objects outside the patterns, and hostile identifiers in a registry."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import datalayer
from datalayer import DataLayer
from datalayer.testing.contracts.adversarial.outcomes import Outcome, Tally, shown
from datalayer.testing.contracts.base import Contract
from datalayer.testing.registry import write_registry

#: (label, pattern name, pattern spec, what must happen) of one hostile registry entry.
IdentifierCase = tuple[str, Any, dict[str, Any], Outcome]


def registry_file(folder: Path, store: dict[str, Any], patterns: dict[Any, Any]) -> Path:
    """A registry of one store ``main`` in profile ``test``, written even when names hold
    what YAML cannot emit (then as JSON, which YAML reads)."""
    try:
        return write_registry(folder, {"test": {"main": store}}, patterns)
    except yaml.YAMLError:
        file = folder / "datalayer.yaml"
        body = {"version": 1, "profiles": {"test": {"main": store}}, "patterns": patterns}
        file.write_text(json.dumps(body, default=str))
        return file


class AdversarialContract(Contract):
    """A category's adversarial suite. Subclasses give the category's identifier cases and
    probe; ``store_objects`` knows the built-in store types and is overridden for others."""

    category: ClassVar[str]

    @pytest.fixture
    def marker(self) -> str:
        """Carried by every injection payload and hostile name of a test."""
        return f"adv{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def tally(
        self,
        request: pytest.FixtureRequest,
        record_property: Callable[[str, object], None],
        datalayer_store: dict[str, Any],
    ) -> Tally:
        surface = request.node.originalname.removeprefix("test_")
        return Tally(self.category, str(datalayer_store["type"]), surface, record_property)

    def store_objects(self, dl: DataLayer) -> set[str]:
        """Names of everything on the store ``main``: tables, collections, topics or keys."""
        store: Any = dl.store("main")
        kind = store.config.type
        if kind in ("sqlite", "postgres"):
            import sqlalchemy as sa

            return set(sa.inspect(store.engine).get_table_names())
        if kind in ("embedded-documents", "embedded-kv", "embedded-log"):
            with store.db.read() as conn:
                tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
                names = {name for (name,) in conn.execute(tables)}
                if kind == "embedded-kv":
                    names |= {key for (key,) in conn.execute("SELECT key FROM kv")}
                if kind == "embedded-log":
                    names |= {topic for (topic,) in conn.execute("SELECT name FROM topics")}
            return names
        if kind == "mongodb":
            return set(store.db.list_collection_names())
        if kind == "redis":
            return {k.decode(errors="replace") for k in store.client.scan_iter(count=1000)}
        if kind == "kafka":
            return set(store.admin.list_topics(timeout=10).topics)
        raise NotImplementedError(f"override store_objects for store type {kind!r}")

    def check_nothing_foreign(
        self, tally: Tally, dl: DataLayer, marker: str, own: Callable[[str], bool]
    ) -> None:
        """Nothing carrying ``marker`` is on the store but what ``own`` says the patterns
        occupy: no injection created a table, collection, topic or key."""
        found = {name for name in self.store_objects(dl) if marker in name and not own(name)}
        if found:
            tally.violation(f"objects outside the patterns appeared: {sorted(found)[:10]}")

    # -- hostile identifiers -----------------------------------------------------------------

    def identifier_cases(self, marker: str) -> list[IdentifierCase]:
        """The category's hostile registry entries."""
        raise NotImplementedError

    def identifier_probe(self, dl: DataLayer, name: str, spec: dict[str, Any]) -> None:
        """A write and a read through an accepted pattern; raises when it does not hold."""
        raise NotImplementedError

    def identifier_target(self, name: str, spec: dict[str, Any]) -> str:
        """The name an accepted pattern occupies on the store."""
        raise NotImplementedError

    def owns(self, name: str, targets: set[str]) -> bool:
        """Whether a store object belongs to one of the accepted patterns' ``targets``."""
        return any(name.startswith(target) for target in targets)

    def pattern_names(
        self, marker: str, spec: Callable[[str], dict[str, Any]]
    ) -> list[IdentifierCase]:
        """Hostile pattern names, the same for every category (``spec`` makes a valid entry)."""
        names: list[tuple[str, Any, Outcome]] = [
            ("name-proto", "__proto__", "refused"),
            ("name-space", "a b", "refused"),
            ("name-semicolon", "a;DROP", "refused"),
            ("name-accent", "caf\u00e9", "refused"),
            ("name-dotted", "a.b", "refused"),
            ("name-colon", "a:b", "refused"),
            ("name-digit-first", "1a", "refused"),
            ("name-64", "a" * 64, "refused"),
            ("name-empty", "", "refused"),
            ("name-surrogate", "a\ud800", "refused"),
            ("name-newline", "a\n", "refused"),
            ("name-int", 12, "refused"),
            ("name-plain", f"n{marker}", "round trip"),
        ]
        return [
            (label, name, spec(f"p{i}{marker}"), out) for i, (label, name, out) in enumerate(names)
        ]

    def test_identifiers(
        self, tally: Tally, marker: str, datalayer_store: dict[str, Any], tmp_path: Path
    ) -> None:
        """Hostile table, collection, topic and prefix names, key fields, indexes, settings
        and pattern names: refused at load with ``ConfigError`` (so nothing is created), or
        used exactly as written for a write and a read."""
        targets: set[str] = set()
        for n, (label, name, spec, outcome) in enumerate(self.identifier_cases(marker)):
            folder = tmp_path / f"identifier-{n}"
            folder.mkdir()
            file = registry_file(
                folder,
                datalayer_store,
                {name: {"store": "main", "category": self.category, **spec}},
            )
            if self.try_registry(
                tally, f"{label} {shown(name)} {shown(spec)}", file, name, spec, outcome
            ):
                targets.add(self.identifier_target(name, spec))
        with datalayer.open(registry_file(tmp_path, datalayer_store, {}), profile="test") as dl:
            self.check_nothing_foreign(tally, dl, marker, lambda found: self.owns(found, targets))
        tally.finish()

    def try_registry(
        self,
        tally: Tally,
        label: str,
        file: Path,
        name: Any,
        spec: dict[str, Any],
        outcome: Outcome,
    ) -> bool:
        def act() -> None:
            with datalayer.open(file, profile="test") as dl:
                dl.apply()
                self.identifier_probe(dl, name, spec)

        return tally.attempt(label, act, outcome=outcome)

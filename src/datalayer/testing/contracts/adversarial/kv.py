"""The key-value adversarial suite: hostile values, keys, TTLs and prefixes."""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from datalayer import DataLayer
from datalayer.categories.kv import KVNamespace
from datalayer.testing.contracts.adversarial.base import AdversarialContract, IdentifierCase
from datalayer.testing.contracts.adversarial.corpus import hostile_text, hostile_values
from datalayer.testing.contracts.adversarial.outcomes import (
    Outcome,
    Tally,
    assert_same,
    same,
    shown,
)
from datalayer.testing.contracts.adversarial.reference import Refuse, json_form, utf8_ok
from datalayer.testing.contracts.base import OpenLayer
from datalayer.testing.contracts.schemas import Window

PATTERNS: dict[str, Any] = {
    "target": {},
    "other": {},
    "typed": {"schema": "datalayer.testing.contracts.schemas:Window"},
}
SENTINEL = {"sentinel": True, "n": 1}
#: The longest TTL a key may get: 100 years.
LONGEST = 100 * 366 * 86400


class KeyValueAdversarial(AdversarialContract):
    """Every value is its JSON, read back under its own key only; keys are non-empty text of
    valid Unicode, each its own (normalisation pairs stay apart); a TTL is a positive duration
    of at most 100 years. Anything else is refused with nothing written."""

    category = "key-value"

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        dl = open_layer(PATTERNS)
        dl.kv("other").set("sentinel", SENTINEL)
        return dl

    def kv_keys(self, dl: DataLayer, pattern: str) -> set[str]:
        """The live full keys under a pattern's prefix, read from the store itself (override
        for another store type)."""
        prefix = dl.kv(pattern).pattern.key_prefix
        store: Any = dl.store("main")
        kind = store.config.type
        if kind == "embedded-kv":
            with store.db.read() as conn:
                live = "SELECT key FROM kv WHERE expires_at IS NULL OR expires_at > ?"
                rows = conn.execute(live, (time.time(),)).fetchall()
            return {key for (key,) in rows if key.startswith(prefix)}
        if kind == "redis":
            match = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
            return {k.decode() for k in store.client.scan_iter(match=match, count=1000)}
        raise NotImplementedError(f"override kv_keys for store type {kind!r}")

    def finish(self, tally: Tally, dl: DataLayer, marker: str) -> None:
        other = dl.kv("other")
        keys = self.kv_keys(dl, "other")
        if not same(other.get("sentinel"), SENTINEL) or keys != {other.full_key("sentinel")}:
            tally.violation(f"another pattern's keys changed: {shown(keys)}")
        prefixes = [dl.kv(p).pattern.key_prefix for p in PATTERNS]
        self.check_nothing_foreign(
            tally, dl, marker, lambda name: any(name.startswith(p) for p in prefixes)
        )
        tally.finish()

    def try_set(
        self,
        tally: Tally,
        dl: DataLayer,
        pattern: str,
        label: str,
        key: Any,
        value: Any,
        expected: Any,
        outcome: Outcome,
        ttl: Any = None,
    ) -> bool:
        """``set``: accepted, the key alone is new under the prefix and reads back
        ``expected`` (through ``get`` and ``mget``); refused, no key changed."""
        namespace = dl.kv(pattern)
        before = self.kv_keys(dl, pattern)

        def check(_: Any) -> None:
            assert_same(namespace.get(key), expected)
            assert_same(namespace.mget([key, f"{key}-missing"]), [expected, None])
            after = self.kv_keys(dl, pattern)
            assert after == before | {namespace.full_key(key)}, f"new keys {after - before}"

        def unchanged() -> None:
            assert self.kv_keys(dl, pattern) == before, "keys changed"

        return tally.attempt(
            label,
            lambda: namespace.set(key, value, ttl=ttl),
            check=check,
            unchanged=unchanged,
            outcome=outcome,
        )

    def test_values(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Every hostile value under a plain key, and in each field of a schema."""
        corpus = [*hostile_text(marker), *hostile_values()]
        for i, (label, value) in enumerate(corpus):
            outcome: Outcome = "round trip"
            try:
                expected = json_form(value)
            except Refuse:
                expected, outcome = None, "refused"
            self.try_set(tally, dl, "target", f"value {label}", f"v{i}", value, expected, outcome)
            for field in ("incident_id", "hits"):
                payload = {"incident_id": "i", "hits": 1, field: value}
                outcome = "round trip"
                try:
                    expected = json_form(Window.model_validate(payload).model_dump(mode="json"))
                except (ValidationError, Refuse):
                    expected, outcome = None, "refused"
                key = f"t{i}-{field}"
                self.try_set(
                    tally, dl, "typed", f"{field} {label}", key, payload, expected, outcome
                )
        self.finish(tally, dl, marker)

    def test_keys(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile keys through ``set``, ``get``, ``mget``, ``delete`` and ``incr``."""
        target = dl.kv("target")
        kept: dict[str, int] = {}
        texts = hostile_text(marker)
        for i, (label, key) in enumerate(texts):
            outcome: Outcome = "round trip" if key and utf8_ok(key) else "refused"
            if self.try_set(tally, dl, "target", f"key {label}", key, i, i, outcome):
                kept[key] = i
        others: list[tuple[str, Any]] = [
            ("int", 5),
            ("bytes", b"k"),
            ("none", None),
            ("bool", True),
            ("tuple", ("a",)),
            ("list", ["a"]),
            ("float", 1.5),
        ]
        for label, key in others:
            self.try_set(tally, dl, "target", f"key {label}", key, 1, None, "refused")
            self.try_refused(tally, f"get {label}", target.get, key)
            self.try_refused(tally, f"delete {label}", target.delete, key)
            self.try_refused(tally, f"incr {label}", target.incr, key)
        for label, keys in [
            ("text", "abc"),
            ("bytes", b"ab"),
            ("none", None),
            ("int", 3),
            ("none-inside", ["a", None]),
            ("dict", {"a": 1}),
        ]:
            self.try_refused(tally, f"mget {label}", target.mget, keys)
        for key, value in kept.items():  # every key still holds its own value
            if not same(target.get(key), value):
                tally.violation(f"key {shown(key)} reads {shown(target.get(key))}, not {value}")
        for label, key in texts:
            self.try_incr(tally, target, label, key)
            if key in kept:
                self.try_delete(tally, target, label, key)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_refused(tally: Tally, label: str, call: Any, *args: Any) -> None:
        tally.attempt(label, lambda: call(*args), outcome="refused")

    @staticmethod
    def try_incr(tally: Tally, target: KVNamespace, label: str, key: str) -> None:
        counter = f"c-{key}"

        def check(total: Any) -> None:
            assert total == 1 and same(target.get(counter), 1)

        outcome: Outcome = "round trip" if utf8_ok(key) else "refused"
        tally.attempt(f"incr {label}", lambda: target.incr(counter), check=check, outcome=outcome)

    @staticmethod
    def try_delete(tally: Tally, target: KVNamespace, label: str, key: str) -> None:
        def check(gone: Any) -> None:
            assert gone is True and target.get(key) is None

        tally.attempt(
            f"delete {label}", lambda: target.delete(key), check=check, outcome="round trip"
        )

    def test_ttls(self, dl: DataLayer, tally: Tally, marker: str) -> None:
        """Hostile TTLs on ``set`` and ``incr``, and hostile amounts to ``incr``."""
        target = dl.kv("target")
        ttls: list[tuple[Any, Outcome]] = [
            (-1, "refused"),
            (0, "refused"),
            (-0.0, "refused"),
            (10**30, "refused"),
            (2**63, "refused"),
            (True, "refused"),
            (False, "refused"),
            (math.nan, "refused"),
            (math.inf, "refused"),
            (-math.inf, "refused"),
            ("1e9", "refused"),
            ("5m; FLUSHALL", "refused"),
            (b"5", "refused"),
            ("", "refused"),
            ("-5s", "refused"),
            (timedelta(seconds=-1), "refused"),
            (timedelta(0), "refused"),
            (timedelta(days=365 * 200), "refused"),
            ([5], "refused"),
            ({"s": 5}, "refused"),
            ("99999999999d", "refused"),
            ("5 sec", "refused"),
            ("\ud800", "refused"),
            (object(), "refused"),
            ("5\x00", "refused"),
            ("5s\n1h", "refused"),
            (3600, "round trip"),
            (36.5, "round trip"),
            ("5 s", "round trip"),
            ("  2h  ", "round trip"),
            ("1h", "round trip"),
            (timedelta(hours=2), "round trip"),
            ("100w", "round trip"),
            (Decimal("5"), "either"),
            ("\u0665s", "either"),
        ]
        for i, (ttl, outcome) in enumerate(ttls):
            key = f"ttl{i}"
            if self.try_set(tally, dl, "target", f"set ttl={shown(ttl)}", key, i, i, outcome, ttl):
                remaining = target.ttl(key)
                if remaining is None or not 0 < remaining <= LONGEST:
                    tally.violation(f"ttl={shown(ttl)} left {remaining} seconds")
            self.try_incr_ttl(tally, target, f"ttl{i}-counter", ttl, outcome)
        for by in (2**63, -(2**63) - 1, 1.5, True, "1", None, math.nan, b"1"):
            self.try_incr_by(tally, target, by)
        self.finish(tally, dl, marker)

    @staticmethod
    def try_incr_ttl(
        tally: Tally, target: KVNamespace, key: str, ttl: Any, outcome: Outcome
    ) -> None:
        def check(total: Any) -> None:
            assert total == 1 and same(target.get(key), 1)
            remaining = target.ttl(key)
            assert remaining is not None and 0 < remaining <= LONGEST, f"ttl {remaining}"

        def unchanged() -> None:
            assert target.get(key) is None, "written"

        tally.attempt(
            f"incr ttl={shown(ttl)}",
            lambda: target.incr(key, ttl=ttl),
            check=check,
            unchanged=unchanged,
            outcome=outcome,
        )

    @staticmethod
    def try_incr_by(tally: Tally, target: KVNamespace, by: Any) -> None:
        def unchanged() -> None:
            assert target.get("by") is None, "written"

        tally.attempt(
            f"incr by={shown(by)}",
            lambda: target.incr("by", by=by),
            unchanged=unchanged,
            outcome="refused",
        )

    # -- identifiers -------------------------------------------------------------------------

    def identifier_cases(self, marker: str) -> list[IdentifierCase]:
        prefixes: list[tuple[str, Any, Outcome]] = [
            ("prefix-glob", f"{marker}*", "refused"),
            ("prefix-space", f"{marker} x", "refused"),
            ("prefix-newline", f"{marker}\n", "refused"),
            ("prefix-crlf", f"{marker}\r\nFLUSHALL", "refused"),
            ("prefix-accent", f"{marker}\u00e9", "refused"),
            ("prefix-surrogate", f"{marker}\ud800", "refused"),
            ("prefix-nul", f"{marker}\x00", "refused"),
            ("prefix-slash", f"../{marker}", "refused"),
            ("prefix-101", marker + "p" * 101, "refused"),
            ("prefix-empty", "", "refused"),
            ("prefix-int", 12345, "refused"),
            ("prefix-list", [marker], "refused"),
            ("prefix-colons", f"{marker}:a:b", "round trip"),
            ("prefix-dots", f"{marker}.x-y_z", "round trip"),
        ]
        cases: list[IdentifierCase] = [
            (label, f"k{i}{marker}", {"prefix": prefix}, out)
            for i, (label, prefix, out) in enumerate(prefixes)
        ]
        settings: list[tuple[str, dict[str, Any]]] = [
            ("ttl-huge", {"ttl": "1e300"}),
            ("ttl-negative", {"ttl": "-5s"}),
            ("ttl-nan", {"ttl": "nan"}),
            ("ttl-int-huge", {"ttl": 10**30}),
            ("ttl-injection", {"ttl": "5m; DEL *"}),
            ("require-ttl-text", {"require_ttl": "maybe"}),
        ]
        cases += [
            (label, f"s{i}{marker}", setting, "refused")
            for i, (label, setting) in enumerate(settings)
        ]
        return cases + self.pattern_names(marker, lambda prefix: {"prefix": prefix})

    def identifier_probe(self, dl: DataLayer, name: str, spec: dict[str, Any]) -> None:
        namespace = dl.kv(name)
        namespace.set("k", {"v": name})
        assert namespace.get("k") == {"v": name}
        assert namespace.full_key("k") == f"{spec.get('prefix') or name}:k"

    def identifier_target(self, name: str, spec: dict[str, Any]) -> str:
        return f"{spec.get('prefix') or name}:"

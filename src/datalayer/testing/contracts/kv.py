"""The key-value contract, subclassed to run against a key-value store type."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from datalayer import DataLayer, DataLayerError, PayloadValidationError, QueryError
from datalayer.testing.contracts.base import Contract, OpenLayer

PATTERNS = {
    "windows": {"ttl": "1h", "schema": "datalayer.testing.contracts.schemas:Window"},
    "strict": {"require_ttl": True},
    "cache": {},
    "other": {},
    "amounts": {"schema": "datalayer.testing.contracts.schemas:Amount"},
}


class KeyValueContract(Contract):
    """The key-value contract: values with TTLs, each pattern in its own key space."""

    category = "key-value"

    @pytest.fixture
    def dl(self, open_layer: OpenLayer) -> DataLayer:
        return open_layer(PATTERNS)

    def test_set_get_overwrite_delete(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        cache.set("a", {"n": 1, "tags": ["x"]})
        assert cache.get("a") == {"n": 1, "tags": ["x"]}
        cache.set("a", "plain string")
        assert cache.get("a") == "plain string"
        assert cache.get("missing") is None
        assert cache.delete("a") is True
        assert cache.delete("a") is False
        assert cache.get("a") is None

    def test_mget_keeps_the_order_asked(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        cache.set("k1", 1)
        cache.set("k3", 3)
        assert cache.mget(["k3", "nope", "k1", "k3"]) == [3, None, 1, 3]
        assert cache.mget([]) == []

    def test_values_expire_after_their_ttl(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        cache.set("short", "v", ttl="400ms")
        cache.set("forever", "v")
        remaining = cache.ttl("short")
        assert remaining is not None and 0 < remaining <= 0.4
        assert cache.ttl("forever") is None
        time.sleep(0.6)
        assert cache.get("short") is None
        assert cache.delete("short") is False
        with pytest.raises(KeyError):
            cache.ttl("short")
        assert cache.get("forever") == "v"

    def test_pattern_ttl_is_the_default(self, dl: DataLayer) -> None:
        windows = dl.kv("windows")
        windows.set("w", {"incident_id": "i1", "hits": 2})
        remaining = windows.ttl("w")
        assert remaining is not None and 3500 < remaining <= 3600
        windows.set("w", {"incident_id": "i1", "hits": 3}, ttl=30)
        remaining = windows.ttl("w")
        assert remaining is not None and remaining <= 30

    def test_required_ttl_missing_is_refused_and_writes_nothing(self, dl: DataLayer) -> None:
        strict = dl.kv("strict")
        with pytest.raises(PayloadValidationError, match="ttl"):
            strict.set("k", 1)
        assert strict.get("k") is None
        strict.set("k", 1, ttl="5s")
        assert strict.get("k") == 1

    def test_invalid_value_names_the_field_and_writes_nothing(self, dl: DataLayer) -> None:
        windows = dl.kv("windows")
        with pytest.raises(PayloadValidationError, match="hits"):
            windows.set("w", {"incident_id": "i1", "hits": -1})
        assert windows.get("w") is None
        with pytest.raises(PayloadValidationError):
            dl.kv("cache").set("k", object())
        with pytest.raises(QueryError):
            dl.kv("cache").set("", 1)
        with pytest.raises(QueryError):
            dl.kv("cache").set("k", 1, ttl="forever")

    def test_patterns_never_see_each_other_s_keys(self, dl: DataLayer) -> None:
        dl.kv("cache").set("shared", "from cache")
        dl.kv("other").set("shared", "from other")
        assert dl.kv("cache").get("shared") == "from cache"
        assert dl.kv("other").get("shared") == "from other"
        dl.kv("cache").delete("shared")
        assert dl.kv("other").get("shared") == "from other"

    def test_values_json_cannot_hold_are_refused(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        for bad in (
            float("nan"),
            float("inf"),
            {"x": [float("-inf")]},
            object(),
            {1j: 1},
            Decimal("0.1"),  # JSON has no decimals: a schema says how to write one
        ):
            with pytest.raises(PayloadValidationError) as caught:
                cache.set("bad", bad)
            assert caught.value.store is None  # refused before the store was asked
        assert cache.get("bad") is None

    def test_integers_past_64_bits_are_kept_exactly(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        value = {"n": 10**30, "m": -(2**70), "list": [2**63, 2**64 + 1]}
        cache.set("big", value)
        assert cache.get("big") == value

    def test_a_schema_s_decimals_keep_every_digit(self, dl: DataLayer) -> None:
        from datalayer.testing.contracts.schemas import Amount

        amounts = dl.kv("amounts")
        exact = Decimal("12345678901234567890.123456789")
        rate = Decimal("-0." + "0" * 18 + "7")
        amounts.set("a", {"amount_id": "a", "value": exact, "price": "1.5", "rate": rate})
        stored = amounts.get("a")
        assert stored["value"] == "12345678901234567890.123456789"  # exact text, as JSON has
        assert Amount.model_validate(stored) == Amount(
            amount_id="a", value=exact, price=Decimal("1.5"), rate=rate
        )
        with pytest.raises(PayloadValidationError, match="price: "):
            amounts.set("b", {"amount_id": "b", "value": 1, "price": Decimal("0.001")})
        assert amounts.get("b") is None

    def test_a_value_another_program_wrote_is_a_clear_error(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        cache.backend.set(cache.full_key("foreign"), b"\xff\x00 not json", None)
        with pytest.raises(DataLayerError, match="not JSON"):
            cache.get("foreign")

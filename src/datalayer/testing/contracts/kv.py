"""The key-value contract, subclassed to run against a key-value store type."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from datalayer import DataLayer, DataLayerError, PayloadValidationError, QueryError
from datalayer.testing.contracts.base import Contract, OpenLayer
from datalayer.testing.contracts.concurrency import run_together

PATTERNS = {
    "windows": {"ttl": "1h", "schema": "datalayer.testing.contracts.schemas:Window"},
    "strict": {"require_ttl": True},
    "cache": {},
    "other": {},
    "amounts": {"schema": "datalayer.testing.contracts.schemas:Amount"},
}


def add_one_by_incr(dl: DataLayer, pattern: str, key: str, times: int) -> None:
    cache = dl.kv(pattern)
    for _ in range(times):
        cache.incr(key)


class KeyValueContract(Contract):
    """The key-value contract: values with TTLs, each pattern in its own key space."""

    category = "key-value"
    #: Increments of one counter by each of 8 threads and 4 processes.
    increments = 200

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

    def test_the_backend_scans_adds_and_deletes_if_for_rollouts(self, dl: DataLayer) -> None:
        """What a rollout's backfill and verify use: a resumable scan of a pattern's live
        keys, a set only where missing, a compare-and-delete."""
        cache, other = dl.kv("cache"), dl.kv("other")
        for i in range(25):
            cache.set(f"k{i:02d}", i)
        cache.set("gone", 1, ttl="300ms")
        other.set("k00", "another pattern's")
        time.sleep(0.5)
        backend, prefix = cache.backend, cache.pattern.key_prefix
        seen: list[str] = []
        keys, cursor = backend.scan(prefix, "", 7)
        seen += keys
        while cursor:
            keys, cursor = backend.scan(prefix, cursor, 7)
            seen += keys
        assert set(seen) == {f"{prefix}k{i:02d}" for i in range(25)}
        assert backend.add(f"{prefix}k00", b"9", None) is False and cache.get("k00") == 0
        assert backend.add(f"{prefix}new", b"5", 60) is True and cache.get("new") == 5
        assert backend.add(f"{prefix}gone", b"7", None) is True  # expired counts as missing
        assert cache.get("gone") == 7 and cache.ttl("gone") is None
        assert backend.delete_if(f"{prefix}new", b"6") is False and cache.get("new") == 5
        assert backend.delete_if(f"{prefix}new", b"5") is True and cache.get("new") is None

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
        # Python's json reads these as floats; they are not JSON, and no write lets them in.
        for n, text in enumerate((b"NaN", b"[1, Infinity]", b'{"x": -Infinity}')):
            cache.backend.set(cache.full_key(f"constant{n}"), text, None)
            with pytest.raises(DataLayerError, match=f"key 'constant{n}' is not JSON"):
                cache.get(f"constant{n}")

    def test_incr_adds_to_integers_and_returns_the_sum(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        assert cache.incr("c") == 1  # a missing key starts at 0
        assert cache.incr("c", by=5) == 6
        assert cache.incr("c", by=-10) == -4
        assert cache.get("c") == -4 and cache.ttl("c") is None
        cache.set("n", 41)
        assert cache.incr("n") == 42 and cache.get("n") == 42
        assert dl.kv("other").get("c") is None

    def test_incr_gives_a_new_key_its_ttl_and_keeps_an_existing_one_s(self, dl: DataLayer) -> None:
        cache, strict = dl.kv("cache"), dl.kv("strict")
        assert cache.incr("short", ttl="400ms") == 1
        assert cache.incr("short", ttl="1h") == 2  # still the first expiry
        remaining = cache.ttl("short")
        assert remaining is not None and remaining <= 0.4
        cache.set("forever", 1)
        assert cache.incr("forever", ttl="1h") == 2 and cache.ttl("forever") is None
        with pytest.raises(PayloadValidationError, match="ttl"):
            strict.incr("k")
        assert strict.get("k") is None
        assert strict.incr("k", ttl="5s") == 1
        time.sleep(0.6)
        assert cache.incr("short") == 1  # expired: counts from 0 again, with no expiry now
        assert cache.ttl("short") is None

    def test_incr_refuses_what_it_cannot_add_and_changes_nothing(self, dl: DataLayer) -> None:
        cache = dl.kv("cache")
        values = {"text": "7", "float": 1.5, "bool": True, "list": [1], "max": 2**63 - 1}
        for key, value in values.items():
            cache.set(key, value)
        for key in ("text", "float", "bool", "list"):
            with pytest.raises(QueryError, match="not an integer"):
                cache.incr(key)
        with pytest.raises(QueryError):
            cache.incr("max")  # past 64 bits
        for by in (1.5, True, "1", 2**63):
            with pytest.raises(QueryError):
                cache.incr("new", by=by)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="schema"):
            dl.kv("windows").incr("w")
        assert {key: cache.get(key) for key in values} == values
        assert cache.get("new") is None

    def test_concurrent_increments_all_count(self, dl: DataLayer) -> None:
        """8 threads and 4 processes increment one key, which none of them created."""
        run_together(dl, add_one_by_incr, "cache", "counter", self.increments)
        assert dl.kv("cache").get("counter") == 12 * self.increments

    def test_text_with_a_lone_surrogate_is_refused(self, dl: DataLayer) -> None:
        """A lone surrogate has no UTF-8 form: refused in keys and values (the drivers raised
        UnicodeEncodeError), with nothing written."""
        cache, windows = dl.kv("cache"), dl.kv("windows")
        for call in (
            lambda: cache.set("\ud800", 1),
            lambda: cache.get("a\udfff"),
            lambda: cache.mget(["ok", "\udc80"]),
            lambda: cache.delete("\ud800"),
            lambda: cache.incr("\ud800"),
        ):
            with pytest.raises(QueryError, match="surrogate"):
                call()
        for call in (
            lambda: cache.set("k", "\ud800"),
            lambda: cache.set("k", {"nested": ["\udfff"]}),
            lambda: windows.set("w", {"incident_id": "\ud800", "hits": 1}),
        ):
            with pytest.raises(PayloadValidationError) as caught:
                call()
            assert caught.value.store is None
        assert cache.get("k") is None and windows.get("w") is None

    def test_values_nested_past_the_json_encoder_are_refused(self, dl: DataLayer) -> None:
        """Python's JSON encoder gives up near 1,000 levels (RecursionError): refused, nothing
        written; 500 levels are kept."""
        cache = dl.kv("cache")
        deep: object = "leaf"
        for _ in range(500):
            deep = {"a": deep}
        cache.set("deep", deep)
        assert cache.get("deep") == deep
        for _ in range(4500):
            deep = [deep]
        with pytest.raises(PayloadValidationError):
            cache.set("deeper", deep)
        assert cache.get("deeper") is None

    def test_mget_takes_a_list_of_keys(self, dl: DataLayer) -> None:
        """Text would be read as one key per character and a dict as its keys; None or a
        number raised TypeError."""
        cache = dl.kv("cache")
        cache.set("a", 1)
        for keys in ("abc", b"ab", {"a": 1}, None, 3):
            with pytest.raises(QueryError, match="list of keys"):
                cache.mget(keys)  # type: ignore[arg-type]
        assert cache.mget(("a", "b")) == [1, None] and cache.mget(iter(["a"])) == [1]

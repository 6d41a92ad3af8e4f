"""The resilience policy on its own: which calls are retried, how long it waits, how the breaker
moves, and what the registry accepts. Stores' own bounds are tested against real servers in
tests/integration/test_bounded_waits.py and test_toxiproxy_faults.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datalayer
from datalayer import CircuitOpen, ConfigError, QueryError, StoreTimeout, StoreUnavailable
from datalayer.resilience import (
    Attempt,
    Guard,
    PatternResilience,
    ResilienceConfig,
    current_attempt,
)
from datalayer.testing.registry import write_registry


def guard(**settings: Any) -> Guard:
    return Guard("store 't'", "t", ResilienceConfig.model_validate(settings))


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or StoreUnavailable("store 't' is unavailable: reset by peer")
        self.calls: list[float] = []

    def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error
        return "ok"


def run(g: Guard, call: Flaky, *, retry_safe: bool = True) -> str:
    return g.run(call, (), {}, policy=g.config, retry_safe=retry_safe)


def test_an_idempotent_call_is_retried_with_growing_jittered_backoff() -> None:
    g = guard(retries=3, backoff="50ms", max_backoff="80ms", breaker={"failures": 0})
    call = Flaky(3)
    assert run(g, call) == "ok"
    gaps = [b - a for a, b in zip(call.calls, call.calls[1:], strict=False)]
    assert len(gaps) == 3 and all(gap < 0.05 + 0.08 + 0.08 + 0.2 for gap in gaps)
    assert sum(gaps) <= 0.05 + 0.08 + 0.08 + 0.1, "each wait is at most the capped backoff"
    assert (g.stats().calls, g.stats().retries, g.stats().failures) == (1, 3, 3)


def test_retries_run_out_and_the_last_error_is_raised() -> None:
    g = guard(retries=2, backoff="1ms", breaker={"failures": 0})
    call = Flaky(5)
    with pytest.raises(StoreUnavailable, match="reset by peer"):
        run(g, call)
    assert len(call.calls) == 3


def test_a_non_idempotent_call_is_never_retried() -> None:
    g = guard(retries=5, backoff="1ms")
    call = Flaky(1)
    with pytest.raises(StoreUnavailable):
        run(g, call, retry_safe=False)
    assert len(call.calls) == 1 and g.stats().retries == 0


def test_errors_the_store_answered_with_are_neither_retried_nor_failures() -> None:
    g = guard(retries=5, breaker={"failures": 1})
    call = Flaky(1, QueryError("bad filter"))
    with pytest.raises(QueryError):
        run(g, call)
    assert len(call.calls) == 1 and g.stats().state == "closed"


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    g = guard(retries=0, breaker={"failures": 3, "cooldown": "200ms"})
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            run(g, Flaky(1))
    assert run(g, Flaky(0)) == "ok", "a success resets the count"
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            run(g, Flaky(1))
    assert g.stats().state == "open"
    untouched = Flaky(0)
    with pytest.raises(CircuitOpen, match="circuit open after 3 failed calls"):
        run(g, untouched)
    assert untouched.calls == [] and g.stats().rejected == 1
    time.sleep(0.25)
    assert g.stats().state == "half-open"
    with pytest.raises(StoreUnavailable):
        run(g, Flaky(1))  # the probe fails: open again at once
    with pytest.raises(CircuitOpen):
        run(g, Flaky(0))
    time.sleep(0.25)
    assert run(g, Flaky(0)) == "ok"
    assert g.stats().state == "closed"


def test_only_one_probe_goes_through_a_half_open_breaker() -> None:
    g = guard(retries=0, breaker={"failures": 1, "cooldown": "50ms"})
    with pytest.raises(StoreUnavailable):
        run(g, Flaky(1))
    time.sleep(0.06)
    entered = threading.Event()
    release = threading.Event()

    def slow_probe() -> str:
        entered.set()
        release.wait(5)
        return "ok"

    probe = threading.Thread(
        target=lambda: g.run(slow_probe, (), {}, policy=g.config, retry_safe=False)
    )
    probe.start()
    assert entered.wait(5)
    with pytest.raises(CircuitOpen):
        run(g, Flaky(0))
    release.set()
    probe.join(5)
    assert run(g, Flaky(0)) == "ok"


def test_a_call_past_its_timeout_is_a_store_timeout_and_its_cuts_run() -> None:
    g = guard(timeout="100ms", retries=0)
    cut = threading.Event()

    def hangs() -> None:
        attempt = current_attempt()
        assert attempt is not None
        attempt.on_expiry(1, cut.set)
        if not cut.wait(5):
            raise AssertionError("the watchdog never cut")
        raise StoreUnavailable("store 't' is unavailable: connection closed")

    started = time.monotonic()
    with pytest.raises(StoreTimeout, match=r"did not answer within 0\.1s"):
        g.run(hangs, (), {}, policy=g.config, retry_safe=True)
    assert time.monotonic() - started < 1
    assert g.stats().timeouts == 1


def test_a_finished_attempt_is_never_cut() -> None:
    cut = threading.Event()
    attempt = Attempt(0.05)
    attempt.on_expiry(1, cut.set)
    attempt.finish()
    assert not cut.wait(0.15)


def test_a_pattern_overrides_its_stores_retries() -> None:
    g = guard(retries=4, backoff="1s")
    policy = g.policy(PatternResilience(retries=0))
    assert (policy.retries, policy.backoff.total_seconds()) == (0, 1.0)


@pytest.mark.parametrize(
    ("block", "where"),
    [
        ({"timeout": "2h"}, "resilience.timeout"),
        ({"timeout": -1}, "resilience.timeout"),
        ({"retries": 11}, "resilience.retries"),
        ({"retries": True}, "resilience.retries"),
        ({"timeout": 0.001}, "resilience.timeout"),
        ({"breaker": {"failures": "5"}}, "resilience.breaker.failures"),
        ({"breaker": {"failures": -1}}, "resilience.breaker.failures"),
        ({"breaker": {"cooldown": "2d"}}, "resilience.breaker.cooldown"),
        ({"retry": 1}, "resilience.retry"),
    ],
)
def test_a_bad_resilience_block_names_its_key(
    tmp_path: Path, block: dict[str, Any], where: str
) -> None:
    store = {"type": "embedded-kv", "path": "kv.db", "resilience": block}
    file = write_registry(
        tmp_path, {"p": {"main": store}}, {"it": {"store": "main", "category": "key-value"}}
    )
    with pytest.raises(ConfigError) as caught:
        datalayer.open(file, "p")
    assert f"profiles.p.main.{where}" in str(caught.value)


def test_a_pattern_block_takes_retries_only(tmp_path: Path) -> None:
    store = {"type": "embedded-kv", "path": "kv.db"}
    pattern = {"store": "main", "category": "key-value", "resilience": {"timeout": "1s"}}
    file = write_registry(tmp_path, {"p": {"main": store}}, {"it": pattern})
    with pytest.raises(ConfigError, match=r"patterns\.it\.resilience\.timeout"):
        datalayer.open(file, "p")


def test_the_embedded_profile_reports_closed_circuits_and_counts_calls(tmp_path: Path) -> None:
    store = {"type": "embedded-kv", "path": "kv.db"}
    file = write_registry(
        tmp_path, {"p": {"main": store}}, {"it": {"store": "main", "category": "key-value"}}
    )
    with datalayer.open(file, "p") as dl:
        dl.apply()
        kv = dl.kv("it")
        kv.set("a", 1)
        assert kv.get("a") == 1
        (stats,) = dl.resilience()
        assert (stats.store, stats.state, stats.calls, stats.failures) == ("main", "closed", 2, 0)
        assert [h.circuit for h in dl.doctor()] == ["closed"]

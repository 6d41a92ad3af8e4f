"""Moving a pattern to another store by stages, with the old store as the safety net.

A pattern's ``rollout: {to, stage, percent, compare_sample}`` puts its backend behind a router
that writes and reads each store as the stage says:

- ``shadow``: writes go to the current store, then to the new one; a failure there is counted
  and logged, never raised. Reads come from the current store; a ``compare_sample`` share of
  them also reads the new store and counts (and logs) every value that differs.
- ``split``: writes go to both (a failure on either is raised). A key reads from the new store
  when its stable bucket (SHA-256 of the key, 0 to 9,999) is below ``percent`` x 100, so a key
  always reads from the same side, in every process.
- ``cutover``: reads from the new store, writes to both: the old store stays a rollback target.
- ``done``: only the new store.

Writes go to the old store first and then to the new one at every stage where both are
written, so going back one stage finds the old store holding every write. Two writers of the
same key at once may leave the stores with different winners (each store keeps its own last
write); writers of distinct keys never do.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from datalayer.categories.kv import KVBackend
from datalayer.patterns import RolloutConfig, Stage

log = logging.getLogger(__name__)

#: Buckets of the split: a percent is a hundred of them.
BUCKETS = 10_000

T = TypeVar("T")


def bucket(key: str) -> int:
    """The key's stable bucket, 0 to 9,999: the same in every process and on every machine."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass
class RolloutStats:
    """What a rollout met in this process: shadow reads compared and how many differed, and
    writes the new store failed."""

    pattern: str
    compared: int = 0
    mismatches: int = 0
    compare_failures: int = 0
    write_failures: int = 0


class Rollout:
    """The stage, split and counters of one pattern's rollout (shared by its routers)."""

    def __init__(self, pattern: str, config: RolloutConfig) -> None:
        self.pattern = pattern
        self.config = config
        self.stats = RolloutStats(pattern)
        self._lock = threading.Lock()
        self._threshold = round(config.percent * BUCKETS / 100)

    @property
    def stage(self) -> Stage:
        return self.config.stage

    def reads_new(self, key: str) -> bool:
        """Whether ``key`` reads from the new store at this stage."""
        stage = self.config.stage
        if stage == "split":
            return bucket(key) < self._threshold
        return stage in ("cutover", "done")

    def writes_old(self) -> bool:
        return self.config.stage != "done"

    def writes_new(self) -> bool:
        return True

    def compares(self) -> bool:
        sample = self.config.compare_sample
        return self.config.stage == "shadow" and sample > 0 and random.random() < sample

    def shadow_write(self, what: str, write: Callable[[], T]) -> T | None:
        """Run a write on the new store: raised at every stage but ``shadow``, where a failure
        is counted and logged instead."""
        if self.config.stage != "shadow":
            return write()
        try:
            return write()
        except Exception as exc:
            with self._lock:
                self.stats.write_failures += 1
            log.warning(
                "pattern '%s': %s on the new store '%s' failed (shadow stage, not raised): %s",
                self.pattern,
                what,
                self.config.to,
                exc,
            )
            return None

    def failed_comparison(self, exc: Exception) -> None:
        with self._lock:
            self.stats.compare_failures += 1
        log.warning(
            "pattern '%s': a shadow read of the new store '%s' failed: %s",
            self.pattern,
            self.config.to,
            exc,
        )

    def compared(self, keys: list[str], old: list[Any], new: list[Any]) -> None:
        """Count a shadow comparison; log each key whose values differ."""
        differing = [k for k, a, b in zip(keys, old, new, strict=True) if a != b]
        with self._lock:
            self.stats.compared += len(keys)
            self.stats.mismatches += len(differing)
        for key in differing[:10]:
            log.warning(
                "pattern '%s': key %r differs between the current store and '%s' (shadow read)",
                self.pattern,
                key,
                self.config.to,
            )


class RolloutKV(KVBackend):
    """A key-value pattern's backend during a rollout: ``old`` and ``new`` routed by stage."""

    def __init__(self, rollout: Rollout, old: KVBackend, new: KVBackend) -> None:
        self.rollout = rollout
        self.old = old
        self.new = new

    def set(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        if self.rollout.writes_old():
            self.old.set(key, value, ttl_seconds)
        self.rollout.shadow_write("set", lambda: self.new.set(key, value, ttl_seconds))

    def delete(self, key: str) -> bool:
        deleted = self.old.delete(key) if self.rollout.writes_old() else False
        on_new = self.rollout.shadow_write("delete", lambda: self.new.delete(key))
        return bool(on_new) if self.rollout.reads_new(key) else deleted

    def incr(self, key: str, by: int, ttl_seconds: float | None) -> int:
        """Added on the store reads come from; the other store gets the resulting value (a
        store that missed a write would otherwise count from a different start)."""
        if not self.rollout.writes_old():
            return self.new.incr(key, by, ttl_seconds)
        value = self.old.incr(key, by, ttl_seconds)
        left = self.old.ttl(key)
        self.rollout.shadow_write("incr", lambda: self.new.set(key, str(value).encode(), left))
        return value

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        to_new = [self.rollout.reads_new(k) for k in keys]
        if not any(to_new):
            values = self.old.get_many(keys)
            if self.rollout.compares() and (found := self._new_values(keys)) is not None:
                self.rollout.compared(keys, values, found)
            return values
        if all(to_new):
            return self.new.get_many(keys)
        olds = self.old.get_many([k for k, n in zip(keys, to_new, strict=True) if not n])
        news = self.new.get_many([k for k, n in zip(keys, to_new, strict=True) if n])
        old_values, new_values = iter(olds), iter(news)
        return [next(new_values) if n else next(old_values) for n in to_new]

    def ttl(self, key: str) -> float | None:
        return (self.new if self.rollout.reads_new(key) else self.old).ttl(key)

    def _new_values(self, keys: list[str]) -> list[bytes | None] | None:
        """The new store's values for a shadow comparison; None (counted, never raised) when
        it fails."""
        try:
            return self.new.get_many(keys)
        except Exception as exc:
            self.rollout.failed_comparison(exc)
            return None


_ROUTERS: dict[str, Callable[[Rollout, Any, Any], Any]] = {"key-value": RolloutKV}


def router(category: str) -> Callable[[Rollout, Any, Any], Any]:
    """The router of a category's backends."""
    return _ROUTERS[category]

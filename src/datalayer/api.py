"""The facade: one object that hands out every pattern through its category's contract."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from datalayer.categories import (
    CATEGORIES,
    DocumentCollection,
    FeaturePattern,
    FeatureView,
    KVNamespace,
    Migratable,
    Stream,
    TransactionalPattern,
    TransactionalTable,
)
from datalayer.categories.feature_log import FeatureLog, FeatureLogConfig
from datalayer.config import Registry, load
from datalayer.errors import DataLayerError, NotApplied, NotFound, StoreUnavailable, did_you_mean
from datalayer.migrations import Migrations
from datalayer.patterns import PatternConfig, RolloutConfig
from datalayer.resilience import GuardStats, guard_backend
from datalayer.stores.base import Store


@dataclass(frozen=True)
class StoreHealth:
    """One line of ``doctor``: can the store be reached, and how fast."""

    store: str
    type: str
    target: str
    status: str  # ok | unavailable | error
    latency_ms: float | None
    detail: str = ""
    circuit: str = "closed"  # the store's circuit breaker in this process: closed|open|half-open


@dataclass(frozen=True)
class ApplyResult:
    store: str
    type: str
    actions: list[str]
    skipped: str = ""


class DataLayer:
    """Opened from a registry for one profile; stores connect on first use."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._stores: dict[str, Store[Any, Any]] = {}
        self._handles: dict[str, Any] = {}
        self._rollouts: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def profile(self) -> str:
        return self.registry.profile

    @property
    def patterns(self) -> dict[str, PatternConfig]:
        return self.registry.patterns

    def pattern(self, name: str) -> PatternConfig:
        try:
            return self.registry.patterns[name]
        except KeyError:
            names = sorted(self.registry.patterns)
            raise NotFound(
                f"no pattern '{name}' in {self.registry.file}{did_you_mean(name, names)}; "
                f"patterns: {', '.join(names)}"
            ) from None

    def store(self, name: str) -> Store[Any, Any]:
        with self._lock:
            if name not in self._stores:
                if name not in self.registry.stores:
                    raise NotFound(
                        f"no store '{name}' in profile '{self.profile}'; "
                        f"stores: {', '.join(self.registry.stores)}"
                    )
                config = self.registry.stores[name]
                store = config.connect(name, self.registry.base_dir)
                store.attach([p for p in self.registry.patterns.values() if p.store == name])
                self._stores[name] = store
            return self._stores[name]

    def _handle(self, name: str, category: str) -> Any:
        with self._lock:
            if name in self._handles:
                return self._handles[name]
            pattern = self.pattern(name)
            if pattern.category != category:
                raise DataLayerError(
                    f"pattern '{name}' is {pattern.category}, not {category}: "
                    f"use dl.{CATEGORIES[pattern.category].accessor}('{name}')"
                )
            store = self.store(pattern.store)
            handle = store.handle(pattern)
            guard_backend(handle.backend, store.guard, store.guard.policy(pattern.resilience))
            rollout = pattern.store_rollout()
            if rollout is not None:
                handle.backend = self._rolled_out(pattern, rollout, handle.backend)
            if isinstance(handle, FeatureView) and handle.pattern.log is not None:
                handle.log = self._feature_log(name, handle.pattern.log)
            if isinstance(handle, FeatureView) and handle.pattern.rollout is not None:
                handle.next = store.handle(_next_variant(handle.pattern))
                policy = store.guard.policy(pattern.resilience)
                guard_backend(handle.next.backend, store.guard, policy)
                try:  # a feature service the repo lacks: said now, not at the first read
                    handle.next.references()
                except NotFound as exc:
                    raise DataLayerError(
                        f"pattern '{name}': rollout.to_feature_service: {exc.message}",
                        store=pattern.store,
                    ) from None
            self._handles[name] = handle
            return handle

    def _moving_to(self, store_name: str) -> list[PatternConfig]:
        """The patterns rolling out to ``store_name``, as they will be there (for ``apply``,
        which creates their collections and indexes on it too)."""
        return [
            _moved(p, rollout)
            for p in self.registry.patterns.values()
            if (rollout := p.store_rollout()) is not None and rollout.to == store_name
        ]

    def _rolled_out(self, pattern: PatternConfig, config: RolloutConfig, old: Any) -> Any:
        """The pattern's backend during its rollout: the current store's and the new
        store's, routed by the stage."""
        from datalayer.rollout import Rollout, router

        moved = _moved(pattern, config)
        store = self.store(config.to)
        new = store.handle(moved).backend
        guard_backend(new, store.guard, store.guard.policy(pattern.resilience))
        rollout = self._rollouts.setdefault(pattern.name, Rollout(pattern.name, config))
        return router(pattern.category)(rollout, old, new)

    def rollouts(self) -> list[Any]:
        """The rollouts of the patterns opened so far, with what they met in this process
        (sampled shadow reads still queued are compared first)."""
        with self._lock:
            rollouts = list(self._rollouts.values())
        for rollout in rollouts:
            rollout.flush()
        return rollouts

    def _feature_log(self, name: str, config: FeatureLogConfig) -> FeatureLog:
        """The log of a feature pattern: records published to its ``log.to`` stream."""

        def publish(record: dict[str, Any]) -> None:
            self.stream(config.to).publish(record)

        return FeatureLog(name, config, publish)

    def transactional(self, name: str) -> TransactionalTable:
        handle: TransactionalTable = self._handle(name, "transactional")
        return handle

    def stream(self, name: str) -> Stream:
        handle: Stream = self._handle(name, "streaming")
        return handle

    def documents(self, name: str) -> DocumentCollection:
        handle: DocumentCollection = self._handle(name, "document")
        return handle

    def kv(self, name: str) -> KVNamespace:
        handle: KVNamespace = self._handle(name, "key-value")
        return handle

    def features(self, name: str) -> FeatureView:
        handle: FeatureView = self._handle(name, "feature")
        return handle

    @contextmanager
    def transaction(self, *patterns: str) -> Iterator[None]:
        """One database transaction across the named transactional patterns (one store)."""
        names = patterns or tuple(
            n for n, p in self.registry.patterns.items() if p.category == "transactional"
        )
        stores = {self.pattern(n).store for n in names}
        tables = [self.transactional(n) for n in names]
        if len(stores) != 1:
            raise DataLayerError(
                f"a transaction spans exactly one store; patterns {list(names)} are on {sorted(stores)}"
            )
        with tables[0].transaction():
            yield

    def migrations(self, store: str | None = None) -> Migrations:
        """Alembic on a transactional store (the profile's only one when ``store`` is None)."""
        sql_stores = sorted(
            {p.store for p in self.registry.patterns.values() if p.category == "transactional"}
        )
        if store is None:
            if len(sql_stores) != 1:
                raise DataLayerError(
                    f"name the store: transactional stores in profile '{self.profile}': "
                    f"{', '.join(sql_stores) or 'none'}"
                )
            store = sql_stores[0]
        connected = self.store(store)
        if not isinstance(connected, Migratable):
            raise DataLayerError(f"store '{store}' is not a SQL store; migrations need one")
        patterns = [
            p
            for p in [*self.registry.patterns.values(), *self._moving_to(store)]
            if p.store == store and isinstance(p, TransactionalPattern)
        ]
        migrations: Migrations = connected.migrations(patterns)
        return migrations

    def apply(self, on_store: Callable[[str], None] | None = None) -> list[ApplyResult]:
        """Create tables, topics, collections and indexes for every pattern (idempotent)."""
        results = []
        for store_name, config in self.registry.stores.items():
            patterns = [p for p in self.registry.patterns.values() if p.store == store_name]
            patterns += self._moving_to(store_name)
            if on_store:
                on_store(store_name)
            if not patterns:
                results.append(ApplyResult(store_name, config.type, [], "no patterns"))
                continue
            store = self.store(store_name)
            with store.guard.attempt(config.resilience.apply_timeout.total_seconds()):
                actions = store.apply(patterns)
            results.append(ApplyResult(store_name, config.type, actions))
        return results

    def doctor(
        self, timeout: float = 5.0, stores: Sequence[str] | None = None
    ) -> list[StoreHealth]:
        """Reach every store of the profile (or those named); each check gives up after
        ``timeout`` seconds."""
        return [self._check(name, timeout) for name in stores or self.registry.stores]

    def _check(self, name: str, timeout: float) -> StoreHealth:
        """Reach one store: its imports first, here and untimed (a timed thread given up on
        in the middle of an import can abort the interpreter at exit); then one round trip,
        in a thread given up after ``timeout``."""
        config = self.registry.stores[name]
        outcome: dict[str, Any] = {}

        def probe() -> None:
            started = time.perf_counter()
            try:
                store.ping()
            except NotApplied as exc:  # reached: what is missing is for 'apply' to create
                outcome["note"] = exc.message
            except BaseException as exc:
                outcome["error"] = exc
                return
            outcome["latency"] = (time.perf_counter() - started) * 1000

        health = partial(StoreHealth, name, config.type, config.target())
        try:
            store = self.store(name)
            store.preload()
        except DataLayerError as exc:
            return health("error", None, str(exc))
        thread = threading.Thread(target=probe, name=f"doctor-{name}", daemon=True)
        thread.start()
        thread.join(timeout)
        circuit = store.guard.breaker.state
        if thread.is_alive():
            detail = f"no answer within {timeout:g}s"
            with contextlib.suppress(Exception):  # only a better reason: never a new failure
                if problem := store.problem():
                    detail += f"; the driver last said: {problem}"
            return health("unavailable", None, detail, circuit=circuit)
        error = outcome.get("error")
        if isinstance(error, StoreUnavailable):
            return health("unavailable", None, error.message, circuit=circuit)
        if error is not None:
            return health("error", None, str(error), circuit=circuit)
        return health("ok", outcome["latency"], outcome.get("note", ""), circuit=circuit)

    def resilience(self) -> list[GuardStats]:
        """Each connected store's circuit state and counters: calls, attempts the store did not
        answer, retries, timeouts and calls refused while the circuit was open."""
        with self._lock:
            return [store.guard.stats() for store in self._stores.values()]

    def close(self) -> None:
        self.rollouts()  # queued shadow comparisons, while the stores are open
        with self._lock:
            logs = [
                handle.log
                for handle in self._handles.values()
                if isinstance(handle, FeatureView) and handle.log is not None
            ]
        for feature_log in logs:  # logged reads published before the stores go; not under
            feature_log.close()  # the lock, which a log's first publish takes to open its stream
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            self._handles.clear()
            rollouts, self._rollouts = list(self._rollouts.values()), {}
        if rollouts:
            from datalayer.rollout import Checkpoints

            checkpoints = Checkpoints(self.rollout_folder)
            for rollout in rollouts:
                checkpoints.add_counts(rollout.stats)

    @property
    def rollout_folder(self) -> Path:
        """Where rollouts keep their backfill checkpoints and counts."""
        return self.registry.base_dir / ".datalayer" / "rollout"

    def __enter__(self) -> DataLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _moved(pattern: PatternConfig, config: RolloutConfig) -> PatternConfig:
    """``pattern`` as it is on the store it rolls out to."""
    moved = pattern.model_copy(update={"store": config.to, "rollout": None})
    moved.bind(pattern.name, pattern.schema_cls)
    return moved


def _next_variant(pattern: FeaturePattern) -> FeaturePattern:
    """A feature pattern as its rollout's feature service serves it (under the same name:
    its reads are the pattern's)."""
    assert pattern.rollout is not None
    update = {"feature_service": pattern.rollout.to_feature_service, "features": []}
    variant = pattern.model_copy(update=update | {"rollout": None, "log": None})
    variant.bind(pattern.name, pattern.schema_cls)
    return variant


def open(path: str | os.PathLike[str] | None = None, profile: str | None = None) -> DataLayer:
    """Load the registry (``$DATALAYER_CONFIG`` or ./datalayer.yaml) for a profile."""
    return DataLayer(load(path, profile))

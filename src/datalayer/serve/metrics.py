"""The server's Prometheus metrics.

With several workers, ``datalayer serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before any worker imports this module, so a scrape of any worker sums them all.
Label values are only ever route templates, known pattern names, store names and status
codes: never anything a caller wrote, so a hostile path cannot grow the series.
"""

from __future__ import annotations

import os
from dataclasses import fields

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from datalayer.categories.feature_log import FeatureLogStats
from datalayer.resilience import GuardStats
from datalayer.rollout import RolloutStats

_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ENTITIES = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
_CIRCUIT = {"closed": 0.0, "half-open": 0.5, "open": 1.0}
#: Decided once, as prometheus_client decides where values live: importing Feast later sets
#: PROMETHEUS_MULTIPROC_DIR for its own metrics, which must not switch ours.
_MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter(
    "datalayer_serve_requests", "HTTP requests answered", ["route", "pattern", "status"]
)
LATENCY = Histogram(
    "datalayer_serve_request_seconds",
    "Time from the request's arrival to its answer",
    ["route", "pattern", "status"],
    buckets=_SECONDS,
)
ENTITIES = Histogram(
    "datalayer_serve_entities_per_request",
    "Entity rows per feature read",
    ["pattern"],
    buckets=_ENTITIES,
)
STORE_ERRORS = Counter(
    "datalayer_serve_store_errors", "Store calls that failed, by store and kind", ["store", "kind"]
)
CIRCUIT = Gauge(
    "datalayer_store_circuit_state",
    "A store's circuit breaker: 0 closed, 0.5 half-open, 1 open",
    ["store"],
    multiprocess_mode="max",
)


FEATURE_LOG = Gauge(
    "datalayer_feature_log_records",
    "Records of a pattern's feature log since the worker started: published, dropped (the "
    "queue was full) and failed (the publish failed)",
    ["pattern", "outcome"],
    multiprocess_mode="livesum",
)


ROLLOUT = Gauge(
    "datalayer_rollout_events",
    "What the rollouts of the registry's patterns met, summed over the processes that closed "
    "(.datalayer/rollout): reads compared in shadow, mismatches, failed comparisons and "
    "writes the new store failed",
    ["pattern", "kind"],
    multiprocess_mode="max",  # every worker reads the same files
)
#: What a rollout counts: every field of its stats but the pattern.
ROLLOUT_KINDS = tuple(f.name for f in fields(RolloutStats) if f.name != "pattern")


def track_rollouts(counts: dict[str, dict[str, int]]) -> None:
    for pattern, found in counts.items():
        for kind in ROLLOUT_KINDS:
            ROLLOUT.labels(pattern, kind).set(found.get(kind, 0))


def track_feature_log(stats: FeatureLogStats) -> None:
    for outcome in ("published", "dropped", "failed"):
        FEATURE_LOG.labels(stats.pattern, outcome).set(getattr(stats, outcome))


def track_circuits(stats: list[GuardStats]) -> None:
    for item in stats:
        CIRCUIT.labels(item.store).set(_CIRCUIT.get(item.state, 1.0))


def exposition() -> tuple[bytes, str]:
    """The text a scrape reads, summed over the workers when there are several."""
    if _MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST

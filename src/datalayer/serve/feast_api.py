"""Feast's feature-server JSON (``/get-online-features``, ``/push``), so that a Feast HTTP
client, its remote online store among them, can point at datalayer unchanged.

A request names a feature service or a list of ``view:feature`` references, not a pattern:
it is served by the feature pattern of that feature service, or the first pattern that holds
every reference. Answers are Feast's shape: ``metadata.feature_names`` and, per column,
``values``, ``statuses`` and ``event_timestamps``. One difference, on purpose: a value older
than its view's TTL is ``null`` with status ``OUTSIDE_MAX_AGE`` (Feast's own server returns
it as ``PRESENT``), as ``online()`` and training sets have it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from datalayer.categories.feature import FeatureView, PushTo, epoch_nanos
from datalayer.config.loader import Registry
from datalayer.serve.errors import HttpError

_EPOCH = "1970-01-01T00:00:00Z"
_ONLINE_KEYS = {
    "entities",
    "feature_service",
    "features",
    "full_feature_names",
    "include_feature_view_version_metadata",
}
_PUSH_KEYS = {"push_source_name", "df", "allow_registry_cache", "to", "transform_on_write"}
_PUSH_TO: tuple[PushTo, ...] = ("online", "offline", "online_and_offline")


@dataclass(frozen=True)
class OnlineRequest:
    """A ``/get-online-features`` body, resolved to a pattern and checked."""

    pattern: str
    features: list[str] | None  # None: every feature of the pattern's feature service
    keys: list[str]  # the entity columns, in the request's order
    rows: list[dict[str, Any]]
    full_names: bool


def online_request(
    body: Mapping[str, Any], registry: Registry, views: Mapping[str, FeatureView]
) -> OnlineRequest:
    _no_unknown_keys(body, _ONLINE_KEYS)
    columns = body.get("entities")
    if not isinstance(columns, dict) or not columns:
        raise HttpError(400, "must be an object of entity columns: {key: [values]}", "entities")
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if -1 in lengths or len(lengths) != 1 or 0 in lengths:
        raise HttpError(
            400, "each entity column must be a non-empty list, all of one length", "entities"
        )
    count = lengths.pop()
    rows = [{key: values[i] for key, values in columns.items()} for i in range(count)]
    service, features = body.get("feature_service"), body.get("features") or []
    if service is not None and not isinstance(service, str):
        raise HttpError(400, "must be the name of a feature service", "feature_service")
    if not isinstance(body.get("full_feature_names", False), bool):
        raise HttpError(400, "must be true or false", "full_feature_names")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise HttpError(400, "must be a list of 'view:feature' strings", "features")
    if bool(service) == bool(features):
        raise HttpError(400, "give either feature_service or features", "feature_service")
    pattern, wanted = _pattern_of(service, features, registry, views)
    return OnlineRequest(pattern, wanted, list(columns), rows, bool(body.get("full_feature_names")))


def _pattern_of(
    service: Any, features: list[str], registry: Registry, views: Mapping[str, FeatureView]
) -> tuple[str, list[str] | None]:
    if service:
        for name in views:
            if getattr(registry.patterns[name], "feature_service", None) == service:
                return name, None
        served = [
            str(s) for n in views if (s := getattr(registry.patterns[n], "feature_service", None))
        ]
        raise HttpError(
            404,
            f"no feature pattern serves feature service {str(service)[:100]!r}; "
            f"feature services served: {', '.join(served) or 'none'}",
            "feature_service",
        )
    for name, view in views.items():  # a model rollout's pattern reads all or nothing
        if view.next is None and set(features) <= set(view.references()):
            return name, features
    raise HttpError(
        404,
        "no feature pattern holds every feature asked for; add a pattern with them to the registry",
        "features",
    )


def online_response(
    request: OnlineRequest,
    values: Mapping[str, list[Any]],
    stamps: Mapping[str, list[int]],
    ttls: Mapping[str, int],
    at: datetime,
) -> dict[str, Any]:
    """Feast's answer: the entity columns as sent, then each feature with its status and
    event time."""
    at_nanos = epoch_nanos(at)
    names: list[str] = []
    results: list[dict[str, Any]] = []
    count = len(request.rows)
    for key in request.keys:
        names.append(key)
        results.append(
            {
                "values": [row[key] for row in request.rows],
                "statuses": ["PRESENT"] * count,
                "event_timestamps": [_EPOCH] * count,
            }
        )
    for column, column_values in values.items():
        if "__" not in column:
            continue  # a join key: sent back above, as the request had it
        view, feature = column.split("__", 1)
        names.append(column if request.full_names else feature)
        times = stamps.get(view) or [0] * count
        ttl = ttls.get(view, 0)
        results.append(
            {
                "values": [_native(v) for v in column_values],
                "statuses": [
                    _status(v, t, ttl, at_nanos) for v, t in zip(column_values, times, strict=True)
                ],
                "event_timestamps": [_timestamp(t) for t in times],
            }
        )
    return {"metadata": {"feature_names": names}, "results": results}


def _status(value: Any, stamp: int, ttl: int, at: int) -> str:
    if value is not None:
        return "PRESENT"
    if not stamp:
        return "NOT_FOUND"
    if stamp > at or (ttl and stamp < at - ttl):
        return "OUTSIDE_MAX_AGE"
    return "NULL_VALUE"


def _native(value: Any) -> Any:
    """A value as Feast's server writes it: non-finite floats as protobuf JSON's strings,
    times as epoch seconds."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, list):
        return [_native(v) for v in value]
    return value


def _timestamp(stamp: int) -> str:
    """Nanoseconds as RFC 3339 with Feast's precision: none, 3, 6 or 9 digits."""
    if not stamp:
        return _EPOCH
    seconds, nanos = divmod(stamp, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


@dataclass(frozen=True)
class PushRequest:
    """A ``/push`` body, resolved to the pattern and view its push source feeds."""

    pattern: str
    view: str
    rows: list[dict[str, Any]]
    to: PushTo


def push_request(body: Mapping[str, Any], sources: Mapping[str, tuple[str, str]]) -> PushRequest:
    """``sources``: each push source's (pattern, view)."""
    _no_unknown_keys(body, _PUSH_KEYS)
    name = body.get("push_source_name")
    if not isinstance(name, str) or name not in sources:
        raise HttpError(
            404,
            f"no served pattern has push source {str(name)[:100]!r}; push sources: "
            f"{', '.join(sources) or 'none'}",
            "push_source_name",
        )
    to = body.get("to", "online")
    if to not in _PUSH_TO:
        raise HttpError(400, f"must be one of {', '.join(_PUSH_TO)}", "to")
    frame = body.get("df")
    if not isinstance(frame, dict) or not frame:
        raise HttpError(400, "must be an object of columns: {column: [values]}", "df")
    lengths = {len(v) if isinstance(v, list) else -1 for v in frame.values()}
    if -1 in lengths or len(lengths) != 1:
        raise HttpError(400, "each column must be a list, all of one length", "df")
    count = lengths.pop()
    rows = [{column: values[i] for column, values in frame.items()} for i in range(count)]
    pattern, view = sources[name]
    return PushRequest(pattern, view, rows, to)


def _no_unknown_keys(body: Mapping[str, Any], allowed: Sequence[str] | set[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise HttpError(
            400, f"unknown key(s) {unknown}; keys: {', '.join(sorted(allowed))}", unknown[0]
        )

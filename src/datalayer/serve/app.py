"""The feature server: a small ASGI application over the registry's feature patterns.

No web framework: a few routes, parsed by hand, so that a request costs little more than the
read it asks for. Reads run on the event loop (handing one to a thread cost more than a
one-entity read: measured in ``bench/bench_serve.py``); pushes, slow by nature, and ``/ready``
run on threads. Every failure is a JSON error naming the field; a store that does not answer
is a 503 with ``Retry-After``; nothing ever shows a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import decimal
import gc
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import orjson

import datalayer
from datalayer.api import DataLayer
from datalayer.categories.feature import FeatureView
from datalayer.errors import (
    DataLayerError,
    NotFound,
    PayloadValidationError,
    QueryError,
    StoreUnavailable,
)
from datalayer.serve import configure_access_log, feast_api, metrics, tracing
from datalayer.serve.auth import Auth
from datalayer.serve.errors import HttpError
from datalayer.serve.openapi import openapi

T = TypeVar("T")
log = logging.getLogger("datalayer.serve")
access_log = logging.getLogger("datalayer.serve.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_V1 = "/v1/features/"
_PREDICTIONS = "/v1/predictions/"
_BODY_KEYS = {"entities", "as_of", "features", "model", "version"}
_PREDICTION_KEYS = {"request_id", "prediction", "predictions", "model", "version"}
_ROUTES = {"/health", "/ready", "/metrics", "/openapi.json", "/get-online-features", "/push"}
_JSON = (b"content-type", b"application/json")
_FINER_THAN_MICROSECONDS = re.compile(r"[.,]\d{7,}")
#: Seconds a client should wait after a 503 before it tries again.
RETRY_AFTER = 1


@dataclass
class _Call:
    """What the access log and the metrics record about one request."""

    route: str
    request_id: str
    pattern: str = "-"
    entities: int = 0
    caller: str | None = None


class FeatureServer:
    """The ASGI application: ``await server(scope, receive, send)``."""

    def __init__(
        self, dl: DataLayer, secrets: dict[str, bytes], tracing: Any | None = None
    ) -> None:
        self.dl = dl
        self.tracing = tracing  # an OpenTelemetry TracerProvider, or None: no spans
        self.tracer = tracing.get_tracer("datalayer.serve") if tracing is not None else None
        self.config = dl.registry.serve
        self.auth = Auth(self.config.tokens, secrets)
        self.names = [n for n, p in dl.registry.patterns.items() if p.category == "feature"]
        self.views: dict[str, FeatureView] = {}
        self.types: dict[str, dict[str, type]] = {}
        self.push_sources: dict[str, tuple[str, str]] = {}
        self.stores = sorted({dl.registry.patterns[n].store for n in self.names})
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="datalayer-serve")

    def open(self) -> None:
        """Open every served pattern before the first request (Feast takes seconds to load)."""
        for name in self.names:
            view = self.dl.features(name)
            self.types[name] = view.input_types()
            self.views[name] = view
            for source, fed in view.push_sources().items():
                self.push_sources.setdefault(source, (name, fed))
            sample = {key: kind() for key, kind in self.types[name].items()}
            feature_log, view.log = view.log, None  # a warm-up read is not a read to log
            try:  # the first read plans and connects: done now, not in a caller's request
                view.online([sample])
            except Exception as exc:  # a sample key a transformation refuses, say
                log.info("pattern '%s': the warm-up read failed: %s", name, exc)
            finally:
                view.log = feature_log
        # What is loaded now (Feast, its registry, the plans) lives as long as the worker: kept
        # out of the collector's full passes, which would otherwise walk it, pausing a request.
        gc.freeze()

    def close(self) -> None:
        self.thread.shutdown(wait=True)
        self.dl.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still queued

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.open()  # on the loop's thread, where the reads will run
                except Exception as exc:
                    log.error("the feature server could not start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracer is None:
            await self._answer(scope, receive, send, None)
            return
        from opentelemetry.trace import SpanKind

        route = _route(scope["path"])
        name = f"{scope['method']} {route}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER) as span:
            await self._answer(scope, receive, send, span)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, span: Any) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        call = _Call(route=_route(scope["path"]), request_id=request_id)
        try:
            status, body, content_type = await self._route(scope, receive, headers, call)
            extra: tuple[tuple[bytes, bytes], ...] = ()
        except HttpError as exc:
            status, body, content_type, extra = exc.status, exc.body(), None, exc.headers
        except StoreUnavailable as exc:
            metrics.STORE_ERRORS.labels(exc.store or "-", "unavailable").inc()
            status, content_type = 503, None
            body = HttpError(503, f"{exc.message}; retry in {RETRY_AFTER}s").body()
            extra = ((b"retry-after", str(RETRY_AFTER).encode()),)
        except (QueryError, NotFound, PayloadValidationError) as exc:
            status, body, content_type, extra = 400, HttpError(400, exc.message).body(), None, ()
        except DataLayerError as exc:
            metrics.STORE_ERRORS.labels(exc.store or "-", "error").inc()
            status, body, content_type, extra = 500, HttpError(500, exc.message).body(), None, ()
        except Exception:
            log.exception("request %s failed", request_id)
            status, content_type, extra = 500, None, ()
            body = HttpError(500, f"internal error (request {request_id})").body()
        payload = body if isinstance(body, bytes) else _dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", (content_type or "application/json").encode()),
                    (b"x-request-id", request_id.encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - started
        if span is not None:
            _describe(span, scope["method"], call, status, request_id)
        labels = (call.route, call.pattern, str(status))
        metrics.REQUESTS.labels(*labels).inc()
        metrics.LATENCY.labels(*labels).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s",
                json.dumps(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": call.route,
                        "pattern": call.pattern,
                        "entities": call.entities,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "caller": call.caller,
                    }
                ),
            )

    async def _route(
        self, scope: Scope, receive: Receive, headers: Mapping[bytes, bytes], call: _Call
    ) -> tuple[int, Any, str | None]:
        method, path = scope["method"], scope["path"]
        if call.route in ("/v1/features/{pattern}", "/v1/predictions/{pattern}"):
            _allow(method, "POST")
            prefix = _V1 if call.route.startswith(_V1) else _PREDICTIONS
            name = path[len(prefix) :]
            call.caller = self.auth.caller(headers.get(b"authorization"))
            if name not in self.views:
                visible = [n for n in self.names if self.auth.sees(call.caller, n)]
                raise HttpError(
                    404,
                    f"no feature pattern {json.dumps(name)[:100]}; patterns served: "
                    f"{', '.join(visible) or 'none'}",
                    "pattern",
                )
            call.pattern = name
            self.auth.check(call.caller, name, "read")
            raw = await self._body(receive, headers)
            if prefix == _PREDICTIONS:
                return 202, self._prediction(name, raw), None
            return 200, await self._features(name, raw, call), None
        if call.route in ("/get-online-features", "/push"):
            _allow(method, "POST")
            call.caller = self.auth.caller(headers.get(b"authorization"))
            body = _object(await self._body(receive, headers))
            if call.route == "/push":
                return 200, await self._feast_push(body, call), None
            return 200, await self._feast_online(body, call), None
        if call.route == "/health":
            _allow(method, "GET")
            return 200, {"status": "ok"}, None
        if call.route == "/ready":
            _allow(method, "GET")
            return await self._ready()
        if call.route == "/metrics":
            _allow(method, "GET")
            metrics.track_circuits(self.dl.resilience())
            for view in self.views.values():
                if view.log is not None:
                    metrics.track_feature_log(view.log.stats)
            metrics.track_rollouts(self._rollout_counts())
            text, content_type = metrics.exposition()
            return 200, text, content_type
        if call.route == "/openapi.json":
            _allow(method, "GET")
            return 200, openapi(self.names, self.config.max_entities), None
        raise HttpError(
            404,
            "no such endpoint; endpoints: POST /v1/features/{pattern}, POST "
            "/v1/predictions/{pattern}, POST /get-online-features, POST /push, GET /health, GET /ready, GET /metrics, "
            "GET /openapi.json",
            "path",
        )

    async def _body(self, receive: Receive, headers: Mapping[bytes, bytes]) -> bytes:
        """The whole body, refused with 413 as soon as it passes ``max_body_bytes``."""
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"the body is {int(declared):,} bytes; at most {limit:,}", "body")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "the client went away before the body ended", "body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"the body passes {limit:,} bytes", "body")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _features(self, name: str, raw: bytes, call: _Call) -> dict[str, Any]:
        """``POST /v1/features/{pattern}``: checked, then read as ``online()`` reads."""
        body = _object(raw)
        unknown = sorted(set(body) - _BODY_KEYS)
        if unknown:
            raise HttpError(
                400, f"unknown key(s) {unknown}; keys: {', '.join(sorted(_BODY_KEYS))}", unknown[0]
            )
        view = self.views[name]
        features = _features_list(body.get("features"))
        try:
            types = self.types[name] if features is None else view.input_types(features)
        except (NotFound, QueryError) as exc:
            raise HttpError(400, exc.message, "features") from None
        rows = self._entities(body.get("entities"), types)
        at = _instant(body.get("as_of"))
        call.entities = len(rows)
        metrics.ENTITIES.labels(name).observe(len(rows))
        model, version = _text(body, "model"), _text(body, "version")
        read = partial(
            view.online,
            rows,
            as_of=at,
            features=features,
            request_id=call.request_id,
            model=model,
            version=version,
        )
        values = await self._store_call(name, "online", read)
        return {"features": values}

    def _rollout_counts(self) -> dict[str, dict[str, int]]:
        """Each rolled-out pattern's counts: those of closed processes (shared files) and
        those of this one."""
        from datalayer.rollout import Checkpoints

        checkpoints = Checkpoints(self.dl.rollout_folder)
        counts = {
            name: checkpoints.counts(name)
            for name, pattern in self.dl.registry.patterns.items()
            if pattern.store_rollout() is not None
        }
        for rollout in self.dl.rollouts():
            found = counts.setdefault(rollout.pattern, {})
            for kind in metrics.ROLLOUT_KINDS:
                found[kind] = found.get(kind, 0) + getattr(rollout.stats, kind)
        return counts

    def _prediction(self, name: str, raw: bytes) -> dict[str, Any]:
        """``POST /v1/predictions/{pattern}``: a model's prediction(s) from the read
        ``request_id``, queued on the pattern's log (never waits for the store)."""
        body = _object(raw)
        unknown = sorted(set(body) - _PREDICTION_KEYS)
        if unknown:
            keys = ", ".join(sorted(_PREDICTION_KEYS))
            raise HttpError(400, f"unknown key(s) {unknown}; keys: {keys}", unknown[0])
        request_id = _text(body, "request_id")
        if not request_id:
            raise HttpError(400, "'request_id' (the read's X-Request-ID) is required", "request_id")
        given = [key for key in ("prediction", "predictions") if key in body]
        if len(given) != 1:
            raise HttpError(
                400, "give 'prediction' (one value) or 'predictions' (one per entity)", "prediction"
            )
        value = body[given[0]]
        if given[0] == "predictions" and not isinstance(value, list):
            raise HttpError(400, "'predictions' must be a list, one per entity", "predictions")
        if given[0] == "prediction" and isinstance(value, list | dict):
            raise HttpError(
                400, "'prediction' is one value; a list goes in 'predictions'", given[0]
            )
        view = self.views[name]
        if view.log is None:
            raise HttpError(409, f"pattern '{name}' has no log to record predictions in", "pattern")
        try:
            view.log_prediction(
                request_id,
                value,
                model=_text(body, "model"),
                version=_text(body, "version"),
            )
        except QueryError as exc:
            raise HttpError(400, exc.message, given[0]) from None
        return {"logged": len(value) if isinstance(value, list) else 1}

    async def _feast_online(self, body: dict[str, Any], call: _Call) -> dict[str, Any]:
        """``POST /get-online-features``: Feast's request and answer (see ``feast_api``)."""
        request = feast_api.online_request(body, self.dl.registry, self.views)
        call.pattern = request.pattern
        self.auth.check(call.caller, request.pattern, "read")
        view = self.views[request.pattern]
        try:
            types = view.input_types(request.features)
            ttls = view.ttls(request.features)
        except (NotFound, QueryError) as exc:
            raise HttpError(400, exc.message, "features") from None
        rows = self._entities(request.rows, types)
        call.entities = len(rows)
        metrics.ENTITIES.labels(request.pattern).observe(len(rows))
        at = datetime.now(UTC)
        read = partial(
            view.online_stamped,
            rows,
            as_of=at,
            features=request.features,
            request_id=call.request_id,
        )
        values, stamps = await self._store_call(request.pattern, "online", read)
        return feast_api.online_response(request, values, stamps, ttls, at)

    async def _feast_push(self, body: dict[str, Any], call: _Call) -> dict[str, Any]:
        """``POST /push``: rows for the view a push source feeds, online and/or offline."""
        request = feast_api.push_request(body, self.push_sources)
        call.pattern = request.pattern
        self.auth.check(call.caller, request.pattern, "push")
        call.entities = len(request.rows)
        push = partial(
            self.views[request.pattern].push, request.rows, view=request.view, to=request.to
        )
        await self._store_call(request.pattern, "push", push)
        return {"pushed": len(request.rows), "view": request.view}

    async def _store_call(self, pattern: str, operation: str, call: Callable[[], T]) -> T:
        """``call`` in this request's context (its span the parent of the store call's): a read
        on the loop, anything else on the worker's thread."""
        store = self.dl.registry.patterns[pattern].store
        tracer = self.tracer

        def traced() -> T:
            if tracer is None:
                return call()
            from opentelemetry.trace import SpanKind

            attributes = {
                "datalayer.store": store,
                "datalayer.store.type": self.dl.registry.stores[store].type,
                "datalayer.pattern": pattern,
                "datalayer.operation": operation,
            }
            name = f"{store} {operation}"
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                return call()

        if operation == "online":
            return traced()  # on the loop: a hop to a thread costs more than the read itself
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.thread, context.run, traced)

    def _entities(self, value: Any, types: Mapping[str, type]) -> list[dict[str, Any]]:
        """Entity rows: a non-empty list of objects, each with every key typed as declared."""
        if not isinstance(value, list) or not value:
            raise HttpError(400, "must be a non-empty list of entity rows (objects)", "entities")
        if len(value) > self.config.max_entities:
            raise HttpError(
                413,
                f"{len(value):,} entity rows; at most {self.config.max_entities:,} per request",
                "entities",
            )
        for i, row in enumerate(value):
            if not isinstance(row, dict):
                raise HttpError(400, "must be an object of join keys", f"entities[{i}]")
            for key, kind in types.items():
                if key not in row or row[key] is None:
                    raise HttpError(
                        400, f"missing; every row needs {sorted(types)}", f"entities[{i}].{key}"
                    )
                if not _is(row[key], kind):
                    raise HttpError(
                        400,
                        f"must be {_KIND_NAMES.get(kind, kind.__name__)}, "
                        f"not {type(row[key]).__name__}",
                        f"entities[{i}].{key}",
                    )
        return value

    async def _ready(self) -> tuple[int, Any, str | None]:
        """200 when every store of the served patterns answers, else 503 naming each."""
        check = partial(self.dl.doctor, timeout=2.0, stores=self.stores)
        health = await asyncio.get_running_loop().run_in_executor(None, check)
        stores = {h.store: h.status for h in health}
        ready = all(h.status == "ok" for h in health)
        if not ready:
            raise HttpError(
                503,
                "not ready: "
                + "; ".join(f"{h.store} {h.status}" for h in health if h.status != "ok"),
                "stores",
                ((b"retry-after", str(RETRY_AFTER).encode()),),
            )
        return 200, {"ready": ready, "stores": stores}, None


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    if kind is bytes:
        return isinstance(value, str)
    return isinstance(value, kind)


def _describe(span: Any, method: str, call: _Call, status: int, request_id: str) -> None:
    """The request span's attributes (names and counts, never a token or a value)."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(
        {
            "http.request.method": method,
            "http.route": call.route,
            "http.response.status_code": status,
            "datalayer.pattern": call.pattern,
            "datalayer.entities": call.entities,
            "datalayer.request_id": request_id,
        }
    )
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def _route(path: str) -> str:
    """The route template of a path (a metric label never holds what a caller wrote)."""
    if path.startswith(_V1):
        return "/v1/features/{pattern}"
    if path.startswith(_PREDICTIONS):
        return "/v1/predictions/{pattern}"
    if path in _ROUTES:
        return path
    return "-"


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"use {allowed}", "method", ((b"allow", allowed.encode()),))


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"not JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise HttpError(400, "must be a JSON object", "body")
    return body


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 200):
        raise HttpError(400, "must be a string of at most 200 characters", key)
    return value


def _features_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HttpError(400, "must be a non-empty list of 'view:feature' strings", "features")
    return value


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpError(400, "must be an ISO 8601 time, e.g. 2026-01-05T09:00:00Z", "as_of")
    if _FINER_THAN_MICROSECONDS.search(value):
        raise HttpError(400, "is finer than a microsecond (the stores keep microseconds)", "as_of")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise HttpError(400, f"{json.dumps(value)[:60]} is not an ISO 8601 time", "as_of") from None
    if at.tzinfo is None:
        raise HttpError(400, "has no time zone; end it with Z or +00:00", "as_of")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise HttpError(400, f"{value} is out of range in UTC", "as_of") from None


def _request_id(given: bytes | None) -> str:
    """The caller's ``X-Request-ID`` when it is a short plain token, else a new one."""
    if given and len(given) <= 64 and all(chr(c).isalnum() or c in b"-_." for c in given):
        return given.decode()
    return uuid.uuid4().hex


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal | set | frozenset):
        return str(value) if isinstance(value, decimal.Decimal) else sorted(value)
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app() -> FeatureServer:
    """The application a uvicorn worker runs: the registry and profile come from
    ``DATALAYER_CONFIG`` and ``DATALAYER_PROFILE``, which ``datalayer serve`` sets."""
    configure_access_log()
    dl = datalayer.open(os.environ.get("DATALAYER_CONFIG"), os.environ.get("DATALAYER_PROFILE"))
    secrets = dl.registry.serve.secrets(str(dl.registry.file))
    return FeatureServer(dl, secrets, tracing.provider_from_environment())

"""Logs of what was served: a sample of online reads, published to a streaming pattern, and
the predictions a model made from them.

The read path never waits for the log and never fails because of it: a sampled read puts
one record on a bounded queue (full: the record is dropped and counted) and a background
thread publishes it; a publish that fails is counted and logged, never raised. A record holds
what a skew check needs to rebuild the same read offline: the request id, the pattern, the
instant read (``as_of``, or when it was read), the entity keys, every value returned with
its view's event time, and the model (name and version) that asked, when the caller says.
A prediction record (``"kind": "prediction"``) names the request id of the read it was made
from and holds one prediction per entity row of that read; it is never sampled out.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from datalayer.validators import Name

log = logging.getLogger(__name__)

_STOP = object()


class FeatureLogConfig(BaseModel):
    """A feature pattern's ``log`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: Name = Field(description="the streaming pattern the records are published to")
    sample: float = Field(default=1.0, ge=0.0, le=1.0)
    queue: int = Field(default=10_000, ge=1, le=1_000_000)


@dataclass
class FeatureLogStats:
    """Records of one pattern's log: published, dropped (queue full), failed (publish)."""

    pattern: str
    published: int = 0
    dropped: int = 0
    failed: int = 0


class FeatureLog:
    """One pattern's log: ``record`` on the read path, a thread that publishes."""

    def __init__(
        self, pattern: str, config: FeatureLogConfig, publish: Callable[[dict[str, Any]], None]
    ) -> None:
        self.pattern = pattern
        self.config = config
        self.stats = FeatureLogStats(pattern)
        self._publish = publish
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sampled(self) -> bool:
        return self.config.sample >= 1.0 or random.random() < self.config.sample

    def record(
        self,
        entities: Mapping[str, list[Any]],
        values: Mapping[str, list[Any]],
        stamps: Mapping[str, list[int]],
        at: datetime,
        *,
        request_id: str | None,
        model: str | None,
        version: str | None,
        variant: str | None = None,
        positions: list[int] | None = None,
    ) -> None:
        """Queue the record of one read; never blocks, never raises. A read split between a
        rollout's variants is recorded once per ``variant``, each row with its place in the
        read (``positions``)."""
        self._put(
            lambda: {
                "request_id": request_id or uuid.uuid4().hex,
                "pattern": self.pattern,
                "requested_at": at.isoformat(),
                "logged_at": datetime.now(UTC).isoformat(),
                "model": model,
                "version": version,
                **({"variant": variant, "rows": positions} if variant is not None else {}),
                "entities": {k: [_plain(v) for v in column] for k, column in entities.items()},
                "features": {
                    name: [_plain(v) for v in column]
                    for name, column in values.items()
                    if name not in entities
                },
                "event_times": {
                    view: [_instant(s) for s in view_stamps] for view, view_stamps in stamps.items()
                },
            }
        )

    def record_prediction(
        self,
        request_id: str,
        predictions: list[Any],
        *,
        model: str | None,
        version: str | None,
    ) -> None:
        """Queue the predictions made from the read ``request_id`` (one per entity row);
        never blocks, never raises."""
        self._put(
            lambda: {
                "kind": "prediction",
                "request_id": request_id,
                "pattern": self.pattern,
                "logged_at": datetime.now(UTC).isoformat(),
                "model": model,
                "version": version,
                "predictions": [_plain(p) for p in predictions],
            }
        )

    def _put(self, make: Callable[[], dict[str, Any]]) -> None:
        try:
            record = make()
            self._start()
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.stats.dropped += 1
        except Exception:  # the caller must not fail because of its log
            log.exception("pattern '%s': a feature log record could not be made", self.pattern)
            with self._lock:
                self.stats.failed += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is published (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return  # the thread is stuck on a store that does not answer: a daemon, left
        self._thread.join(timeout)
        self._thread = None

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name=f"feature-log-{self.pattern}", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is _STOP:
                    return
                self._publish(record)
                with self._lock:
                    self.stats.published += 1
            except Exception as exc:
                with self._lock:
                    self.stats.failed += 1
                log.warning("pattern '%s': a feature log record was lost: %s", self.pattern, exc)
            finally:
                self._queue.task_done()


def _plain(value: Any) -> Any:
    """A value a JSON payload can hold: bytes as base64, times as ISO text, NaN as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, list | dict):  # a numpy scalar
        return _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _instant(stamp: int) -> str | None:
    if not stamp:
        return None
    seconds, nanos = divmod(stamp, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanos // 1000).isoformat()


@dataclass
class Landed:
    """Rows landed: one per entity of each read, one per prediction."""

    reads: int = 0
    predictions: int = 0


def land(
    stream: Any,
    pattern: str,
    write: Callable[[list[dict[str, Any]]], None],
    *,
    predictions: Callable[[list[dict[str, Any]]], None] | None = None,
    batch: int = 1000,
    idle_timeout: float = 5.0,
    on_batch: Callable[[int], None] | None = None,
) -> Landed:
    """Hand the log records of ``pattern`` from ``stream`` to ``write`` (``ParquetFolder``,
    or a store's table) and its prediction records to ``predictions``, one call per batch of
    at most ``batch`` records (memory stays bounded by it): one row per entity of each read,
    one per prediction; returns how many of each were written. Stops once no record came for
    ``idle_timeout`` seconds. A batch is committed after both calls return, so a landing
    killed midway loses nothing: its batch comes again (``request_id`` and ``row`` identify a
    row; a table skips rows it has, a folder may hold them twice). Without ``predictions``,
    prediction records are skipped."""
    landed = Landed()

    def land_batch(records: Any) -> None:
        mine = [r for r in records.values if isinstance(r, dict) and r.get("pattern") == pattern]
        rows = [row for r in mine if r.get("kind") is None for row in _rows(r)]
        predicted = [row for r in mine if r.get("kind") == "prediction" for row in _predicted(r)]
        if rows:
            write(rows)
        if predicted and predictions is not None:
            predictions(predicted)
            landed.predictions += len(predicted)
        landed.reads += len(rows)
        if on_batch is not None:
            on_batch(len(records.values))

    stream.process_batch(
        land_batch,
        group=f"datalayer-land-logs.{pattern}",
        max_batch=batch,
        max_wait=1.0,
        idle_timeout=idle_timeout,  # from the group's committed offsets (a new group: the first)
    )
    return landed


def _rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per entity of a read's record: its ids, keys, values and each view's event
    time."""
    entities, features = record.get("entities") or {}, record.get("features") or {}
    times = record.get("event_times") or {}
    count = len(next(iter(entities.values()), []))
    head = {
        "request_id": record.get("request_id"),
        "requested_at": record.get("requested_at"),
        "logged_at": record.get("logged_at"),
        "model": record.get("model"),
        "version": record.get("version"),
        # Which features the read asked for: a row's other feature columns are not served.
        "features_read": ",".join(features),
        # The feature service that served it, when a rollout split the read (else None).
        "variant": record.get("variant"),
    }
    positions = record.get("rows")
    if not isinstance(positions, list) or len(positions) != count:
        positions = list(range(count))
    return [
        {
            **head,
            "row": positions[i],
            **{key: column[i] for key, column in entities.items()},
            **{name: column[i] for name, column in features.items()},
            **{f"{view}__event_timestamp": column[i] for view, column in times.items()},
        }
        for i in range(count)
    ]


def _predicted(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per prediction of a prediction record (model and version: '' when unnamed,
    so that they can be part of a key). A prediction is kept as JSON text: a model that
    logs integers, then floats or labels, keeps each exactly (a typed column would round or
    refuse a later batch, and a refused batch would come back forever)."""
    head = {
        "request_id": record.get("request_id"),
        "model": record.get("model") or "",
        "version": record.get("version") or "",
        "logged_at": record.get("logged_at"),
    }
    values = record.get("predictions")
    if not isinstance(values, list) or not isinstance(head["request_id"], str):
        return []  # not one of ours: nothing to join it on
    return [{**head, "row": i, "prediction": json.dumps(value)} for i, value in enumerate(values)]


def log_frame(rows: list[dict[str, Any]]) -> Any:
    """Landed rows as a DataFrame, the instants as UTC times."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in [c for c in ("requested_at", "logged_at") if c in frame.columns]:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    for column in [c for c in frame.columns if c.endswith("__event_timestamp")]:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


class LogSink(Protocol):
    """Where a pattern's landed log rows go (a call per batch), and how they are read back."""

    def __call__(self, rows: list[dict[str, Any]]) -> None: ...

    def chunks(self, since: datetime | None, until: datetime | None) -> Iterator[Any]:
        """The landed rows read in [since, until) (either may be None), as DataFrames of a
        bounded size."""
        ...

    def clear(self) -> None:
        """Forget every landed row."""
        ...


@dataclass(frozen=True)
class LogSinks:
    """Where one pattern's landed log goes: its reads, its predictions, named for people."""

    reads: LogSink
    predictions: LogSink
    where: str

    def clear(self) -> None:
        """Forget every landed read and prediction (a log whose features were rewritten can
        no longer be compared with them)."""
        self.reads.clear()
        self.predictions.clear()

    @classmethod
    def folder(cls, folder: Path, shown: str) -> LogSinks:
        """Parquet files in ``folder``, the predictions in its ``predictions`` folder."""
        return cls(
            ParquetFolder(folder),
            ParquetFolder(folder / "predictions", time_column="logged_at"),
            shown,
        )


class ParquetFolder:
    """Landed rows as parquet files in a folder, one per batch, each written aside and then
    renamed, so a reader never sees half a file."""

    def __init__(self, folder: Path, time_column: str = "requested_at") -> None:
        self.folder = folder
        self.time_column = time_column
        folder.mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return str(self.folder)

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        aside = self.folder / f".{name}.tmp"
        log_frame(rows).to_parquet(aside, index=False)
        aside.replace(self.folder / name)

    def clear(self) -> None:
        for path in self.folder.glob("part-*.parquet"):
            path.unlink(missing_ok=True)

    def chunks(self, since: datetime | None, until: datetime | None) -> Iterator[Any]:
        """One DataFrame per file. A batch landed twice (after an interruption) is read
        twice."""
        import pandas as pd

        for path in sorted(self.folder.glob("part-*.parquet")):
            frame = pd.read_parquet(path)
            if since is None and until is None:
                yield frame
                continue
            requested = pd.to_datetime(frame[self.time_column], utc=True)
            keep = pd.Series(True, index=frame.index)
            if since is not None:
                keep &= requested >= since
            if until is not None:
                keep &= requested < until
            yield frame[keep]

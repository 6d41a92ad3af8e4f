"""One feature pattern on a Feast store: its features resolved against the Feast registry, and
the strategy for each job (online read, training set, materialization), chosen once."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from datalayer.categories.feature import (
    FeatureBackend,
    FeaturePattern,
    Progress,
    PushTo,
    epoch_nanos,
)
from datalayer.errors import NotFound, PayloadValidationError, QueryError
from datalayer.stores.feast import compat
from datalayer.stores.feast.environment import quiet

if TYPE_CHECKING:
    from datalayer.categories.feature_log import LogSinks
    from datalayer.stores.feast.materialize import Materializer
    from datalayer.stores.feast.on_demand import OnDemandRead
    from datalayer.stores.feast.online import OnlineRead
    from datalayer.stores.feast.store import FeastStore
    from datalayer.stores.feast.training import TrainingSet


log = logging.getLogger(__name__)

#: The Python type of each Feast value type a join key or request field can have.
_PYTHON: dict[str, type] = {
    "INT32": int,
    "INT64": int,
    "FLOAT": float,
    "DOUBLE": float,
    "BOOL": bool,
    "STRING": str,
    "BYTES": bytes,
}


def _of_kind(value: Any, kind: type) -> bool:
    """Whether a pushed value fits a field of Python type ``kind``: null always does; a bool
    is not a number; an integer is a float."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, int | float)
    if kind is int and isinstance(value, float):
        return value.is_integer()  # an integer column with a null reads as floats in pandas
    return isinstance(value, kind)


#: The pandas dtype of each Feast type whose values alone would give another one.
_DTYPES = {"Int64": "Int64", "Int32": "Int32", "Float32": "float32"}


class FeastFeatures(FeatureBackend):
    """The feature backend of one pattern on a Feast store."""

    def __init__(self, pattern: FeaturePattern, store: FeastStore) -> None:
        self.pattern = pattern
        self.store = store
        self._views: dict[str, Any] | None = None
        self._references: list[str] | None = None
        self._join_keys: dict[tuple[str, ...], list[str]] = {}
        self._on_demand_views: dict[str, Any] | None = None
        self._on_demand: dict[tuple[str, ...], OnDemandRead | None] = {}

    @property
    def fs(self) -> Any:
        return self.store.feature_store

    @functools.cached_property
    def online_read(self) -> OnlineRead:
        """Straight from Feast's Redis hashes where the online store is Redis and the fast
        paths are on; else Feast's read."""
        from datalayer.stores.feast.online import (
            FeastOnlineRead,
            PackedOnlineRead,
            RedisOnlineRead,
        )

        client = self.store.fast_redis()
        if client is None:
            return FeastOnlineRead(self)
        packing = self.store.packing() if self.pattern.layout == "packed" else None
        if packing is not None and self.pattern.name in packing.by_pattern:
            return PackedOnlineRead(self, client, packing.by_pattern[self.pattern.name])
        return RedisOnlineRead(self, client)

    @functools.cached_property
    def training_set(self) -> TrainingSet:
        """By per-file indexes where every view reads one parquet file and the fast paths are
        on; else Feast's join."""
        from datalayer.stores.feast.training import FeastTrainingSet, ParquetTrainingSet
        from datalayer.stores.feast.training_parquet import not_parquet, parquet_sources

        references = self.stored_references(self.references())
        if self.store.fast_paths():
            if parquet_sources(self.views(), references, self.store.repo):
                return ParquetTrainingSet(self)
            log.info(
                "pattern '%s': training sets go through Feast's join: %s",
                self.pattern.name,
                not_parquet(self.views(), references),
            )
        return FeastTrainingSet(self)

    @functools.cached_property
    def materializer(self) -> Materializer:
        """Straight into Feast's Redis layout where the online store is Redis and the fast
        paths are on; else Feast's materialize."""
        from datalayer.stores.feast.materialize import FeastMaterializer, RedisMaterializer

        client = self.store.fast_redis()
        if client is not None:
            return RedisMaterializer(self, client)
        return FeastMaterializer(self)

    def references(self) -> list[str]:
        """``view:feature`` of every feature of the pattern, each checked against the registry."""
        if self._references is None:
            if self.pattern.features:
                references = list(self.pattern.features)
                self._check_references(references)
            else:
                with self.store.errors():
                    service = self.fs.get_feature_service(self.pattern.feature_service)
                references = [
                    f"{projection.name_to_use()}:{feature.name}"
                    for projection in service.feature_view_projections
                    for feature in projection.features
                ]
            self._references = references
        return self._references

    def _check_references(self, references: list[str]) -> None:
        for reference in references:
            view_name, _, feature = reference.partition(":")
            if not feature:
                raise QueryError(
                    f"pattern '{self.pattern.name}': '{reference}' is not 'view:feature'",
                    store=self.store.name,
                )
            view = self.on_demand_views().get(view_name)
            if view is None:
                with self.store.errors():
                    view = self.fs.get_feature_view(view_name)
            names = [f.name for f in view.features]
            if feature not in names:
                raise QueryError(
                    f"pattern '{self.pattern.name}': feature '{feature}' is not in view "
                    f"'{view_name}'; its features: {', '.join(names)}",
                    store=self.store.name,
                )

    def on_demand_views(self) -> dict[str, Any]:
        """Every on-demand feature view of the registry, by name."""
        if self._on_demand_views is None:
            with self.store.errors():
                views = self.fs.list_on_demand_feature_views()
            self._on_demand_views = {view.name: view for view in views}
        return self._on_demand_views

    def on_demand(self, references: Sequence[str]) -> OnDemandRead | None:
        """How the on-demand features among ``references`` are computed (None: there are
        none), cached per request shape."""
        from datalayer.stores.feast.on_demand import OnDemandRead

        wanted = tuple(references)
        if wanted not in self._on_demand:
            views = self.on_demand_views()
            plan = None
            if any(ref.split(":", 1)[0] in views for ref in wanted):
                try:
                    plan = OnDemandRead.plan(wanted, views)
                except QueryError as exc:  # an on-demand view datalayer does not compute
                    raise QueryError(
                        f"pattern '{self.pattern.name}': {exc.message}", store=self.store.name
                    ) from None
            self._on_demand[wanted] = plan
        return self._on_demand[wanted]

    def stored_references(self, references: Sequence[str]) -> list[str]:
        """The stored features behind ``references``: on-demand ones replaced by their
        inputs."""
        plan = self.on_demand(references)
        return plan.stored if plan is not None else list(references)

    def request_fields(self, references: Sequence[str]) -> list[str]:
        plan = self.on_demand(references)
        return plan.request_fields if plan is not None else []

    def views(self) -> dict[str, Any]:
        """The stored Feast feature views this pattern reads (on-demand views' inputs
        included), by name."""
        if self._views is None:
            names = {ref.split(":", 1)[0] for ref in self.stored_references(self.references())}
            with self.store.errors():
                self._views = {name: self.fs.get_feature_view(name) for name in sorted(names)}
        return self._views

    def join_keys(self, references: Sequence[str]) -> list[str]:
        """Join keys of the views behind ``references``.

        Cached: Feast's ``join_keys`` is type-checked at run time on every access, a cost a
        per-request hot path should not pay again and again."""
        wanted = tuple(references)
        if wanted not in self._join_keys:
            views = {ref.split(":", 1)[0] for ref in self.stored_references(wanted)}
            keys: list[str] = []
            for name, view in self.views().items():
                if name in views:
                    keys.extend(k for k in view.join_keys if k not in keys)
            self._join_keys[wanted] = keys
        return self._join_keys[wanted]

    def online(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        at: datetime,
        stamps: dict[str, list[int]] | None = None,
    ) -> dict[str, list[Any]]:
        plan = self.on_demand(references)
        if plan is None:
            return self.online_read.read(rows, references, at, stamps)
        keys = self.join_keys(references)
        key_rows = [{k: row[k] for k in keys} for row in rows] if plan.request_fields else rows
        stored = self.online_read.read(key_rows, plan.stored, at, stamps)
        with self.store.errors():
            return plan.online(rows, keys, stored)

    def online_stamped(
        self, rows: list[dict[str, Any]], references: list[str], at: datetime
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        stamps: dict[str, list[int]] = {}
        return self.online(rows, references, at, stamps), stamps

    def historical(self, entity_df: Any, references: list[str]) -> Any:
        plan = self.on_demand(references)
        result = self.training_set.build(entity_df, self.stored_references(references))
        if plan is not None:
            with self.store.errors():
                result = plan.historical(result, list(entity_df.columns))
        for column, dtype in self.dtypes(references).items():
            if str(result[column].dtype) != dtype:
                result[column] = result[column].astype(dtype)
        return result

    def input_types(self, references: Sequence[str]) -> dict[str, type]:
        """Join keys typed by their views' entity columns, request fields by their request
        sources' schemas."""
        from datalayer.stores.feast.on_demand import request_schema

        declared: dict[str, Any] = {}
        wanted = set(self.join_keys(references))
        for view in self.views().values():
            for column in view.entity_columns:
                if column.name in wanted:
                    declared.setdefault(column.name, column.dtype.to_value_type())
        plan = self.on_demand(references)
        for view in plan.views.values() if plan else ():
            declared.update(request_schema(view))
        return {name: _PYTHON[kind.name] for name, kind in declared.items() if kind.name in _PYTHON}

    def dtypes(self, references: Sequence[str]) -> dict[str, str]:
        """Integer features as pandas' nullable integers (with a null, they would be floats),
        Float32 ones as float32 (as their parquet files give them)."""
        found = {}
        for reference in references:
            view, feature = reference.split(":", 1)
            defined = self.views().get(view) or self.on_demand_views()[view]
            dtype = next(f.dtype for f in defined.features if f.name == feature)
            if str(dtype) in _DTYPES:
                found[f"{view}__{feature}"] = _DTYPES[str(dtype)]
        return found

    def log_tables(self) -> LogSinks | None:
        """The offline PostgreSQL's tables of this pattern's log and predictions, when there
        are some."""
        from datalayer.categories.feature_log import LogSinks
        from datalayer.stores.feast.log_table import (
            LogTable,
            predictions_table_name,
            table_name,
        )

        url = self.store.offline_postgres_url
        if not url:
            return None
        engine, name = self.store.offline_engine(url), self.pattern.name
        reads = LogTable(engine, table_name(name), self.dtypes(self.references()))
        predictions = LogTable(
            engine,
            predictions_table_name(name),
            {},
            key=("request_id", "row", "model", "version"),
            time_column="logged_at",
        )
        return LogSinks(reads, predictions, f"tables {reads.name} and {predictions.name}")

    def materialize(self, start: datetime, end: datetime, on_view: Progress | None) -> None:
        self.materializer.materialize(start, end, on_view)

    def materialize_incremental(self, end: datetime, on_view: Progress | None) -> None:
        self.materializer.materialize_incremental(end, on_view)

    def ttls(self, references: Sequence[str]) -> dict[str, int]:
        from datalayer.stores.feast.online_redis import ttl_nanos

        views = self.views()
        names = {ref.split(":", 1)[0] for ref in self.stored_references(list(references))}
        return {name: ttl_nanos(views[name].ttl) for name in sorted(names)}

    def push_sources(self) -> dict[str, str]:
        from feast.data_source import PushSource

        return {
            fv.stream_source.name: name
            for name, fv in self.views().items()
            if isinstance(fv.stream_source, PushSource)
        }

    def push(self, rows: Any, view: str | None, to: PushTo | None = None) -> None:
        """Rows of a view fed by a push source: offline first (unless ``to``, or else the
        store's ``push_mode``, says online only), so a training set sees them, then online
        (unless ``to`` says offline only)."""
        import pandas as pd
        from feast.data_source import PushMode, PushSource

        pushable = {
            name: fv
            for name, fv in self.views().items()
            if isinstance(fv.stream_source, PushSource)
        }
        if view is None:
            if len(pushable) != 1:
                raise QueryError(
                    f"pattern '{self.pattern.name}': name the view to push to; "
                    f"views with a push source: {', '.join(pushable) or 'none'}",
                    store=self.store.name,
                )
            view = next(iter(pushable))
        if view not in pushable:
            raise NotFound(
                f"pattern '{self.pattern.name}': view '{view}' has no push source; "
                f"views with one: {', '.join(pushable) or 'none'}",
                store=self.store.name,
            )
        feature_view = pushable[view]
        frame = pd.DataFrame(rows if not isinstance(rows, pd.DataFrame) else rows.copy())
        needed = [*feature_view.join_keys, *(f.name for f in feature_view.features)]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise QueryError(
                f"pattern '{self.pattern.name}': push rows for '{view}' lack {missing}",
                store=self.store.name,
            )
        mode = to or self.store.config.push_mode
        source = feature_view.stream_source.batch_source
        self._check_push_types(
            feature_view,
            frame,
            text_without_nul=mode != "online" and compat.is_postgres_source(source),
        )
        stamp = datetime.now(UTC)
        for column in filter(None, [source.timestamp_field, source.created_timestamp_column]):
            if column not in frame.columns:
                frame[column] = stamp
            frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        frame = frame[
            [*needed, *filter(None, [source.timestamp_field, source.created_timestamp_column])]
        ]
        with self.store.errors(), quiet():
            if mode in ("offline", "online_and_offline"):
                self._write_offline(feature_view, frame)
            if mode in ("online", "online_and_offline"):
                online = frame
                if self.store.fast_redis() is None:
                    online = self._newer_than_stored(feature_view, frame, source.timestamp_field)
                if len(online):
                    self.fs.push(feature_view.stream_source.name, online, to=PushMode.ONLINE)
                packing = self.store.packing()
                if packing is not None:
                    keys = frame[list(feature_view.join_keys)].to_dict("records")
                    with self.store.redis_errors():
                        packing.repack(view, keys, {view: feature_view})

    def _newer_than_stored(self, feature_view: Any, frame: Any, timestamp: str) -> Any:
        """The pushed rows an online store that overwrites whatever comes last (Feast's SQLite
        one does) should take: per entity the latest row, if its event time is newer than the
        one stored, the rule Feast's Redis store and our materializer follow. Without it, an
        event pushed late would replace a newer value online while a training set at the
        same instant takes the newer one."""
        from datalayer.stores.feast.online import FeastOnlineRead

        keys = list(feature_view.join_keys)
        latest = frame.sort_values(timestamp, kind="stable").drop_duplicates(keys, keep="last")
        references = [f"{feature_view.name}:{f.name}" for f in feature_view.features]
        stored: dict[str, list[int]] = {}
        FeastOnlineRead(self).read(
            latest[keys].to_dict("records"),
            references,
            datetime.max.replace(tzinfo=UTC),
            stored,
        )
        pushed = [epoch_nanos(t) for t in latest[timestamp]]
        newer = [new > old for new, old in zip(pushed, stored[feature_view.name], strict=True)]
        return latest[newer]

    def _check_push_types(self, feature_view: Any, frame: Any, text_without_nul: bool) -> None:
        """Every pushed value of the type its field declares (a missing one may be null), and
        no NUL character in a string bound for a PostgreSQL table (``text_without_nul``: its
        text type cannot hold one): nothing is written otherwise, and the error names the row
        and the column."""
        declared = {c.name: c.dtype for c in feature_view.entity_columns}
        declared.update({f.name: f.dtype for f in feature_view.features})
        problems = []
        for column, dtype in declared.items():
            kind = _PYTHON.get(dtype.to_value_type().name)
            if kind is None:
                continue
            for row, value in enumerate(frame[column].tolist()):
                if not _of_kind(value, kind):
                    problems.append(
                        (f"row {row}.{column}", f"must be {kind.__name__}, not {value!r:.40}")
                    )
                    break
                if text_without_nul and kind is str and "\x00" in value:
                    problems.append(
                        (f"row {row}.{column}", "holds a NUL character, which PostgreSQL refuses")
                    )
                    break
        if problems:
            raise PayloadValidationError(self.pattern.name, problems)

    def _write_offline(self, feature_view: Any, frame: Any) -> None:
        """Append pushed rows to the view's offline table first, so a training set sees them.

        Feast's PostgreSQL offline store cannot take pushes; its source is a plain table, so
        the rows are appended to it directly.
        """
        from feast.data_source import PushMode

        try:
            self.fs.push(feature_view.stream_source.name, frame, to=PushMode.OFFLINE)
            return
        except NotImplementedError:
            table = compat.postgres_table(feature_view.stream_source.batch_source)
            url = self.store.offline_postgres_url
            if not (table and url):
                raise
        frame.to_sql(table, self.store.offline_engine(url), if_exists="append", index=False)

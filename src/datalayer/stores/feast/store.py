"""``feast``: the feature contract on a Feast feature repository.

Definitions live in the repo folder (``feature_repo/``), one ``feature_store.<profile>.yaml``
per profile. Online reads apply each feature view's TTL, as historical retrieval does, so
training and serving never disagree about an expired value.

Feast's Python paths are slow where a model service or a training job feels it, so each has a
fast path that gives the same answer, and Feast's own call where the fast path does not apply:
online reads straight from Feast's Redis hashes (``feast_redis``), training sets on parquet
sources by a per-file index (``feast_offline``), materialization into Redis in bounded memory
(``feast_materialize``).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field

from datalayer.categories.feature import FeaturePattern, FeatureView, Progress
from datalayer.errors import DataLayerError, NotFound, QueryError, StoreUnavailable, redact
from datalayer.stores.base import Store, StoreConfig, require_driver
from datalayer.stores.feast.materialize_redis import (
    materialize_view,
    parquet_latest,
    postgres_latest,
)
from datalayer.stores.feast.online_redis import (
    Stamped,
    ViewPlan,
    decode,
    nanos,
    read_online,
    read_plan,
    ttl_nanos,
)
from datalayer.stores.feast.training_parquet import (
    TIMESTAMP,
    ParquetIndexes,
    historical_parquet,
    parquet_sources,
)
from datalayer.stores.shared.postgres_urls import libpq_url, sqlalchemy_url
from datalayer.validators import Name

_ENV_LOCK = threading.RLock()


class FeastConfig(StoreConfig):
    """A Feast repo folder (relative to the registry) and which of its yaml files to use."""

    serves: ClassVar[frozenset[str]] = frozenset({"feature"})
    extra: ClassVar[str | None] = "feast"

    type: Literal["feast"]
    repo: str = "feature_repo"
    profile: Name = "local"
    project: str = Field(default="alerting", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    postgres_url: str | None = Field(default=None, pattern=r"^postgres(ql)?(\+psycopg)?://")
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://")
    push_mode: Literal["online", "online_and_offline"] = "online_and_offline"

    def target(self) -> str:
        return f"{self.repo} ({self.profile})"

    def connect(self, name: str, base_dir: Path) -> FeastStore:
        require_driver("feast", "feast", self.type)
        repo = Path(self.repo)
        repo = repo if repo.is_absolute() else base_dir / repo
        yaml_file = repo / f"feature_store.{self.profile}.yaml"
        if not yaml_file.is_file():
            raise DataLayerError(
                f"store '{name}': no {yaml_file} for Feast profile '{self.profile}'"
            )
        return FeastStore(name, self, repo, yaml_file)

    def environment(self) -> dict[str, str]:
        """The variables the repo's yaml and definitions read."""
        env = {"DATALAYER_FEAST_PROFILE": self.profile, "DATALAYER_FEAST_PROJECT": self.project}
        if self.postgres_url:
            url = urlsplit(self.postgres_url)
            env.update(
                DATALAYER_FEAST_REGISTRY_URL=sqlalchemy_url(self.postgres_url),
                DATALAYER_FEAST_PG_HOST=url.hostname or "127.0.0.1",
                DATALAYER_FEAST_PG_PORT=str(url.port or 5432),
                DATALAYER_FEAST_PG_DATABASE=url.path.lstrip("/") or "postgres",
                DATALAYER_FEAST_PG_USER=unquote(url.username or ""),
                DATALAYER_FEAST_PG_PASSWORD=unquote(url.password or ""),
            )
        if self.redis_url:
            url = urlsplit(self.redis_url)
            parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
            if url.password:
                parts.append(f"password={unquote(url.password)}")
            if url.path.strip("/"):
                parts.append(f"db={url.path.strip('/')}")
            env["DATALAYER_FEAST_REDIS"] = ",".join(parts)
        return env


@contextlib.contextmanager
def _feast_environment(config: FeastConfig) -> Iterator[None]:
    """Set the variables Feast expands in the yaml, only while Feast reads it."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in config.environment()}
        os.environ.update(config.environment())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Feast prints progress to stdout and its DuckDB path warns on every query: keep both out
    of our output (and our CLI's tables)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield buffer


class FeastStore(Store[FeaturePattern, FeatureView]):
    config: FeastConfig

    def __init__(self, name: str, config: FeastConfig, repo: Path, yaml_file: Path) -> None:
        super().__init__(name, config)
        self.repo = repo
        self.yaml_file = yaml_file
        self._feature_store: Any = None
        self._redis: Any = None
        self._offline_engine: Any = None
        self._lock = threading.RLock()
        #: Sorted (keys, time) indexes of the parquet sources, for training sets.
        self.parquet_indexes = ParquetIndexes()

    @property
    def feature_store(self) -> Any:
        """Feast's FeatureStore for this profile (built once: importing Feast is slow)."""
        with self._lock:
            if self._feature_store is None:
                from feast import FeatureStore

                with _feast_environment(self.config), self.errors():
                    self._feature_store = FeatureStore(
                        repo_path=str(self.repo), fs_yaml_file=self.yaml_file
                    )
            return self._feature_store

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Feast's errors as datalayer errors naming the missing view, feature or column."""
        from feast import errors as feast_errors

        try:
            yield
        except DataLayerError:
            raise
        except (
            feast_errors.FeatureViewNotFoundException,
            feast_errors.FeatureServiceNotFoundException,
            feast_errors.PushSourceNotFoundException,
        ) as exc:
            raise NotFound(f"{self.label}: {exc}") from exc
        except feast_errors.EntityTimestampInferenceException as exc:
            raise QueryError(
                f"{self.label}: the entity DataFrame needs an '{TIMESTAMP}' column"
            ) from exc
        except KeyError as exc:
            raise QueryError(f"{self.label}: {exc.args[0] if exc.args else exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"{self.label} is unavailable: {redact(str(exc))}") from exc

    def handle(self, pattern: FeaturePattern) -> FeastFeatures:
        return FeastFeatures(pattern, self)

    def apply(self, patterns: list[FeaturePattern]) -> list[str]:
        """``feast apply`` for this profile: every definition in the repo, deletions included."""
        from feast import Project
        from feast.repo_operations import apply_total_with_repo_instance, parse_repo

        for source in self.repo.rglob("*.py"):
            # parse_repo imports by module name: a same-named module of another repo (or of
            # another profile) must not be reused.
            sys.modules.pop(".".join(source.relative_to(self.repo).with_suffix("").parts), None)
        with _feast_environment(self.config), self.errors(), _quiet():
            if str(self.repo) not in sys.path:
                sys.path.insert(0, str(self.repo))
            cwd = os.getcwd()
            os.chdir(self.repo)
            try:
                contents = parse_repo(self.repo)
            finally:
                os.chdir(cwd)
            store = self.feature_store
            if not contents.projects:
                contents.projects.append(Project(name=store.project, description=""))
            apply_total_with_repo_instance(
                store, store.project, store.registry, contents, skip_source_validation=True
            )
        views = [fv.name for fv in contents.feature_views]
        return [f"feast apply: project '{self.config.project}', views {', '.join(sorted(views))}"]

    def redis_client(self) -> Any:
        """A redis-py client on the online store when it is Redis (for the direct read)."""
        if not self.config.redis_url or self.feature_store.config.online_store.type != "redis":
            return None
        with self._lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(self.config.redis_url, socket_timeout=5)
            return self._redis

    @contextlib.contextmanager
    def redis_errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"{self.label}: online store unavailable: {exc}") from exc

    def ping(self) -> None:
        with self.errors():
            self.feature_store.list_feature_views()

    def offline_engine(self, url: str) -> Any:
        """One SQLAlchemy engine on the offline PostgreSQL, kept for every push."""
        with self._lock:
            if self._offline_engine is None:
                import sqlalchemy as sa

                self._offline_engine = sa.create_engine(sqlalchemy_url(url))
            return self._offline_engine

    def close(self) -> None:
        self._feature_store = None
        self.parquet_indexes.clear()
        if self._offline_engine is not None:
            self._offline_engine.dispose()
            self._offline_engine = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None


class FeastFeatures(FeatureView):
    """One feature pattern: its features resolved against the Feast registry."""

    def __init__(self, pattern: FeaturePattern, store: FeastStore) -> None:
        super().__init__(pattern)
        self.store = store
        self._views: dict[str, Any] | None = None
        self._references: list[str] | None = None
        self._join_keys: dict[tuple[str, ...], list[str]] = {}
        self._ttls: dict[str, int] = {}
        self._plans: dict[tuple[str, ...], list[ViewPlan]] = {}

    @property
    def fs(self) -> Any:
        return self.store.feature_store

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
                    f"pattern '{self.pattern.name}': '{reference}' is not 'view:feature'"
                )
            with self.store.errors():
                view = self.fs.get_feature_view(view_name)
            names = [f.name for f in view.features]
            if feature not in names:
                raise QueryError(
                    f"pattern '{self.pattern.name}': feature '{feature}' is not in view "
                    f"'{view_name}'; its features: {', '.join(names)}"
                )

    def selected(self, features: Sequence[str] | None) -> list[str]:
        """The pattern's references, or the given subset of them."""
        references = self.references()
        if features is None:
            return references
        unknown = [f for f in features if f not in references]
        if unknown:
            raise NotFound(
                f"pattern '{self.pattern.name}': no feature {unknown}; "
                f"its features: {', '.join(references)}"
            )
        return list(features)

    def views(self) -> dict[str, Any]:
        """The Feast feature views this pattern reads, by name."""
        if self._views is None:
            names = {ref.split(":", 1)[0] for ref in self.references()}
            with self.store.errors():
                self._views = {name: self.fs.get_feature_view(name) for name in sorted(names)}
        return self._views

    def join_keys(self, references: Sequence[str] | None = None) -> list[str]:
        """Join keys of the views behind ``references`` (default: all of the pattern's).

        Cached: Feast's ``join_keys`` is type-checked at run time on every access, a cost a
        per-request hot path should not pay again and again."""
        wanted = tuple(references or self.references())
        if wanted not in self._join_keys:
            views = {ref.split(":", 1)[0] for ref in wanted}
            keys: list[str] = []
            for name, view in self.views().items():
                if name in views:
                    keys.extend(k for k in view.join_keys if k not in keys)
            self._join_keys[wanted] = keys
        return self._join_keys[wanted]

    def _ttl_nanos(self, column: str) -> int:
        """The TTL of a column's view in nanoseconds (0: never expires), cached."""
        if column not in self._ttls:
            self._ttls[column] = ttl_nanos(self.views()[column.split("__", 1)[0]].ttl)
        return self._ttls[column]

    def _redis_plan(self, references: list[str]) -> list[ViewPlan]:
        """The read plan for these references, cached per request shape."""
        wanted = tuple(references)
        if wanted not in self._plans:
            self._plans[wanted] = read_plan(
                self.views(),
                references,
                self.fs.project,
                self.fs.config.entity_key_serialization_version,
            )
        return self._plans[wanted]

    @staticmethod
    def columns(references: Sequence[str]) -> list[str]:
        """Output column names: ``view__feature``, as Feast's full feature names."""
        return [ref.replace(":", "__") for ref in references]

    def _check_rows(
        self, entity_rows: Sequence[Mapping[str, Any]], references: Sequence[str]
    ) -> list[dict[str, Any]]:
        keys = self.join_keys(references)
        rows = []
        for i, row in enumerate(entity_rows):
            missing = [k for k in keys if row.get(k) is None]
            if missing:
                raise QueryError(
                    f"pattern '{self.pattern.name}': entity row {i} lacks join key(s) {missing}; "
                    f"every row needs {keys}"
                )
            rows.append({k: row[k] for k in keys})
        return rows

    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
    ) -> dict[str, list[Any]]:
        """Latest values per entity, a value older than its view's TTL (at ``as_of``, default
        now) reads as None, exactly as a training set built at that instant would have it.

        On a Redis online store the hashes are read directly, in one pipeline, through Feast's
        own key encoding, and decoded column by column (see ``feast_redis``); elsewhere through
        Feast's online read.
        """
        references = self.selected(features)
        rows = self._check_rows(entity_rows, references)
        client = self.store.redis_client()
        if client is None:
            return self._fresh(rows, references, self._read_feast(rows, references), as_of)
        at = nanos((as_of or datetime.now(UTC)).astimezone(UTC))
        plans = self._redis_plan(references)
        with self.store.redis_errors():
            values = read_online(client, rows, plans, at)
        out: dict[str, list[Any]] = {
            k: [row[k] for row in rows] for k in self.join_keys(references)
        }
        out.update(values)
        return out

    def _fresh(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        stamped: Stamped,
        as_of: datetime | None,
    ) -> dict[str, list[Any]]:
        """Decode each value, or None where it is missing or past its view's TTL at ``as_of``.

        Times are compared as integer nanoseconds, so the TTL boundary is exact (inclusive, as
        in historical retrieval)."""
        at = nanos((as_of or datetime.now(UTC)).astimezone(UTC))
        out: dict[str, list[Any]] = {
            k: [row[k] for row in rows] for k in self.join_keys(references)
        }
        for column in self.columns(references):
            ttl = self._ttl_nanos(column)
            oldest = max(1, at - ttl) if ttl else 1
            out[column] = [
                decode(value) if value is not None and oldest <= stamp <= at else None
                for value, stamp in stamped[column]
            ]
        return out

    def _read_feast(self, rows: list[dict[str, Any]], references: list[str]) -> Stamped:
        """(value proto, event time in nanoseconds) per column and row, through Feast's read."""
        columns = set(self.columns(references))
        stamped: Stamped = {c: [] for c in columns}
        if not rows:
            return stamped
        with self.store.errors():
            response = self.fs.get_online_features(
                features=references, entity_rows=rows, full_feature_names=True
            )
        proto = response.proto
        for index, name in enumerate(proto.metadata.feature_names.val):
            if name in columns:
                result = proto.results[index]
                stamped[name] = [
                    (value, stamp.seconds * 1_000_000_000 + stamp.nanos)
                    for value, stamp in zip(result.values, result.event_timestamps, strict=True)
                ]
        return stamped

    def online_df(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
    ) -> Any:
        import pandas as pd

        return pd.DataFrame(self.online(entity_rows, as_of=as_of, features=features))

    def historical(self, entity_df: Any, *, features: Sequence[str] | None = None) -> Any:
        """A point-in-time-correct training set: one row per entity row, in the same order."""
        import pandas as pd

        if not isinstance(entity_df, pd.DataFrame):
            raise QueryError(f"pattern '{self.pattern.name}': entity_df must be a pandas DataFrame")
        if TIMESTAMP not in entity_df.columns:
            raise QueryError(
                f"pattern '{self.pattern.name}': the entity DataFrame has no '{TIMESTAMP}' column "
                f"(columns: {', '.join(map(str, entity_df.columns))})"
            )
        references = self.selected(features)
        columns = self.columns(references)
        keys = self.join_keys(references)
        missing = [k for k in keys if k not in entity_df.columns]
        if missing:
            raise QueryError(
                f"pattern '{self.pattern.name}': the entity DataFrame lacks join key column(s) "
                f"{missing}; it needs {keys} and '{TIMESTAMP}'"
            )
        if self._parquet_sources(references):
            with self.store.errors():
                result = self._historical_parquet(entity_df, references)
        else:
            frame = entity_df.copy()
            frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
            frame["__row"] = range(len(frame))
            with self.store.errors(), _quiet():
                result = self._historical_feast(frame, references)
            result = result.sort_values("__row").drop(columns="__row").reset_index(drop=True)
            result[TIMESTAMP] = pd.to_datetime(result[TIMESTAMP], utc=True)
            result = result[[*entity_df.columns, *columns]]
        for column in columns:
            view, feature = column.split("__", 1)
            dtype = next(f.dtype for f in self.views()[view].features if f.name == feature)
            if str(dtype) == "Int64" and str(result[column].dtype) != "Int64":
                result[column] = result[column].astype("Int64")
        return result

    def _historical_feast(self, frame: Any, references: list[str]) -> Any:
        """Feast's own point-in-time join (any offline store)."""
        job = self.fs.get_historical_features(
            entity_df=frame, features=references, full_feature_names=True
        )
        return job.to_df()

    def _parquet_sources(self, references: list[str]) -> dict[str, str]:
        return parquet_sources(self.views(), references)

    def _historical_parquet(self, entity_df: Any, references: list[str]) -> Any:
        """The same join on parquet sources, through the store's kept file indexes (see
        ``feast_offline``): the whole result, rows in the entity DataFrame's order."""
        return historical_parquet(entity_df, self.views(), references, self.store.parquet_indexes)

    def materialize(self, start: datetime, end: datetime, on_view: Progress | None = None) -> None:
        """Copy the latest offline values in [start, end] to the online store, view by view."""
        views = list(self.views())
        for done, name in enumerate(views):
            if on_view:
                on_view(name, done, len(views))
            self._materialize_view(name, start, end)
        if on_view:
            on_view("", len(views), len(views))

    def materialize_incremental(self, end: datetime, on_view: Progress | None = None) -> None:
        """Materialize what is new since the last run; a view never materialized starts at
        ``end - ttl`` (Feast would start at now - ttl, missing a past ``end``)."""
        views = list(self.views())
        for done, name in enumerate(views):
            if on_view:
                on_view(name, done, len(views))
            with self.store.errors():
                current = self.fs.get_feature_view(name)
            start = current.most_recent_end_time or end - (current.ttl or timedelta(days=30))
            self._materialize_view(name, start, end)
        if on_view:
            on_view("", len(views), len(views))

    def _materialize_view(self, name: str, start: datetime, end: datetime) -> None:
        """One view: straight into Feast's Redis layout when the offline rows can be streamed
        (parquet files or PostgreSQL) and the online store is Redis; else Feast's materialize.
        Either way the registry records the interval, as ``feast materialize`` does."""
        start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        with self.store.errors(), _quiet():
            view = self.fs.get_feature_view(name)
            batches = self._latest_rows(view, start, end)
            if batches is None:
                self.fs.materialize(start, end, feature_views=[name])
                return
            with self.store.redis_errors():
                materialize_view(self.fs, view, self.store.redis_client(), batches)
            self.fs.registry.apply_materialization(view, self.fs.project, start, end)

    def _latest_rows(self, view: Any, start: datetime, end: datetime) -> Iterator[Any] | None:
        """The view's latest row per entity as record batches, when a direct path exists."""
        from feast import FileSource
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        client = self.store.redis_client()
        versioned = getattr(self.fs.config.registry, "enable_online_feature_view_versioning", 0)
        source = view.batch_source
        if client is None or versioned:
            return None
        if isinstance(source, FileSource) and str(source.path).endswith(".parquet"):
            path = Path(source.path)
            path = path if path.is_absolute() else self.store.repo / path
            return parquet_latest(view, str(path), start, end)
        if isinstance(source, PostgreSQLSource) and self.store.config.postgres_url:
            return postgres_latest(view, libpq_url(self.store.config.postgres_url), start, end)
        return None

    def push(self, rows: Any, *, view: str | None = None) -> None:
        """Write fresh rows of a streaming view (one fed by a push source) online and offline."""
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
                    f"views with a push source: {', '.join(pushable) or 'none'}"
                )
            view = next(iter(pushable))
        if view not in pushable:
            raise NotFound(
                f"pattern '{self.pattern.name}': view '{view}' has no push source; "
                f"views with one: {', '.join(pushable) or 'none'}"
            )
        feature_view = pushable[view]
        frame = pd.DataFrame(rows if not isinstance(rows, pd.DataFrame) else rows.copy())
        needed = [*feature_view.join_keys, *(f.name for f in feature_view.features)]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise QueryError(
                f"pattern '{self.pattern.name}': push rows for '{view}' lack {missing}"
            )
        source = feature_view.stream_source.batch_source
        stamp = datetime.now(UTC)
        for column in filter(None, [source.timestamp_field, source.created_timestamp_column]):
            if column not in frame.columns:
                frame[column] = stamp
            frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        frame = frame[
            [*needed, *filter(None, [source.timestamp_field, source.created_timestamp_column])]
        ]
        with self.store.errors(), _quiet():
            if self.store.config.push_mode == "online_and_offline":
                self._write_offline(feature_view, frame)
            self.fs.push(feature_view.stream_source.name, frame, to=PushMode.ONLINE)

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
            options = getattr(feature_view.stream_source.batch_source, "_postgres_options", None)
            table = getattr(options, "_table", None)
            url = self.store.config.postgres_url
            if not (table and url):
                raise
        frame.to_sql(table, self.store.offline_engine(url), if_exists="append", index=False)

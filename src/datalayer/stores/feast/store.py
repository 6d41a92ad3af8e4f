"""``feast``: the feature contract on a Feast feature repository.

Definitions live in the repo folder (``feature_repo/``), one ``feature_store.<profile>.yaml``
per profile. Online reads apply each feature view's TTL, as historical retrieval does, so
training and serving never disagree about an expired value.

Feast's Python paths are slow where a model service or a training job feels it, so each job
has a fast strategy that gives the same answer beside Feast's own (``online``, ``training``,
``materialize``): online reads straight from Feast's Redis hashes, training sets on parquet
sources by a per-file index, materialization into Redis in bounded memory. The fast paths rely
on Feast internals (``compat``); before one is used, a self-check (``selfcheck``) compares our
Redis layout with Feast's, and on any difference the store logs why, once, and uses Feast's
paths. ``fast_paths: off`` always does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field

from datalayer.categories.feature import TIMESTAMP, FeaturePattern, FeatureView
from datalayer.errors import DataLayerError, NotFound, QueryError, StoreUnavailable, redact
from datalayer.stores.base import Store, StoreConfig, require_driver
from datalayer.stores.feast import compat
from datalayer.stores.feast.environment import feast_environment, quiet
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.training_parquet import ParquetIndexes
from datalayer.stores.shared.postgres_urls import sqlalchemy_url
from datalayer.validators import Name

log = logging.getLogger(__name__)


class FeastConfig(StoreConfig):
    """A Feast repo folder (relative to the registry) and which of its yaml files to use."""

    type: Literal["feast"]
    repo: str = "feature_repo"
    profile: Name = "local"
    #: The Feast project; unset, the repo's yaml names it.
    project: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    postgres_url: str | None = Field(default=None, pattern=r"^postgres(ql)?(\+psycopg)?://")
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://")
    push_mode: Literal["online", "online_and_offline"] = "online_and_offline"
    #: ``auto``: the fast paths where they apply and the self-check passes; ``off``: Feast's.
    fast_paths: Literal["auto", "off"] = "auto"

    def target(self) -> str:
        return f"{self.repo} ({self.profile})"

    def connect(self, name: str, base_dir: Path) -> FeastStore:
        require_driver("feast", "feast", self.type)
        repo = Path(self.repo)
        repo = repo if repo.is_absolute() else base_dir / repo
        yaml_file = repo / f"feature_store.{self.profile}.yaml"
        if not yaml_file.is_file():
            raise DataLayerError(
                f"store '{name}': no {yaml_file} for Feast profile '{self.profile}'", store=name
            )
        return FeastStore(name, self, repo, yaml_file)

    def environment(self) -> dict[str, str]:
        """The variables the repo's yaml and definitions read."""
        env = {"DATALAYER_FEAST_PROFILE": self.profile}
        if self.project:
            env["DATALAYER_FEAST_PROJECT"] = self.project
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


class FeastStore(Store[FeaturePattern, FeatureView]):
    config: FeastConfig

    def __init__(self, name: str, config: FeastConfig, repo: Path, yaml_file: Path) -> None:
        super().__init__(name, config)
        self.repo = repo
        self.yaml_file = yaml_file
        self._feature_store: Any = None
        self._redis: Any = None
        self._offline_engine: Any = None
        self._fast_paths: bool | None = None
        self._lock = threading.RLock()
        #: Sorted (keys, time) indexes of the parquet sources, for training sets.
        self.parquet_indexes = ParquetIndexes()

    @property
    def feature_store(self) -> Any:
        """Feast's FeatureStore for this profile (built once: importing Feast is slow)."""
        with self._lock:
            if self._feature_store is None:
                from feast import FeatureStore

                with feast_environment(self.config.environment()), self.errors():
                    self._feature_store = FeatureStore(
                        repo_path=str(self.repo), fs_yaml_file=self.yaml_file
                    )
            return self._feature_store

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Feast's errors as datalayer errors naming the missing view, feature or column; any
        datalayer error raised within (reading parquet files, say) names this store too."""
        from feast import errors as feast_errors

        try:
            yield
        except DataLayerError as exc:
            if exc.store is None:
                exc.store = self.name
            raise
        except (
            feast_errors.FeatureViewNotFoundException,
            feast_errors.FeatureServiceNotFoundException,
            feast_errors.PushSourceNotFoundException,
        ) as exc:
            raise NotFound(f"{self.label}: {exc}", store=self.name) from exc
        except feast_errors.EntityTimestampInferenceException as exc:
            raise QueryError(
                f"{self.label}: the entity DataFrame needs an '{TIMESTAMP}' column",
                store=self.name,
            ) from exc
        except KeyError as exc:
            raise QueryError(
                f"{self.label}: {exc.args[0] if exc.args else exc}", store=self.name
            ) from exc
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.label} is unavailable: {redact(str(exc))}", store=self.name
            ) from exc

    def handle(self, pattern: FeaturePattern) -> FeatureView:
        return FeatureView(pattern, FeastFeatures(pattern, self))

    def apply(self, patterns: list[FeaturePattern]) -> list[str]:
        """``feast apply`` for this profile: every definition in the repo, deletions included.
        The process's working directory, ``sys.path``, ``sys.modules`` and environment are left
        as they were."""
        with feast_environment(self.config.environment()), self.errors(), quiet():
            store = self.feature_store
            views = compat.apply_repo(store, self.repo)
        return [f"feast apply: project '{store.project}', views {', '.join(sorted(views))}"]

    def fast_paths(self) -> bool:
        """Whether this store's fast paths may be used: ``fast_paths: auto`` and, on a Redis
        online store, our layout equal to Feast's (checked on first use; a difference is
        logged once)."""
        with self._lock:
            if self._fast_paths is None:
                self._fast_paths = self._check_fast_paths()
            return self._fast_paths

    def _check_fast_paths(self) -> bool:
        if self.config.fast_paths == "off":
            return False
        if self.redis_client() is None:
            return True
        from datalayer.stores.feast.selfcheck import layout_problem

        problem = layout_problem(self.feature_store)
        if problem:
            log.warning(
                "%s: fast paths off, reads and materialization go through Feast: %s",
                self.label,
                problem,
            )
        return problem is None

    def redis_client(self) -> Any:
        """A redis-py client on the online store when it is Redis (for the direct read)."""
        if not self.config.redis_url or self.feature_store.config.online_store.type != "redis":
            return None
        with self._lock:
            if self._redis is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                self._redis = redis.Redis.from_url(
                    self.config.redis_url,
                    socket_timeout=self.config.resilience.timeout.total_seconds(),
                    retry=Retry(NoBackoff(), 0),  # the resilience policy retries, and counts
                )
            return self._redis

    def fast_redis(self) -> Any:
        """The client of the fast online read and materializer: the online store's Redis
        when it is Redis and the fast paths are on, else None (Feast's own paths)."""
        client = self.redis_client()
        return client if client is not None and self.fast_paths() else None

    @contextlib.contextmanager
    def redis_errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"{self.label}: online store unavailable: {exc}", store=self.name
            ) from exc

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
        self._fast_paths = None
        self.parquet_indexes.clear()
        if self._offline_engine is not None:
            self._offline_engine.dispose()
            self._offline_engine = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

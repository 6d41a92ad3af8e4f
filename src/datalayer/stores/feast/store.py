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
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from datalayer.categories.feature import TIMESTAMP, FeaturePattern, FeatureView
from datalayer.errors import (
    DataLayerError,
    NotApplied,
    NotFound,
    QueryError,
    StoreUnavailable,
    redact,
)
from datalayer.patterns import PatternConfig
from datalayer.stores.base import Store, StoreConfig, require_installed
from datalayer.stores.feast import compat
from datalayer.stores.feast.environment import feast_environment, quiet
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.repo_yaml import (
    FeastYaml,
    FeastYamlError,
    connection_string,
    postgres_server,
    redis_url_server,
)
from datalayer.stores.feast.training_parquet import ParquetIndexes
from datalayer.stores.shared.postgres_urls import sqlalchemy_url
from datalayer.validators import Name

if TYPE_CHECKING:
    from datalayer.stores.feast.packed import Packing

log = logging.getLogger(__name__)


#: The variables a Feast yaml may use, and the setting of the store that fills each.
_FILLED_BY = {
    "DATALAYER_FEAST_PROJECT": "project",
    "DATALAYER_FEAST_REDIS": "redis_url",
    "DATALAYER_FEAST_REGISTRY_URL": "postgres_url",
    "DATALAYER_FEAST_PG_HOST": "postgres_url",
    "DATALAYER_FEAST_PG_PORT": "postgres_url",
    "DATALAYER_FEAST_PG_DATABASE": "postgres_url",
    "DATALAYER_FEAST_PG_USER": "postgres_url",
    "DATALAYER_FEAST_PG_PASSWORD": "postgres_url",
}


class FeastConfig(StoreConfig):
    """A Feast repo folder (relative to the registry) and which of its yaml files to use:
    ``yaml`` when set, else ``feature_store.<profile>.yaml`` when the repo has one, else its
    plain ``feature_store.yaml``. The online and offline connections are the yaml's own;
    ``redis_url`` and ``postgres_url`` fill the ``${DATALAYER_FEAST_*}`` variables a yaml may
    use, and must name the yaml's servers."""

    type: Literal["feast"]
    repo: str = "feature_repo"
    profile: Name = "local"
    #: The Feast yaml, relative to the registry's folder; unset, chosen in the repo as above.
    yaml: str | None = None
    #: The Feast project; unset, the repo's yaml names it.
    project: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    postgres_url: str | None = Field(default=None, pattern=r"^postgres(ql)?(\+psycopg)?://")
    redis_url: str | None = Field(default=None, pattern=r"^rediss?://")
    push_mode: Literal["online", "online_and_offline"] = "online_and_offline"
    #: ``auto``: the fast paths where they apply and the self-check passes; ``off``: Feast's.
    fast_paths: Literal["auto", "off"] = "auto"

    @field_validator("redis_url", "postgres_url")
    @classmethod
    def _parses(cls, url: str | None) -> str | None:
        """A URL whose port or database is not one (``host:1:2``) is refused here, not when
        the yaml's variables are filled from it."""
        if url is not None:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
            if (
                url.startswith("redis")
                and parts.path.strip("/")
                and not parts.path.strip("/").isdigit()
            ):
                raise ValueError(f"the database must be a number, not '{parts.path.strip('/')}'")
        return url

    def target(self) -> str:
        return f"{self.yaml or self.repo} ({self.profile})"

    def connect(self, name: str, base_dir: Path) -> FeastStore:
        require_installed("feast", "feast", self.type)  # Feast is imported when first used
        repo = self.repo_dir(base_dir)
        yaml_file = self.yaml_file(base_dir)
        if not yaml_file.is_file():
            raise DataLayerError(f"store '{name}': {self.missing_yaml(base_dir)}", store=name)
        try:
            settings = self.feast_yaml(base_dir)
        except FeastYamlError as exc:
            raise DataLayerError(f"store '{name}': {exc}", store=name) from None
        return FeastStore(name, self, repo, settings)

    def repo_dir(self, base_dir: Path) -> Path:
        repo = Path(self.repo)
        return repo if repo.is_absolute() else base_dir / repo

    def yaml_file(self, base_dir: Path) -> Path:
        if self.yaml:
            path = Path(self.yaml)
            return path if path.is_absolute() else base_dir / path
        repo = self.repo_dir(base_dir)
        for_profile = repo / f"feature_store.{self.profile}.yaml"
        return for_profile if for_profile.is_file() else repo / "feature_store.yaml"

    def missing_yaml(self, base_dir: Path) -> str:
        if self.yaml:
            return f"no Feast yaml {self.yaml_file(base_dir)}"
        repo = self.repo_dir(base_dir)
        return (
            f"no feature_store.{self.profile}.yaml nor feature_store.yaml in {repo} "
            f"(Feast profile '{self.profile}')"
        )

    def feast_yaml(self, base_dir: Path) -> FeastYaml:
        """The yaml as Feast reads it, with this store's variables."""
        return FeastYaml.read(self.yaml_file(base_dir), self.environment())

    def verify(self, base_dir: Path) -> tuple[str, str] | None:
        """The yaml exists and parses, and ``redis_url`` / ``postgres_url`` name the servers
        it uses (a contradiction would read an empty store and serve ``None``s)."""
        if not self.yaml_file(base_dir).is_file():
            return ("yaml" if self.yaml else "repo"), self.missing_yaml(base_dir)
        try:
            found = self.feast_yaml(base_dir)
        except FeastYamlError as exc:
            return exc.key, str(exc)
        for variable, key in _FILLED_BY.items():
            if "${" + variable + "}" in found.text:
                return key, (
                    f"{found.file.name} uses ${{{variable}}}, which this store's '{key}' fills; "
                    f"set '{key}'"
                )
        return self._contradiction(found)

    def serving(self, base_dir: Path) -> str:
        """Which paths serve online reads, materialization and training sets, for
        ``describe``: the fast Redis ones need one Redis server, the fast join parquet files
        (and ``fast_paths: auto``; a layout self-check on first use can still turn them off,
        and says so)."""
        found = self.feast_yaml(base_dir)
        server = found.redis_server()
        if self.fast_paths == "off":
            return "online reads, materialization and training sets: Feast's (fast_paths: off)"
        if server is None:
            kind = found.online_type
            if kind == "redis":
                kind += f" of redis_type {found.section('online_store').get('redis_type')}"
            online = (
                f"online reads and materialization: Feast's (online store '{kind}'; the "
                "fast paths serve one Redis server)"
            )
        else:
            online = f"online reads and materialization: the fast Redis paths ({server.describe()})"
        if found.offline_type in ("file", "dask", "duckdb"):
            training = "training sets: the fast join for views over parquet files, else Feast's"
        else:
            training = (
                f"training sets: Feast's (offline store '{found.offline_type}'; the fast join "
                "reads parquet files)"
            )
        return f"{online}; {training}"

    def _contradiction(self, found: FeastYaml) -> tuple[str, str] | None:
        where = found.file.name
        if self.redis_url:
            server = found.redis_server()
            if server is None:
                return "redis_url", (
                    f"redis_url is set but {where}'s online store is '{found.online_type}'"
                    + (" (a Redis cluster or sentinel)" if found.online_type == "redis" else "")
                    + ", not one Redis server; remove redis_url or change the online store"
                )
            mine = redis_url_server(self.redis_url)
            if not mine.same_server(server):
                return "redis_url", (
                    f"redis_url names {mine.describe()} but {where}'s online store connects to "
                    f"{server.describe()} (or with another password); make them agree, e.g. "
                    "connection_string: ${DATALAYER_FEAST_REDIS} in the yaml"
                )
        if self.postgres_url:
            url = found.postgres_url()
            if url is None:
                return "postgres_url", (
                    f"postgres_url is set but {where}'s offline store is "
                    f"'{found.offline_type}', not PostgreSQL"
                )
            mine_pg, theirs = postgres_server(self.postgres_url), postgres_server(url)
            if mine_pg != theirs:
                return "postgres_url", (
                    "postgres_url names {}:{}/{} as '{}' but {}'s offline store is {}:{}/{} as "
                    "'{}'; make them agree, e.g. host: ${{DATALAYER_FEAST_PG_HOST}} in the "
                    "yaml".format(*mine_pg, where, *theirs)
                )
        return None

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
            env["DATALAYER_FEAST_REDIS"] = connection_string(self.redis_url)
        return env


class FeastStore(Store[FeaturePattern, FeatureView]):
    config: FeastConfig

    def __init__(self, name: str, config: FeastConfig, repo: Path, settings: FeastYaml) -> None:
        super().__init__(name, config)
        self.repo = repo
        self.settings = settings
        self.yaml_file = settings.file
        #: The online store's Redis (the fast paths' own client), when it is one Redis server.
        self.online_redis = settings.redis_server()
        #: The offline PostgreSQL, for what Feast's PostgreSQL offline store cannot do.
        self.offline_postgres_url = config.postgres_url or settings.postgres_url()
        self._feature_store: Any = None
        self._redis: Any = None
        self._offline_engine: Any = None
        self._fast_paths: bool | None = None
        self._told_no_fast_redis = False
        self._lock = threading.RLock()
        #: Sorted (keys, time) indexes of the parquet sources, for training sets.
        self.parquet_indexes = ParquetIndexes()
        #: The registry's patterns with ``layout: packed`` (``attach``); their layouts, built
        #: on first use (None: none can be used here).
        self.packed_patterns: list[FeaturePattern] = []
        self._packing: Packing | bool | None = False

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

    def attach(self, patterns: list[PatternConfig]) -> None:
        self.packed_patterns = [
            p for p in patterns if isinstance(p, FeaturePattern) and p.layout == "packed"
        ]

    def packing(self) -> Packing | None:
        """The packed layouts every write of a view must update, and the packed patterns
        read: those whose views our materializer writes, on the fast Redis paths. None when
        there are none; why a packed pattern cannot be is logged once."""
        with self._lock:
            if self._packing is False:
                self._packing = self._build_packing()
            assert self._packing is not True
            return self._packing

    def _build_packing(self) -> Packing | None:
        from datalayer.stores.feast.materialize import streams
        from datalayer.stores.feast.packed import Packing, layouts

        if not self.packed_patterns:
            return None
        client = self.fast_redis()
        if client is None:
            log.info(
                "%s: patterns %s read Feast's layout: the packed layout needs the fast paths "
                "on a Redis online store",
                self.label,
                ", ".join(p.name for p in self.packed_patterns),
            )
            return None
        fs = self.feature_store
        version = fs.config.entity_key_serialization_version
        by_pattern = {}
        for pattern in self.packed_patterns:
            views = FeastFeatures(pattern, self).views()
            slow = [name for name, view in views.items() if not streams(self, view)]
            if slow:
                log.info(
                    "%s: pattern '%s' reads Feast's layout: the packed layout is written by "
                    "datalayer's materializer, which does not stream the sources of %s",
                    self.label,
                    pattern.name,
                    ", ".join(slow),
                )
                continue
            by_pattern[pattern.name] = layouts(views, fs.project, version)
        key_ttl = getattr(fs.config.online_store, "key_ttl_seconds", None) or 0
        return Packing(client, key_ttl, by_pattern) if by_pattern else None

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
        """A redis-py client on the online store when it is one Redis server (for the direct
        read), connected as Feast connects from the yaml's connection string."""
        server = self.online_redis
        if server is None:
            return None
        with self._lock:
            if self._redis is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                timeout = self.config.resilience.timeout.total_seconds()
                try:
                    self._redis = redis.Redis(
                        **{
                            **server.options,
                            "host": server.host,
                            "port": server.port,
                            "socket_timeout": timeout,
                            "socket_connect_timeout": timeout,
                            "retry": Retry(NoBackoff(), 0),  # the resilience policy retries
                        }
                    )
                except TypeError as exc:  # an option redis-py does not take
                    raise DataLayerError(
                        f"{self.label}: the online store's connection string: {exc}",
                        store=self.name,
                    ) from None
            return self._redis

    def fast_redis(self) -> Any:
        """The client of the fast online read and materializer: the online store's Redis
        when it is Redis and the fast paths are on, else None (Feast's own paths)."""
        client = self.redis_client()
        if client is None:
            self._say_no_fast_redis()
            return None
        return client if self.fast_paths() else None

    def _say_no_fast_redis(self) -> None:
        """Log once why online reads and materialization go through Feast here."""
        with self._lock:
            if self._told_no_fast_redis:
                return
            self._told_no_fast_redis = True
        online = self.settings.section("online_store")
        kind = self.settings.online_type
        if kind == "redis":
            kind = f"Redis of redis_type '{online.get('redis_type')}'"
        log.info(
            "%s: online reads and materialization go through Feast: the fast paths serve one "
            "Redis server, and the online store is %s",
            self.label,
            kind,
        )

    @contextlib.contextmanager
    def redis_errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"{self.label}: online store unavailable: {exc}", store=self.name
            ) from exc

    def preload(self) -> None:
        """The clients ``ping`` uses (Feast itself is not needed, nor imported)."""
        import sqlalchemy  # noqa: F401

        if self.online_redis is not None:
            import redis  # noqa: F401
        if self.offline_postgres_url:
            import psycopg  # noqa: F401

    def ping(self) -> None:
        """A read of the registry, a round trip to the online store and, on PostgreSQL, to the
        offline store, each failure named, all without Feast (importing it takes seconds)."""
        problems: list[DataLayerError] = []
        for check in (self._ping_registry, self._ping_online, self._ping_offline):
            try:
                check()
            except DataLayerError as exc:
                problems.append(exc)
        if problems:  # all of them, the servers that do not answer first
            problems.sort(key=lambda p: not isinstance(p, StoreUnavailable))
            first = problems[0]
            rest = [p.message.removeprefix(f"{self.label}: ") for p in problems[1:]]
            joined = "; ".join([first.message, *rest])
            raise type(first)(joined, store=self.name) from first

    def _ping_online(self) -> None:
        client = self.redis_client()
        if client is not None:
            with self.redis_errors():
                client.ping()
        elif self.settings.online_type == "sqlite":
            path = self._repo_path(self.settings.section("online_store").get("path"))
            self._ping_sqlite(path or self.repo / "data" / "online.db")

    def _ping_offline(self) -> None:
        if self.offline_postgres_url:
            self._ping_sql(self.offline_postgres_url, "offline store", "SELECT 1")

    def _repo_path(self, value: object) -> Path | None:
        """A path of the yaml, relative to the repo as Feast takes it; None for a URI."""
        if not value or "://" in str(value):
            return None
        path = Path(str(value))
        return path if path.is_absolute() else self.repo / path

    def _ping_registry(self) -> None:
        registry = self.settings.data.get("registry") or "data/registry.db"
        if not isinstance(registry, dict):
            registry = {"path": registry}
        kind, where = registry.get("registry_type", "file"), registry.get("path")
        if kind == "sql" and where:
            self._ping_sql(str(where), "registry", "SELECT count(*) FROM feast_metadata")
        elif kind == "file" and (path := self._repo_path(where)) is not None:
            if not path.is_file():
                raise NotApplied(
                    f"{self.label}: no Feast registry at {path} yet; run 'datalayer apply'",
                    store=self.name,
                )
            try:
                with path.open("rb") as registry_file:
                    registry_file.read(64)
            except OSError as exc:
                raise StoreUnavailable(
                    f"{self.label}: registry {path}: {exc}", store=self.name
                ) from exc

    def _ping_sqlite(self, path: Path) -> None:
        """The SQLite online store, opened read-only."""
        import sqlite3

        if not path.is_file():
            raise NotApplied(
                f"{self.label}: the online store {path} does not exist yet; run 'datalayer apply'",
                store=self.name,
            )
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"{self.label}: online store {path}: {exc}", store=self.name
            ) from exc

    def _ping_sql(self, url: str, what: str, query: str) -> None:
        """``query`` on a PostgreSQL (or, for a registry, any SQLAlchemy) database."""
        import sqlalchemy as sa

        timeout = max(1, round(self.config.resilience.timeout.total_seconds()))
        postgres = url.startswith(("postgres://", "postgresql"))
        target = sqlalchemy_url(url) if postgres else url
        connect_args = {"connect_timeout": timeout} if postgres else {}
        try:
            engine = sa.create_engine(target, connect_args=connect_args, poolclass=sa.NullPool)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise DataLayerError(
                f"{self.label}: {what} URL: {redact(str(exc))}", store=self.name
            ) from None
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(query)).fetchall()
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            # PostgreSQL's missing table is a ProgrammingError, SQLite's an OperationalError.
            if isinstance(exc, sa.exc.ProgrammingError) or "no such table" in str(exc):
                raise NotApplied(
                    f"{self.label}: the {what} has no Feast tables yet; run 'datalayer apply'",
                    store=self.name,
                ) from exc
            detail = redact(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
            raise StoreUnavailable(f"{self.label}: {what}: {detail}", store=self.name) from exc
        finally:
            engine.dispose()

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

"""Materialization: Feast's own, or straight into its Redis layout in bounded memory (see
``materialize_redis``). Either way the registry records each view's interval, as
``feast materialize`` does."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datalayer.categories.feature import Progress
from datalayer.stores.feast import compat
from datalayer.stores.feast.environment import quiet
from datalayer.stores.feast.materialize_redis import (
    materialize_view,
    parquet_latest,
    postgres_latest,
)
from datalayer.stores.shared.postgres_urls import libpq_url

if TYPE_CHECKING:
    from datalayer.stores.feast.features import FeastFeatures
    from datalayer.stores.feast.store import FeastStore

log = logging.getLogger(__name__)


class Materializer(ABC):
    """How one pattern's views are copied to the online store, view by view."""

    def __init__(self, features: FeastFeatures) -> None:
        self.features = features

    def materialize(self, start: datetime, end: datetime, on_view: Progress | None) -> None:
        views = list(self.features.views())
        for done, name in enumerate(views):
            if on_view:
                on_view(name, done, len(views))
            self._view(name, start, end)
        if on_view:
            on_view("", len(views), len(views))

    def materialize_incremental(self, end: datetime, on_view: Progress | None) -> None:
        """What is new since each view's last run; a view never materialized starts at
        ``end - ttl`` (Feast would start at now - ttl, missing a past ``end``)."""
        views = list(self.features.views())
        for done, name in enumerate(views):
            if on_view:
                on_view(name, done, len(views))
            with self.features.store.errors():
                current = self.features.fs.get_feature_view(name)
            start = current.most_recent_end_time or end - (current.ttl or timedelta(days=30))
            self._view(name, start, end)
        if on_view:
            on_view("", len(views), len(views))

    def _view(self, name: str, start: datetime, end: datetime) -> None:
        start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
        with self.features.store.errors(), quiet():
            self.view(name, start, end)

    @abstractmethod
    def view(self, name: str, start: datetime, end: datetime) -> None:
        """Materialize one view over [start, end] (aware instants)."""


class FeastMaterializer(Materializer):
    """Feast's ``materialize`` (any offline and online store)."""

    def view(self, name: str, start: datetime, end: datetime) -> None:
        self.features.fs.materialize(start, end, feature_views=[name])


class RedisMaterializer(Materializer):
    """The latest offline rows streamed into Feast's Redis layout, for views whose rows can be
    streamed (a parquet file, a PostgreSQL table); Feast's ``materialize`` for the others."""

    def __init__(self, features: FeastFeatures, client: Any) -> None:
        super().__init__(features)
        self.client = client
        self.fallback = FeastMaterializer(features)
        self._told: set[str] = set()

    def view(self, name: str, start: datetime, end: datetime) -> None:
        fs = self.features.fs
        view = fs.get_feature_view(name)
        batches = latest_rows(self.features.store, view, start, end)
        if batches is None:
            if name not in self._told:
                self._told.add(name)
                log.info(
                    "view '%s' is materialized by Feast: its source is a %s (the fast path "
                    "streams parquet files and PostgreSQL tables)",
                    name,
                    type(view.batch_source).__name__,
                )
            self.fallback.view(name, start, end)
            return
        store = self.features.store
        packing = store.packing()
        writers = packing.writers(name) if packing else []
        with store.redis_errors():
            materialize_view(fs, view, self.client, batches, packed=writers)
        fs.registry.apply_materialization(view, fs.project, start, end)


def streams(store: FeastStore, view: Any) -> bool:
    """Whether the view's rows can be streamed into Redis by ``latest_rows``: its source is a
    parquet file, or a PostgreSQL table with the offline store's URL known."""
    from feast import FileSource

    source = view.batch_source
    if isinstance(source, FileSource):
        return str(source.path).endswith(".parquet")
    return bool(compat.is_postgres_source(source) and store.offline_postgres_url)


def latest_rows(
    store: FeastStore, view: Any, start: datetime, end: datetime
) -> Iterator[Any] | None:
    """The view's latest row per entity as record batches, when it ``streams``; else None."""
    if not streams(store, view):
        return None
    source = view.batch_source
    if compat.is_postgres_source(source):
        assert store.offline_postgres_url is not None
        return postgres_latest(view, libpq_url(store.offline_postgres_url), start, end)
    path = Path(source.path)
    path = path if path.is_absolute() else store.repo / path
    return parquet_latest(view, str(path), start, end)

"""Online reads: through Feast's ``get_online_features``, or straight from its Redis hashes.

Both answer the same: each feature's latest value, None where it is missing or older than its
view's TTL at the instant asked for (inclusive bounds, compared in integer nanoseconds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any

from datalayer.categories.feature import FeatureView, epoch_nanos
from datalayer.stores.feast.online_redis import (
    Stamped,
    ViewPlan,
    decode,
    read_online,
    read_plan,
    ttl_nanos,
)
from datalayer.stores.feast.packed import PackedLayout, PackedRead, read_packed, read_request

if TYPE_CHECKING:
    from datalayer.stores.feast.features import FeastFeatures


class OnlineRead(ABC):
    """How one pattern's online values are read."""

    def __init__(self, features: FeastFeatures) -> None:
        self.features = features

    @abstractmethod
    def read(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        at: datetime,
        stamps: dict[str, list[int]] | None = None,
    ) -> dict[str, list[Any]]:
        """Each reference's column (``view__feature``) for rows that hold their join keys;
        ``stamps``, when given, receives each view's event time per row in nanoseconds (0: no
        value)."""


class FeastOnlineRead(OnlineRead):
    """Feast's own online read (any online store), with the TTL rule applied to its answer."""

    def __init__(self, features: FeastFeatures) -> None:
        super().__init__(features)
        self._ttls: dict[str, int] = {}

    def read(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        at: datetime,
        stamps: dict[str, list[int]] | None = None,
    ) -> dict[str, list[Any]]:
        stamped = self._stamped(rows, references)
        at_nanos = epoch_nanos(at)
        out: dict[str, list[Any]] = {}
        for column in FeatureView.columns(references):
            if stamps is not None:
                stamps.setdefault(
                    column.split("__", 1)[0],
                    [stamp if value is not None else 0 for value, stamp in stamped[column]],
                )
            ttl = self._ttl_nanos(column)
            oldest = max(1, at_nanos - ttl) if ttl else 1
            out[column] = [
                decode(value) if value is not None and oldest <= stamp <= at_nanos else None
                for value, stamp in stamped[column]
            ]
        return out

    def _ttl_nanos(self, column: str) -> int:
        """The TTL of a column's view in nanoseconds (0: never expires), cached."""
        if column not in self._ttls:
            view = self.features.views()[column.split("__", 1)[0]]
            self._ttls[column] = ttl_nanos(view.ttl)
        return self._ttls[column]

    def _stamped(self, rows: list[dict[str, Any]], references: list[str]) -> Stamped:
        """(value proto, event time in nanoseconds) per column and row, through Feast's read."""
        columns = set(FeatureView.columns(references))
        stamped: Stamped = {c: [] for c in columns}
        if not rows:
            return stamped
        with self.features.store.errors():
            response = self.features.fs.get_online_features(
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


class RedisOnlineRead(OnlineRead):
    """Feast's Redis hashes read directly: one HMGET per entity, all of them written to Redis
    in one buffer and answered in one round trip, decoded column by column (see
    ``online_redis``)."""

    def __init__(self, features: FeastFeatures, client: Any) -> None:
        super().__init__(features)
        self.client = client
        self._plans: dict[tuple[str, ...], list[ViewPlan]] = {}

    def read(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        at: datetime,
        stamps: dict[str, list[int]] | None = None,
    ) -> dict[str, list[Any]]:
        plans = self._plan(references)
        with self.features.store.redis_errors():
            return read_online(self.client, rows, plans, epoch_nanos(at), stamps)

    def _plan(self, references: list[str]) -> list[ViewPlan]:
        """The read plan for these references, cached per request shape."""
        wanted = tuple(references)
        if wanted not in self._plans:
            fs = self.features.fs
            self._plans[wanted] = read_plan(
                self.features.views(),
                references,
                fs.project,
                fs.config.entity_key_serialization_version,
            )
        return self._plans[wanted]


class PackedOnlineRead(OnlineRead):
    """The pattern's packed layout (see ``packed``): one MGET of one string per entity and
    entity key shape, all parsed at once; entities not packed read Feast's hashes."""

    def __init__(self, features: FeastFeatures, client: Any, layouts: list[PackedLayout]) -> None:
        super().__init__(features)
        self.client = client
        self.layouts = layouts
        self._reads: dict[tuple[str, ...], list[PackedRead]] = {}

    def read(
        self,
        rows: list[dict[str, Any]],
        references: list[str],
        at: datetime,
        stamps: dict[str, list[int]] | None = None,
    ) -> dict[str, list[Any]]:
        order = [reference.replace(":", "__", 1) for reference in references]
        wanted = tuple(references)
        if wanted not in self._reads:
            self._reads[wanted] = read_request(self.layouts, self.features.views(), references)
        with self.features.store.redis_errors():
            return read_packed(
                self.client, rows, self._reads[wanted], order, epoch_nanos(at), stamps
            )

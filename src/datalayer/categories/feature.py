"""The feature contract: low-latency features for models and point-in-time training sets.

Guarantees every implementation keeps:
- ``online`` and ``historical`` return the same value for the same entity, feature and instant:
  a value older than its feature view's TTL is missing in both.
- ``historical`` is point-in-time correct: for each entity row it uses the latest feature row
  at or before the row's event timestamp and within the TTL, never a later one.
- ``materialize`` copies offline values into the online store in bounded memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from datalayer.patterns import PatternConfig


class FeaturePattern(PatternConfig):
    """A Feast feature service, or an explicit list of ``view:feature`` references."""

    accessor: ClassVar[str] = "features"

    category: Literal["feature"]
    feature_service: str | None = None
    features: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> FeaturePattern:
        if bool(self.feature_service) == bool(self.features):
            raise ValueError("set exactly one of feature_service or features")
        return self

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def summary(self) -> str:
        if self.feature_service:
            return f"feature service '{self.feature_service}'"
        return f"features {', '.join(self.features)}"


class FeatureView(ABC):
    """One feature pattern bound to its feature store.

    Columns are named ``view__feature``; ``features`` narrows a read to some ``view:feature``
    references of the pattern.
    """

    def __init__(self, pattern: FeaturePattern) -> None:
        self.pattern = pattern

    @abstractmethod
    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
    ) -> dict[str, list[Any]]:
        """Latest values for each entity row; values older than their view's TTL are None."""

    @abstractmethod
    def online_df(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
    ) -> Any:
        """``online`` as a pandas DataFrame."""

    @abstractmethod
    def historical(self, entity_df: Any, *, features: Sequence[str] | None = None) -> Any:
        """A point-in-time-correct training set, one row per entity row, in order."""

    @abstractmethod
    def materialize(
        self, start: datetime, end: datetime, on_view: Progress | None = None
    ) -> None: ...

    @abstractmethod
    def materialize_incremental(self, end: datetime, on_view: Progress | None = None) -> None: ...

    @abstractmethod
    def push(self, rows: Any, *, view: str | None = None) -> None:
        """Write fresh rows of a streaming view, online (and offline)."""


#: Called as (view being materialized, views done, views in all).
Progress = Callable[[str, int, int], None]

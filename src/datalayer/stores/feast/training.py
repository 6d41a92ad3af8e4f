"""Training sets: Feast's ``get_historical_features``, or the same join on parquet sources by
per-file indexes (see ``training_parquet``).

Both return the entity DataFrame's columns (event times as UTC), then ``view__feature`` per
reference, one row per entity row in its order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from datalayer.categories.feature import TIMESTAMP, FeatureView
from datalayer.stores.feast.environment import quiet
from datalayer.stores.feast.training_parquet import historical_parquet

if TYPE_CHECKING:
    from datalayer.stores.feast.features import FeastFeatures


class TrainingSet(ABC):
    """How one pattern's point-in-time joins are built."""

    def __init__(self, features: FeastFeatures) -> None:
        self.features = features

    @abstractmethod
    def build(self, entity_df: Any, references: list[str]) -> Any:
        """The training set of a checked entity DataFrame (left as it was)."""


class FeastTrainingSet(TrainingSet):
    """Feast's own point-in-time join (any offline store)."""

    def build(self, entity_df: Any, references: list[str]) -> Any:
        import pandas as pd

        frame = entity_df.copy()
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        frame["__row"] = range(len(frame))
        with self.features.store.errors(), quiet():
            job = self.features.fs.get_historical_features(
                entity_df=frame, features=references, full_feature_names=True
            )
            result = job.to_df()
        result = result.sort_values("__row").drop(columns="__row").reset_index(drop=True)
        result[TIMESTAMP] = pd.to_datetime(result[TIMESTAMP], utc=True)
        return result[[*entity_df.columns, *FeatureView.columns(references)]]


class ParquetTrainingSet(TrainingSet):
    """The same join on parquet sources, through the store's kept file indexes."""

    def build(self, entity_df: Any, references: list[str]) -> Any:
        features = self.features
        with features.store.errors():
            return historical_parquet(
                entity_df,
                features.views(),
                references,
                features.store.parquet_indexes,
                features.store.repo,
            )

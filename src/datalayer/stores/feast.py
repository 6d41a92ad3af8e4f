"""``feast``: the feature contract on a Feast feature repository.

The registry accepts and checks this store type now; connecting arrives with the features issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from datalayer.errors import NotImplementedYet
from datalayer.stores.base import Store, StoreConfig
from datalayer.validators import Name


class FeastConfig(StoreConfig):
    """A Feast repo folder (relative to the registry) and which of its profiles to use."""

    serves: ClassVar[frozenset[str]] = frozenset({"feature"})
    extra: ClassVar[str | None] = "feast"

    type: Literal["feast"]
    repo: str = "feature_repo"
    profile: Name = "local"

    def target(self) -> str:
        return f"{self.repo} ({self.profile})"

    def connect(self, name: str, base_dir: Path) -> Store:
        raise NotImplementedYet(
            f"store '{name}': type 'feast' is accepted by the registry but not connected yet"
        )

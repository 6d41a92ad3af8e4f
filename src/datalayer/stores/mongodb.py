"""``mongodb``: the document contract on MongoDB (pymongo).

The registry accepts and checks this store type now; connecting arrives with the MongoDB issue.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from datalayer.errors import NotImplementedYet, redact
from datalayer.stores.base import Store, StoreConfig


class MongoDBConfig(StoreConfig):
    """A MongoDB URL (``mongodb://user:pass@host:port``) and the database to use."""

    serves: ClassVar[frozenset[str]] = frozenset({"document"})
    extra: ClassVar[str | None] = "mongodb"

    type: Literal["mongodb"]
    url: str = Field(pattern=r"^mongodb(\+srv)?://")
    database: str = Field(default="datalayer", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    server_selection_timeout_ms: int = Field(default=5000, ge=100)

    def target(self) -> str:
        return f"{redact(self.url)} db={self.database}"

    def connect(self, name: str, base_dir: Path) -> Store:
        raise NotImplementedYet(
            f"store '{name}': type 'mongodb' is accepted by the registry but not connected yet; "
            "use the embedded-documents store type (profile 'local') for now"
        )

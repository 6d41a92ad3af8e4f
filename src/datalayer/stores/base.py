"""What every store type provides: a config model, and a connected store serving patterns."""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from datalayer.errors import (
    DataLayerError,
    MissingDriver,
    StoreLabel,
    StoreTimeout,
    StoreUnavailable,
    redact,
)
from datalayer.patterns import PatternConfig
from datalayer.resilience import Guard, ResilienceConfig


class StoreConfig(BaseModel):
    """Base of a store entry in a profile; subclasses set ``type: Literal[...]``."""

    model_config = ConfigDict(extra="forbid")

    #: Categories a third-party store type serves (built-ins are in ``config.store_types``).
    serves: ClassVar[frozenset[str]] = frozenset()

    type: str
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)

    def target(self) -> str:
        """Where the store lives, for humans; any password redacted."""
        return redact(str(self.model_dump(exclude={"type", "resilience"})))

    @abstractmethod
    def connect(self, name: str, base_dir: Path) -> Store[Any, Any]:
        """Build the store; ``base_dir`` is the registry's folder, for relative paths."""

    def serving(self, base_dir: Path) -> str | None:
        """Which of the store's paths serve its patterns, when it has more than one (for
        ``describe``); None when there is nothing to say."""
        return None

    def verify(self, base_dir: Path) -> tuple[str, str] | None:
        """What is wrong with the files this config points at (``validate`` checks it without
        connecting): ``(key, problem)``, or None when nothing is."""
        return None


PatternT = TypeVar("PatternT", bound=PatternConfig)
HandleT = TypeVar("HandleT")


class Store(ABC, Generic[PatternT, HandleT]):
    """A connected store: hands out one contract object (``HandleT``) per pattern of the
    category it serves (``PatternT``); the facade checks the category before it asks."""

    def __init__(self, name: str, config: StoreConfig) -> None:
        self.name = name
        self.config = config
        self.guard = Guard(self.label, name, config.resilience)

    @property
    def label(self) -> StoreLabel:
        """How errors name this store; the errors raised with it keep ``name`` as ``.store``."""
        return StoreLabel(
            f"store '{self.name}' ({self.config.type} at {self.config.target()})", self.name
        )

    @abstractmethod
    def handle(self, pattern: PatternT) -> HandleT:
        """The contract object (table, stream, collection, namespace) for ``pattern``."""

    def attach(self, patterns: list[PatternConfig]) -> None:
        """Told, when it connects, every pattern of the registry on this store: one whose
        writes serve other patterns than the one written needs to know them."""
        return None

    @abstractmethod
    def apply(self, patterns: list[PatternT]) -> list[str]:
        """Create what the patterns need (idempotent); returns what was done, for humans."""

    @abstractmethod
    def ping(self) -> None:
        """One real round trip; raises ``StoreUnavailable`` when the store does not answer."""

    def problem(self) -> str | None:
        """What the driver last said about reaching the server (for ``doctor``, when a check
        gets no answer in time); None when it said nothing."""
        return None

    def preload(self) -> None:
        """Import what reaching the store needs. ``doctor`` calls it in the calling thread,
        untimed: a timed thread given up on in the middle of an import can abort the
        interpreter when it exits."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store may not be used afterwards."""


ErrorClasses = tuple[type[BaseException], ...]


@contextmanager
def classified(
    label: StoreLabel, unavailable: ErrorClasses, failed: ErrorClasses, timeouts: ErrorClasses = ()
) -> Iterator[None]:
    """A driver's errors as datalayer's, naming the store: ``timeouts`` as ``StoreTimeout``,
    ``unavailable`` ones (the store did not answer: retrying later may work) as
    ``StoreUnavailable``, other ``failed`` ones as ``DataLayerError``; the driver's error stays
    the cause, and no password is printed."""
    try:
        yield
    except DataLayerError:
        raise
    except timeouts as exc:
        raise StoreTimeout(f"{label} did not answer in time: {exc}", store=label.name) from exc
    except unavailable as exc:
        raise StoreUnavailable(f"{label} is unavailable: {exc}", store=label.name) from exc
    except failed as exc:
        raise DataLayerError(f"{label}: {exc}", store=label.name) from exc


def require_driver(module: str, extra: str, store_type: str) -> ModuleType:
    """Import a driver, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDriver(_missing(module, extra, store_type)) from exc


def require_installed(module: str, extra: str, store_type: str) -> None:
    """Like ``require_driver``, for a driver too slow to import before it is used."""
    if importlib.util.find_spec(module) is None:
        raise MissingDriver(_missing(module, extra, store_type))


def _missing(module: str, extra: str, store_type: str) -> str:
    return (
        f"store type '{store_type}' needs the '{module}' package, which is not installed: "
        f"pip install 'datalayer[{extra}]'"
    )

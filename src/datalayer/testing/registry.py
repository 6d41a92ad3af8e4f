"""Registry files for tests and benchmarks: one place that knows the file's outer shape."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def write_registry(
    folder: Path,
    profiles: Mapping[str, Mapping[str, Any]],
    patterns: Mapping[str, Any] | None = None,
    *,
    name: str = "datalayer.yaml",
) -> Path:
    """Write ``folder/name`` holding these profiles and patterns; returns its path."""
    file = folder / name
    registry = {"version": 1, "profiles": profiles, "patterns": patterns or {}}
    file.write_text(yaml.safe_dump(_plain(registry)))
    return file


def _plain(value: Any) -> Any:
    """Mappings as dicts and paths as strings, so safe_dump accepts what callers pass."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value

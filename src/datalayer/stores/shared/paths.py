"""Where a store's files live: relative paths are relative to the registry's folder."""

from __future__ import annotations

from pathlib import Path


def resolve_path(path: str, base_dir: Path) -> Path:
    """An embedded store's file: relative to the registry's folder, parent folders created."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = base_dir / file
    file.parent.mkdir(parents=True, exist_ok=True)
    return file


def migrations_folder(path: str | None, base_dir: Path) -> Path | None:
    """A store's Alembic folder, relative to the registry's folder."""
    if path is None:
        return None
    folder = Path(path).expanduser()
    return folder if folder.is_absolute() else base_dir / folder

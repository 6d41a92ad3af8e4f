"""The registry file: its models, its loader, and the table of store types."""

from __future__ import annotations

from datalayer.config.loader import (
    DEFAULT_CONFIG,
    DEFAULT_PROFILE,
    Registry,
    config_path,
    load,
    profile_name,
)

__all__ = ["DEFAULT_CONFIG", "DEFAULT_PROFILE", "Registry", "config_path", "load", "profile_name"]

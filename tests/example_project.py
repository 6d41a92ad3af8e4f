"""The example project at the repository root, copied for a test that applies or changes it."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def copy_example(folder: Path, *, migrations: bool = False) -> Path:
    """Copy datalayer.yaml and feature_repo/ (without its data) into ``folder``, and
    migrations/ if asked; returns the copied registry, so .datalayer/ lands under ``folder``."""
    registry = folder / "datalayer.yaml"
    shutil.copy(ROOT / "datalayer.yaml", registry)
    shutil.copytree(
        ROOT / "feature_repo", folder / "feature_repo", ignore=shutil.ignore_patterns("data")
    )
    if migrations:
        shutil.copytree(ROOT / "migrations", folder / "migrations")
    return registry


def logging_example(
    folder: Path,
    log: dict[str, Any] | None = None,
    stream: dict[str, Any] | None = None,
    *,
    services: bool = False,
) -> Path:
    """The example registry copied into ``folder`` with service_features logging (``log``,
    default to ``feature_reads``) to a ``feature_reads`` stream of its own topic (or
    ``stream``); with ``services``, a Feast project of its own too (tests share servers)."""
    import uuid

    import yaml

    registry_file = copy_example(folder)
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["feature_reads"] = stream or {
        "category": "streaming",
        "store": "events",
        "topic": f"feature-reads-{uuid.uuid4().hex[:8]}",
        "partitions": 2,
    }
    registry["patterns"]["service_features"]["log"] = log or {"to": "feature_reads"}
    if services:
        registry["profiles"]["services"]["features"]["project"] = f"t{uuid.uuid4().hex[:10]}"
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    return registry_file


def materialized(registry: Path, end: datetime, profile: str = "local") -> Path:
    """Apply ``registry``, write the example feature data ending at ``end`` and materialize
    its last three days: the online store as a model service would find it."""
    import datalayer
    from datalayer.examples.features import load_example_features

    with datalayer.open(registry, profile) as dl:
        dl.apply()
        load_example_features(dl, end=end)
        dl.features("service_features").materialize(end - timedelta(days=3), end)
    return registry


def example_entity_rows() -> list[dict[str, str]]:
    """One row per sample service with an account, then an entity nothing knows."""
    from datalayer.examples.alerting import sample_accounts, sample_services

    accounts = sample_accounts()
    return [
        {"service_id": s.service_id, "account_id": accounts[i % len(accounts)].account_id}
        for i, s in enumerate(sample_services())
    ] + [{"service_id": "svc-missing", "account_id": "acct-missing"}]

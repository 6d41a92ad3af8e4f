"""Registering a new pattern is config only: a schema, an entry, validate, apply, use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import datalayer
from datalayer import PayloadValidationError
from tests.example_project import copy_example

SCHEMAS = """
from datetime import datetime
from typing import Literal
from pydantic import BaseModel, Field


class Deployment(BaseModel):
    deployment_id: str
    service_id: str
    version: str
    status: Literal["running", "done", "failed"]
    started_at: datetime


class DeployEvent(BaseModel):
    deployment_id: str
    service_id: str
    step: str


class Runbook(BaseModel):
    runbook_id: str
    service_id: str
    steps: list[str]
    owners: dict[str, str] = Field(default_factory=dict)


class RateLimit(BaseModel):
    remaining: int = Field(ge=0)
"""

NEW_PATTERNS = """
  deployments:
    category: transactional
    store: sql
    table: deployments
    key: deployment_id
    indexes: [service_id]
    schema: deploy_schemas:Deployment
  deploy_events:
    category: streaming
    store: events
    topic: deploy.events
    partitions: 2
    key: service_id
    schema: deploy_schemas:DeployEvent
    dead_letter: deploy.events.dlq
  runbooks:
    category: document
    store: docs
    collection: runbooks
    key: runbook_id
    indexes: [service_id]
    schema: deploy_schemas:Runbook
  rate_limits:
    category: key-value
    store: cache
    ttl: 1m
    schema: deploy_schemas:RateLimit
  deploy_features:
    category: feature
    store: features
    features: ["service_alert_counts:alerts_1h", "service_incident_history:open_incidents"]
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datalayer.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(cwd)},
    )


def test_a_new_pattern_of_each_category_needs_only_config_and_a_schema(tmp_path: Path) -> None:
    registry = copy_example(tmp_path)
    (tmp_path / "deploy_schemas.py").write_text(textwrap.dedent(SCHEMAS))
    registry.write_text(registry.read_text() + NEW_PATTERNS)

    validated = cli("validate", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "14 patterns" in validated.stdout
    described = cli("describe", cwd=tmp_path)
    for name in ("deployments", "deploy_events", "runbooks", "rate_limits", "deploy_features"):
        assert name in described.stdout
    applied = cli("apply", cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "table 'deployments' created" in applied.stdout
    assert "topic 'deploy.events' created (2 partitions)" in applied.stdout

    with datalayer.open(registry, "local") as dl:
        deployments = dl.transactional("deployments")
        deployments.put(
            {
                "deployment_id": "d1",
                "service_id": "svc-01",
                "version": "1.2.0",
                "status": "running",
                "started_at": "2026-02-01T10:00:00Z",
            }
        )
        assert deployments.query({"service_id": "svc-01"})[0]["version"] == "1.2.0"
        with pytest.raises(PayloadValidationError, match="status"):
            deployments.put(
                {
                    "deployment_id": "d2",
                    "service_id": "s",
                    "version": "1",
                    "status": "?",
                    "started_at": "2026-02-01T10:00:00Z",
                }
            )

        events = dl.stream("deploy_events")
        events.publish({"deployment_id": "d1", "service_id": "svc-01", "step": "canary"})
        [message] = list(events.consume("deploy-watcher", idle_timeout=0.5))
        assert message.value["step"] == "canary" and message.key == "svc-01"

        runbooks = dl.documents("runbooks")
        runbooks.put({"runbook_id": "r1", "service_id": "svc-01", "steps": ["drain", "restart"]})
        runbooks.update("r1", push={"steps": "verify"})
        assert runbooks.find({"service_id": "svc-01"})[0]["steps"] == ["drain", "restart", "verify"]

        limits = dl.kv("rate_limits")
        limits.set("svc-01", {"remaining": 10})
        assert limits.get("svc-01") == {"remaining": 10}
        remaining = limits.ttl("svc-01")
        assert remaining is not None and remaining <= 60

        served = dl.features("deploy_features").online([{"service_id": "svc-01"}])
        assert list(served) == [
            "service_id",
            "service_alert_counts__alerts_1h",
            "service_incident_history__open_incidents",
        ]

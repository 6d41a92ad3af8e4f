"""Payload schemas of the alerting domain, and a seeded generator of realistic sample data."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class Account(BaseModel):
    """A customer account owning services (transactional)."""

    account_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    plan: Literal["free", "team", "enterprise"]
    created_at: datetime


class Service(BaseModel):
    """A monitored service (transactional)."""

    service_id: str = Field(min_length=1, max_length=64)
    account_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    team: str
    tier: Literal["gold", "silver", "bronze"]
    created_at: datetime


class Alert(BaseModel):
    """One alert fired by a monitor (streaming, keyed by service)."""

    alert_id: str = Field(min_length=1)
    service_id: str = Field(min_length=1)
    fingerprint: str = Field(min_length=1, description="what fired: same fingerprint, same problem")
    severity: Severity
    message: str
    occurred_at: datetime
    labels: dict[str, str] = Field(default_factory=dict)


class TimelineEntry(BaseModel):
    alert_id: str
    at: datetime
    severity: Severity
    message: str


class Incident(BaseModel):
    """Alerts grouped into one problem, with their timeline (document)."""

    incident_id: str
    service_id: str
    fingerprint: str
    status: Literal["open", "resolved"] = "open"
    severity: Severity
    opened_at: datetime
    updated_at: datetime
    alert_count: int = Field(ge=1)
    timeline: list[TimelineEntry]


class GroupingWindow(BaseModel):
    """The open incident for one (service, fingerprint), kept while alerts keep coming (key-value)."""

    incident_id: str
    last_seen: datetime


class GroupingLabel(BaseModel):
    """What came true after a logged read: the label of its ``row`` (streaming)."""

    request_id: str = Field(min_length=1)
    row: int = Field(default=0, ge=0)
    label: int
    observed_at: datetime


_TEAMS = ["payments", "search", "identity", "platform"]
_FINGERPRINTS = {
    "cpu_high": "CPU above 90% for 5 minutes",
    "latency_p99": "p99 latency above SLO",
    "error_rate": "5xx rate above 2%",
    "disk_full": "disk usage above 95%",
}
EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def sample_accounts(count: int = 3) -> list[Account]:
    plans: list[Literal["free", "team", "enterprise"]] = ["enterprise", "team", "free"]
    return [
        Account(
            account_id=f"acct-{i + 1}",
            name=f"Account {i + 1}",
            plan=plans[i % len(plans)],
            created_at=EPOCH - timedelta(days=365 - i),
        )
        for i in range(count)
    ]


def sample_services(count: int = 8, accounts: int = 3) -> list[Service]:
    tiers: list[Literal["gold", "silver", "bronze"]] = ["gold", "silver", "bronze"]
    return [
        Service(
            service_id=f"svc-{i + 1:02d}",
            account_id=f"acct-{i % accounts + 1}",
            name=f"{_TEAMS[i % len(_TEAMS)]}-api-{i + 1}",
            team=_TEAMS[i % len(_TEAMS)],
            tier=tiers[i % len(tiers)],
            created_at=EPOCH - timedelta(days=200 - i),
        )
        for i in range(count)
    ]


def sample_alerts(
    services: list[Service], count: int = 240, seed: int = 7, unknown_services: int = 3
) -> list[Alert]:
    """Bursts of alerts per (service, fingerprint) separated by quiet gaps, in time order.

    ``unknown_services`` alerts name a service that does not exist: the consumer cannot handle
    them, so they end on the dead-letter topic.
    """
    rng = random.Random(seed)
    clocks: dict[tuple[str, str], datetime] = {}
    alerts = []
    for i in range(count - unknown_services):
        service = rng.choice(services)
        fingerprint = rng.choice(list(_FINGERPRINTS))
        slot = (service.service_id, fingerprint)
        gap = rng.choice([1, 2, 3, 4]) if rng.random() < 0.8 else rng.choice([20, 45, 90])
        clocks[slot] = clocks.get(slot, EPOCH + timedelta(minutes=rng.randint(0, 60))) + timedelta(
            minutes=gap
        )
        levels: list[Severity] = ["info", "warning", "critical"]
        severity = rng.choices(levels, weights=[2, 5, 2])[0]
        alerts.append(
            Alert(
                alert_id=f"al-{i + 1:05d}",
                service_id=service.service_id,
                fingerprint=fingerprint,
                severity=severity,
                message=_FINGERPRINTS[fingerprint],
                occurred_at=clocks[slot],
                labels={"team": service.team, "region": rng.choice(["eu-west", "us-east"])},
            )
        )
    for j in range(unknown_services):
        alerts.append(
            Alert(
                alert_id=f"al-x{j + 1:04d}",
                service_id="svc-unknown",
                fingerprint="cpu_high",
                severity="warning",
                message=_FINGERPRINTS["cpu_high"],
                occurred_at=EPOCH + timedelta(minutes=30 + j),
            )
        )
    alerts.sort(key=lambda a: (a.occurred_at, a.alert_id))
    return alerts

"""Seeded, reproducible feature data for the alerting domain's Feast views.

Hourly alert counts, six-hourly incident history and daily account profiles, ending at a given
instant, written where each profile's offline store reads them: parquet files for ``local``,
PostgreSQL tables for ``services``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datalayer.examples.alerting import sample_accounts, sample_services

PLAN_RANK = {"free": 0, "team": 1, "enterprise": 2}


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in ("event_timestamp", "created"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    return frame


def feature_frames(end: datetime, days: int = 3, seed: int = 11) -> dict[str, Any]:
    """One DataFrame per feature view, with rows up to ``end`` (rounded down to the hour)."""
    rng = random.Random(seed)
    end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = days * 24
    services = sample_services()

    counts, history, stream = [], [], []
    for service in services:
        window: list[int] = []
        incidents = rng.randint(0, 4)
        for h in range(hours):
            at = end - timedelta(hours=hours - 1 - h)
            alerts = max(0, int(rng.gauss(6 if service.tier == "gold" else 3, 2)))
            window = [*window[-23:], alerts]
            counts.append(
                {
                    "service_id": service.service_id,
                    "alerts_1h": alerts,
                    "alerts_24h": sum(window),
                    "critical_1h": rng.randint(0, alerts),
                    "error_rate": round(rng.random() * 0.05, 4),
                    "event_timestamp": at,
                    "created": at + timedelta(minutes=1),
                }
            )
            if h % 6 == 5:
                incidents = max(0, incidents + rng.choice([-1, 0, 0, 1]))
                history.append(
                    {
                        "service_id": service.service_id,
                        "incidents_7d": incidents,
                        "mean_alerts_per_incident": round(rng.uniform(1, 12), 3),
                        "open_incidents": rng.randint(0, incidents),
                        "event_timestamp": at,
                        "created": at + timedelta(minutes=5),
                    }
                )
        stream.append(
            {
                "service_id": service.service_id,
                "last_severity_rank": rng.randint(0, 2),
                "alerts_seen": rng.randint(1, 50),
                "event_timestamp": end - timedelta(hours=3),
                "created": end - timedelta(hours=3),
            }
        )
    return {
        "service_alert_counts": _frame(counts),
        "service_incident_history": _frame(history),
        "account_profile": _frame(_account_profiles(end, days, rng)),
        "service_alert_stream": _frame(stream),
    }


def _account_profiles(end: datetime, days: int, rng: random.Random) -> list[dict[str, Any]]:
    """One row per account and day: its plan, its services and what it spends."""
    services = sample_services()
    profiles = []
    for account in sample_accounts():
        owned = sum(s.account_id == account.account_id for s in services)
        for d in range(days):
            at = end - timedelta(days=days - 1 - d)
            profiles.append(
                {
                    "account_id": account.account_id,
                    "plan_rank": PLAN_RANK[account.plan],
                    "services_count": owned,
                    "monthly_spend": round(
                        100 * (1 + PLAN_RANK[account.plan]) * owned * rng.uniform(0.8, 1.2), 2
                    ),
                    "event_timestamp": at,
                    "created": at + timedelta(minutes=2),
                }
            )
    return profiles


def write_parquet(frames: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)


def write_postgres(frames: dict[str, Any], url: str) -> None:
    import sqlalchemy as sa

    from datalayer.stores.shared.postgres_urls import sqlalchemy_url

    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        for name, frame in frames.items():
            frame.to_sql(f"feast_{name}", engine, if_exists="replace", index=False)
    finally:
        engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def load_example_features(
    dl: Any, pattern: str = "service_features", end: datetime | None = None
) -> datetime:
    """Write the example feature data where the pattern's Feast profile reads it; returns its end."""
    from datalayer.stores.feast.store import FeastStore

    store = dl.store(dl.pattern(pattern).store)
    if not isinstance(store, FeastStore):
        raise TypeError(f"pattern '{pattern}' is not on a Feast store")
    end = (end or now()).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    frames = feature_frames(end)
    if store.offline_postgres_url:
        write_postgres(frames, store.offline_postgres_url)
    else:
        write_parquet(frames, store.repo / "data")
    return end

"""Feast definitions of the alerting domain: what the alert-grouping model reads.

The same views serve both profiles; only their batch sources differ: parquet files next to this
file for ``local`` (DuckDB offline store), PostgreSQL tables for ``services``. datalayer sets
``DATALAYER_FEAST_PROFILE`` before Feast parses this module.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import DataSource
from feast.types import Float64, Int64, String

PROFILE = os.environ.get("DATALAYER_FEAST_PROFILE", "local")
DATA = Path(__file__).resolve().parent / "data"

service = Entity(name="service", join_keys=["service_id"], value_type=ValueType.STRING)
account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)


def batch_source(name: str) -> DataSource:
    """The offline table of one view: a parquet file (local) or a PostgreSQL table (services)."""
    if PROFILE == "services":
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
            PostgreSQLSource,
        )

        return PostgreSQLSource(
            name=f"{name}_source",
            table=f"feast_{name}",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
    return FileSource(
        name=f"{name}_source",
        path=str(DATA / f"{name}.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )


service_alert_counts = FeatureView(
    name="service_alert_counts",
    entities=[service],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="service_id", dtype=String),
        Field(name="alerts_1h", dtype=Int64),
        Field(name="alerts_24h", dtype=Int64),
        Field(name="critical_1h", dtype=Int64),
        Field(name="error_rate", dtype=Float64),
    ],
    source=batch_source("service_alert_counts"),
    description="Alert counts per service over sliding windows, snapshotted hourly.",
)

service_incident_history = FeatureView(
    name="service_incident_history",
    entities=[service],
    ttl=timedelta(days=2),
    schema=[
        Field(name="service_id", dtype=String),
        Field(name="incidents_7d", dtype=Int64),
        Field(name="mean_alerts_per_incident", dtype=Float64),
        Field(name="open_incidents", dtype=Int64),
    ],
    source=batch_source("service_incident_history"),
    description="Incident history per service, snapshotted every six hours.",
)

account_profile = FeatureView(
    name="account_profile",
    entities=[account],
    ttl=timedelta(days=30),
    schema=[
        Field(name="account_id", dtype=String),
        Field(name="plan_rank", dtype=Int64),
        Field(name="services_count", dtype=Int64),
        Field(name="monthly_spend", dtype=Float64),
    ],
    source=batch_source("account_profile"),
    description="Account tier and size, snapshotted daily.",
)

service_alert_stream_push = PushSource(
    name="service_alert_stream_push", batch_source=batch_source("service_alert_stream")
)

service_alert_stream = FeatureView(
    name="service_alert_stream",
    entities=[service],
    ttl=timedelta(hours=1),
    schema=[
        Field(name="service_id", dtype=String),
        Field(name="last_severity_rank", dtype=Int64),
        Field(name="alerts_seen", dtype=Int64),
    ],
    source=service_alert_stream_push,
    description="Updated by the alerts consumer through the push source, a moment after each alert.",
)

alert_grouping_v1 = FeatureService(
    name="alert_grouping_v1",
    features=[service_alert_counts, service_incident_history, account_profile, service_alert_stream],
    description="Everything the alert-grouping model reads for one incoming alert.",
)

alert_grouping_v2 = FeatureService(
    name="alert_grouping_v2",
    features=[service_alert_counts, service_incident_history, service_alert_stream],
    description="The next grouping model's features: per service only, no account profile.",
)

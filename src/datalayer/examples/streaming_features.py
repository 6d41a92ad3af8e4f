"""A consumer that keeps the streaming feature view fresh: each batch of alerts updates their
services' ``service_alert_stream`` features through Feast's push source in one push, a moment
after they are published."""

from __future__ import annotations

from datalayer.api import DataLayer
from datalayer.categories.streaming import MessageBatch
from datalayer.examples.alerting import SEVERITY_RANK, Alert


class AlertFeaturePusher:
    """Handler for ``dl.stream("alerts").process_batch``: one push of the features of every
    alert in the batch (a service's newest alert wins online)."""

    def __init__(self, dl: DataLayer, pattern: str = "service_features") -> None:
        self.features = dl.features(pattern)
        self.seen: dict[str, int] = {}

    def __call__(self, batch: MessageBatch) -> None:
        alerts = [Alert.model_validate(value) for value in batch.values]
        unknown = sorted({a.service_id for a in alerts} - set(self.seen))
        if unknown:
            current = self.features.online(
                [{"service_id": s} for s in unknown], features=["service_alert_stream:alerts_seen"]
            )
            for service, seen in zip(
                unknown, current["service_alert_stream__alerts_seen"], strict=True
            ):
                self.seen[service] = seen or 0
        rows = []
        for alert in alerts:
            self.seen[alert.service_id] += 1
            rows.append(
                {
                    "service_id": alert.service_id,
                    "last_severity_rank": SEVERITY_RANK[alert.severity],
                    "alerts_seen": self.seen[alert.service_id],
                    "event_timestamp": alert.occurred_at,
                }
            )
        self.features.push(rows, view="service_alert_stream")

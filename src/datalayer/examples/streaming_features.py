"""A consumer that keeps the streaming feature view fresh: each alert updates its service's
``service_alert_stream`` features through Feast's push source, a moment after it is published."""

from __future__ import annotations

from datalayer.api import DataLayer
from datalayer.categories.streaming import Message
from datalayer.examples.alerting import SEVERITY_RANK, Alert


class AlertFeaturePusher:
    """Handler for ``dl.stream("alerts").process``: push the alert's service features."""

    def __init__(self, dl: DataLayer, pattern: str = "service_features") -> None:
        self.features = dl.features(pattern)
        self.seen: dict[str, int] = {}

    def __call__(self, message: Message) -> None:
        alert = Alert.model_validate(message.value)
        if alert.service_id not in self.seen:
            current = self.features.online(
                [{"service_id": alert.service_id}], features=["service_alert_stream:alerts_seen"]
            )
            self.seen[alert.service_id] = current["service_alert_stream__alerts_seen"][0] or 0
        self.seen[alert.service_id] += 1
        self.features.push(
            [
                {
                    "service_id": alert.service_id,
                    "last_severity_rank": SEVERITY_RANK[alert.severity],
                    "alerts_seen": self.seen[alert.service_id],
                    "event_timestamp": alert.occurred_at,
                }
            ],
            view="service_alert_stream",
        )

"""The main job: load the alerting domain, group a stream of alerts into incidents.

It touches every non-feature category the way a real service would: accounts and services as
transactional rows, alerts through a consumer group with retries and a dead-letter topic,
incidents as documents with a growing timeline, and grouping windows as keys with a TTL.
Re-running it gives the same result: it clears the incidents and windows it owns first, and
reads only the alerts it published itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datalayer.api import DataLayer
from datalayer.categories.streaming import Message
from datalayer.errors import NotFound
from datalayer.examples.alerting import (
    SEVERITY_RANK,
    Alert,
    GroupingLabel,
    GroupingWindow,
    Incident,
    TimelineEntry,
    sample_accounts,
    sample_alerts,
    sample_services,
)

#: Alerts of one (service, fingerprint) further apart than this open a new incident.
GROUPING_GAP = timedelta(minutes=10)
#: The steps ``run`` reports progress of, and how to name them to a person.
STEPS = {
    "publish": "publishing alerts",
    "group": "grouping into incidents",
    "materialize": "materializing feature views",
    "model": "serving the model, logging, labelling",
}
#: Reads the model loop serves (each of every sample service).
MODEL_READS = 6


class UnknownService(NotFound):
    """An alert names a service the transactional store does not know."""


@dataclass
class Summary:
    accounts: int = 0
    services: int = 0
    published: int = 0
    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    incidents: int = 0
    windows: int = 0
    largest: list[dict[str, Any]] = field(default_factory=list)
    per_service: dict[str, int] = field(default_factory=dict)
    feature_views: int = 0
    incoming_alert: dict[str, Any] = field(default_factory=dict)
    online_features: dict[str, Any] = field(default_factory=dict)
    training_set: Any = None
    model: ModelRun | None = None


@dataclass
class ModelRun:
    """The model loop's outcome: where the model and its training set are, since when its
    reads were logged, and the fitted model's predict function."""

    name: str
    path: Path
    training_path: Path
    since: datetime
    reads: int
    labels: int
    predict: Callable[[Any], Any]


class AlertGrouper:
    """The consumer's handler: join an alert to its open incident or open a new one."""

    def __init__(self, dl: DataLayer) -> None:
        self.services = dl.transactional("services")
        self.incidents = dl.documents("incidents")
        self.windows = dl.kv("grouping_window")

    def __call__(self, message: Message) -> None:
        alert = Alert.model_validate(message.value)
        if self.services.get(alert.service_id) is None:
            raise UnknownService(
                f"alert {alert.alert_id} names unknown service '{alert.service_id}'"
            )
        window_key = f"{alert.service_id}:{alert.fingerprint}"
        window = self.windows.get(window_key)
        entry = TimelineEntry(
            alert_id=alert.alert_id,
            at=alert.occurred_at,
            severity=alert.severity,
            message=alert.message,
        )
        incident = None
        if window is not None:
            open_window = GroupingWindow.model_validate(window)
            if alert.occurred_at - open_window.last_seen <= GROUPING_GAP:
                incident = self.incidents.get(open_window.incident_id)
        if incident is None:
            incident_id = f"inc-{alert.alert_id}"
            self.incidents.put(
                Incident(
                    incident_id=incident_id,
                    service_id=alert.service_id,
                    fingerprint=alert.fingerprint,
                    severity=alert.severity,
                    opened_at=alert.occurred_at,
                    updated_at=alert.occurred_at,
                    alert_count=1,
                    timeline=[entry],
                )
            )
        else:
            incident_id = incident["incident_id"]
            if any(item["alert_id"] == alert.alert_id for item in incident["timeline"]):
                return  # redelivered: already grouped (at-least-once delivery)
            severity = max(incident["severity"], alert.severity, key=SEVERITY_RANK.__getitem__)
            self.incidents.update(
                incident_id,
                set={
                    "updated_at": alert.occurred_at,
                    "severity": severity,
                    "alert_count": incident["alert_count"] + 1,
                },
                push={"timeline": entry.model_dump(mode="json")},
            )
        self.windows.set(
            window_key, GroupingWindow(incident_id=incident_id, last_seen=alert.occurred_at)
        )


def run(
    dl: DataLayer,
    *,
    alert_count: int = 240,
    seed: int = 7,
    features: bool = True,
    model: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Summary:
    """Load the sample data, run the grouping consumer until every alert is settled, then
    serve features for an incoming alert and build a small training set; with ``model``,
    train the example model and serve it, logging its reads, predictions and labels."""
    report = on_progress or (lambda _step, _done, _total: None)
    summary = Summary()
    accounts, services = sample_accounts(), sample_services()
    alerts = sample_alerts(services, count=alert_count, seed=seed)

    with dl.transaction("accounts", "services"):
        summary.accounts = dl.transactional("accounts").put_many(accounts)
        summary.services = dl.transactional("services").put_many(services)
    service_ids = [s.service_id for s in services]
    window_keys = sorted({f"{a.service_id}:{a.fingerprint}" for a in alerts})
    _forget_earlier_runs(dl, service_ids, window_keys)
    _publish_and_group(dl, alerts, summary, report)

    found = dl.documents("incidents").find(
        {"service_id": {"$in": service_ids}}, sort=["-alert_count", "incident_id"]
    )
    summary.incidents = len(found)
    summary.largest = found[:5]
    for incident in found:
        summary.per_service[incident["service_id"]] = (
            summary.per_service.get(incident["service_id"], 0) + 1
        )
    summary.windows = sum(v is not None for v in dl.kv("grouping_window").mget(window_keys))
    if features:
        end = serve_and_train(dl, summary, report)
        if model:
            summary.model = model_loop(dl, end, seed, report)
    return summary


def _forget_logged_reads(dl: DataLayer, view: Any) -> None:
    """Land what an earlier run logged of the model's reads, then forget all of it: this run
    rewrites the example features, so those reads can no longer be rebuilt as they were
    served (the model loop's log is the quickstart's own, as its incidents are)."""
    from datalayer.categories.feature_log import land

    assert view.log is not None
    sinks = view.log_sinks(dl.registry.base_dir)
    stream = dl.stream(view.log.config.to)
    land(stream, view.pattern.name, sinks.reads, predictions=sinks.predictions, idle_timeout=1.0)
    sinks.clear()


def _forget_earlier_runs(dl: DataLayer, service_ids: list[str], window_keys: list[str]) -> None:
    """Drop the incidents and windows a previous run left, so a re-run groups the same way."""
    incidents, windows = dl.documents("incidents"), dl.kv("grouping_window")
    for old in incidents.find({"service_id": {"$in": service_ids}}):
        incidents.delete(old["incident_id"])
    for key in window_keys:
        windows.delete(key)


def _publish_and_group(
    dl: DataLayer,
    alerts: list[Alert],
    summary: Summary,
    report: Callable[[str, int, int], None],
) -> None:
    """Publish the alerts, then group them with a consumer of a new group from where they
    start, until each one is settled."""
    stream = dl.stream("alerts")
    start = stream.end_offsets()
    batch = 50
    for i in range(0, len(alerts), batch):
        summary.published += len(stream.publish_many(alerts[i : i + batch]))
        report("publish", summary.published, len(alerts))

    grouper = AlertGrouper(dl)
    seen: set[tuple[int, int]] = set()

    def handle(message: Message) -> None:
        seen.add((message.partition, message.offset))
        report("group", len(seen), len(alerts))
        grouper(message)

    result = stream.process(
        handle,
        group=f"quickstart-{uuid.uuid4().hex[:8]}",
        start=start,
        max_messages=len(alerts),
        idle_timeout=10.0,
    )
    summary.handled, summary.retried, summary.dead_lettered = (
        result.handled,
        result.retried,
        result.dead_lettered,
    )


def serve_and_train(
    dl: DataLayer, summary: Summary, report: Callable[[str, int, int], None]
) -> datetime:
    """What a model service and a training job do with the same features; returns the end
    of the example feature data."""
    import pandas as pd

    from datalayer.examples.features import load_example_features
    from datalayer.examples.streaming_features import AlertFeaturePusher

    view = dl.features("service_features")
    end = load_example_features(dl, end=datetime.now(UTC))

    def materialized(_view: str, done: int, total: int) -> None:
        summary.feature_views = total
        report("materialize", done, total)

    view.materialize(end - timedelta(days=3), end, on_view=materialized)

    stream = dl.stream("alerts")
    start = stream.end_offsets()
    services = dl.transactional("services")
    incoming = Alert(
        alert_id=f"al-live-{uuid.uuid4().hex[:6]}",
        service_id="svc-02",
        fingerprint="latency_p99",
        severity="critical",
        message="p99 latency above SLO",
        occurred_at=datetime.now(UTC),
    )
    stream.publish(incoming)
    stream.process_batch(
        AlertFeaturePusher(dl),
        group=f"quickstart-features-{uuid.uuid4().hex[:8]}",
        start=start,
        max_messages=1,
        idle_timeout=10.0,
    )
    service = services.get(incoming.service_id) or {}
    row = {"service_id": incoming.service_id, "account_id": service.get("account_id", "")}
    summary.incoming_alert = incoming.model_dump(mode="json")
    online = view.online([row])
    summary.online_features = {k: v[0] for k, v in online.items()}

    entity_df = pd.DataFrame(
        [
            {
                "service_id": s["service_id"],
                "account_id": s["account_id"],
                "event_timestamp": end - timedelta(hours=h),
            }
            for s in services.query(order_by="service_id")
            for h in (1, 12, 30)
        ]
    )
    summary.training_set = view.historical(entity_df)
    return end


def model_loop(
    dl: DataLayer, end: datetime, seed: int, report: Callable[[str, int, int], None]
) -> ModelRun:
    """Train the example model on a point-in-time training set, then serve it as a model
    service would: read features with a request id, predict, log the prediction; the labels
    arrive on their stream afterwards."""
    import random

    import pandas as pd

    from datalayer.examples import model as busy

    view = dl.features("model_features")
    _forget_logged_reads(dl, view)
    since = datetime.now(UTC)
    services = sample_services()
    training_set = busy.labelled(view.historical(busy.training_entities(services, end)))
    fitted = busy.train(training_set, seed=seed)
    folder = dl.registry.base_dir / busy.DEFAULT_PATH.parent
    path = busy.save(fitted, folder / busy.DEFAULT_PATH.name)
    training_path = folder / f"{busy.NAME}-{busy.VERSION}-training.parquet"
    training_set.to_parquet(training_path, index=False)

    def predict(frame: Any) -> Any:
        return busy.predicted(fitted, frame)

    rng, run = random.Random(seed), uuid.uuid4().hex[:8]
    rows = [{"service_id": s.service_id, "account_id": s.account_id} for s in services]
    labels = dl.stream("model_labels")
    for i in range(MODEL_READS):
        request_id = f"quickstart-{run}-{i}"
        served = view.online(rows, request_id=request_id, model=busy.NAME, version=busy.VERSION)
        view.log_prediction(
            request_id, predict(pd.DataFrame(served)), model=busy.NAME, version=busy.VERSION
        )
        labels.publish_many(
            GroupingLabel(
                request_id=request_id,
                row=j,
                label=busy.simulated_label(service, rng),
                observed_at=datetime.now(UTC),
            )
            for j, service in enumerate(services)
        )
        report("model", i + 1, MODEL_READS)
    if view.log is not None:
        view.log.flush()
    count = MODEL_READS * len(services)
    name = f"{busy.NAME} {busy.VERSION}"
    return ModelRun(name, path, training_path, since, MODEL_READS, count, predict)

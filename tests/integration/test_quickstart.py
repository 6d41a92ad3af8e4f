"""The main job on the embedded profile: every alert lands in exactly one incident."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import datalayer
from datalayer.cli import app
from datalayer.examples.alerting import sample_alerts, sample_services
from datalayer.examples.quickstart import GROUPING_GAP, run
from datalayer.testing.registry import write_registry
from tests.example_project import copy_example


def test_quickstart_groups_every_alert_once_and_reruns_identically(tmp_path: Path) -> None:
    copy_example(tmp_path)
    with datalayer.open(tmp_path / "datalayer.yaml", "local") as dl:
        dl.apply()
        first = run(dl, alert_count=120, seed=3)
        incidents = dl.documents("incidents").find(sort="incident_id")
        dead = list(dl.stream("alerts").dead_letters(idle_timeout=0.5))
        second = run(dl, alert_count=120, seed=3, features=False)
        again = dl.documents("incidents").find(sort="incident_id")

    alerts = sample_alerts(sample_services(), count=120, seed=3)
    known = [a for a in alerts if a.service_id != "svc-unknown"]
    assert first.published == 120 and first.handled == len(known)
    assert first.dead_lettered == 3 and first.retried == 6
    assert sorted(d.value["alert_id"] for d in dead) == sorted(
        a.alert_id for a in alerts if a.service_id == "svc-unknown"
    )
    assert first.accounts == 3 and first.services == 8

    grouped = [entry["alert_id"] for inc in incidents for entry in inc["timeline"]]
    assert sorted(grouped) == sorted(a.alert_id for a in known)
    for inc in incidents:
        times = [datetime.fromisoformat(e["at"]) for e in inc["timeline"]]
        assert times == sorted(times)
        assert all(b - a <= GROUPING_GAP for a, b in itertools.pairwise(times))
        assert inc["alert_count"] == len(inc["timeline"])
        assert {e["alert_id"][:3] for e in inc["timeline"]} == {"al-"}
    by_slot: dict[tuple[str, str], list[dict[str, object]]] = {}
    for inc in incidents:
        by_slot.setdefault((inc["service_id"], inc["fingerprint"]), []).append(inc)
    for slot_incidents in by_slot.values():
        ordered = sorted(slot_incidents, key=lambda i: str(i["opened_at"]))
        for before, after in itertools.pairwise(ordered):
            gap = datetime.fromisoformat(str(after["opened_at"])) - datetime.fromisoformat(
                str(before["updated_at"])
            )
            assert gap > GROUPING_GAP

    assert first.online_features["service_alert_stream__alerts_seen"] == 1
    assert first.online_features["service_alert_stream__last_severity_rank"] == 2
    assert first.online_features["service_alert_counts__alerts_1h"] is not None
    assert len(first.training_set) == 24 and first.feature_views == 4
    # the model loop: trained, saved, served with its reads and predictions logged, labelled
    assert first.model is not None and first.model.path.exists()
    assert (first.model.reads, first.model.labels) == (6, 48)
    assert len(first.model.predict(first.training_set)) == 24
    assert (second.handled, second.incidents, second.largest) == (
        first.handled,
        first.incidents,
        first.largest,
    )
    assert again == incidents


def test_both_profiles_group_the_same_alerts_into_the_same_incidents(
    tmp_path: Path,
    postgres_database: str,
    redis_url: str,
    kafka_bootstrap: str,
    mongodb_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = yaml.safe_load(copy_example(tmp_path, migrations=True).read_text())
    registry["profiles"]["services"]["features"]["project"] = f"q{uuid.uuid4().hex[:10]}"
    write_registry(tmp_path, registry["profiles"], registry["patterns"])
    monkeypatch.setenv("DATALAYER_POSTGRES_URL", postgres_database)
    monkeypatch.setenv("DATALAYER_REDIS_URL", redis_url)
    monkeypatch.setenv("DATALAYER_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("DATALAYER_MONGODB_URL", mongodb_url)

    outcomes = {}
    for profile in ("local", "services"):
        with datalayer.open(tmp_path / "datalayer.yaml", profile) as dl:
            dl.apply()
            summary = run(dl, alert_count=120, seed=5, features=False)
            incidents = dl.documents("incidents").find(
                {"service_id": {"$in": [s.service_id for s in sample_services()]}},
                sort="incident_id",
            )
        outcomes[profile] = (summary, incidents)
    assert outcomes["services"][0] == outcomes["local"][0]
    assert outcomes["services"][1] == outcomes["local"][1]
    assert outcomes["local"][0].dead_lettered == 3 and outcomes["local"][0].incidents > 10

    result = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--config",
            str(tmp_path / "datalayer.yaml"),
            "--profile",
            "services",
            "--alerts",
            "120",
            "--seed",
            "5",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "kafka" in result.output and "mongodb" in result.output and "postgres" in result.output
    assert f"{outcomes['local'][0].incidents} incidents" in result.output
    assert "online features for incoming alert" in result.output and "training set" in result.output
    # the model loop, evaluated on the servers: every served value agrees with training
    said = " ".join(result.output.split())
    assert "6 reads served with a request id, 48 predictions and 48 labels logged" in said
    assert "0 predictions differ; 0 of 576 served values disagree with training" in said
    report = tmp_path / ".datalayer" / "reports" / "model_features.html"
    assert f"report: {report}" in said or "report: .datalayer/reports/model_features.html" in said
    assert "online accuracy" in report.read_text()

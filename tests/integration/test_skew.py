"""``datalayer skew`` catches skew: untouched data agrees everywhere; an online-only write is
reported for exactly the entities and the feature it changed; a shifted distribution crosses
the PSI threshold; every threshold decides the exit status. ``datalayer evaluate`` joins the
logged predictions and the labels that came later: online against offline accuracy, and the
feature that explains the predictions that differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import datalayer
from datalayer.categories.feature_skew import FeatureSkew, _Distribution
from datalayer.examples.alerting import sample_services
from datalayer.stores.feast.store import FeastStore
from tests.example_project import example_entity_rows, logging_example, materialized

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LATER = T + timedelta(minutes=1)
SKEW = [sys.executable, "-m", "datalayer.cli", "skew", "--pattern", "service_features"]
CHANGED = ["svc-02", "svc-05"]


@pytest.fixture(params=["local", "services"])
def logged(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """The example registry whose service_features logs to a stream of its own, with feature
    data ending at T materialized, on each profile (services: the log lands in PostgreSQL)."""
    profile = request.param
    registry_file = logging_example(tmp_path, services=profile == "services")
    if profile == "services":
        for variable, fixture in (
            ("DATALAYER_POSTGRES_URL", "postgres_database"),
            ("DATALAYER_REDIS_URL", "redis_url"),
            ("DATALAYER_KAFKA_BOOTSTRAP", "kafka_bootstrap"),
            ("DATALAYER_MONGODB_URL", "mongodb_url"),
        ):
            monkeypatch.setenv(variable, request.getfixturevalue(fixture))
    return materialized(registry_file, T, profile), profile


def skew(logged: tuple[Path, str], *args: str) -> subprocess.CompletedProcess[str]:
    registry, profile = logged
    return subprocess.run(
        [*SKEW, "--config", str(registry), "--profile", profile, "--idle-timeout", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_skew_finds_exactly_what_an_online_only_write_changed(
    logged: tuple[Path, str], tmp_path: Path
) -> None:
    registry, profile = logged
    with datalayer.open(registry, profile) as dl:
        view = dl.features("service_features")
        view.push(  # the streaming view's values, online and offline
            [
                {
                    "service_id": s.service_id,
                    "last_severity_rank": i % 3,
                    "alerts_seen": i,
                    "event_timestamp": T - timedelta(minutes=10),
                }
                for i, s in enumerate(sample_services())
            ]
        )
        for i in range(3):
            view.online(example_entity_rows(), as_of=T, request_id=f"clean-{i}")
    clean = skew(logged, "--until", LATER.isoformat(), "--json", str(tmp_path / "clean.json"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    summary = json.loads((tmp_path / "clean.json").read_text())
    assert summary["passed"] and summary["rows"] == 3 * len(example_entity_rows())
    assert summary["reads"] == 3
    assert {
        f["mismatches"] + f["online_only"] + f["offline_only"] for f in summary["features"]
    } == {0}
    assert len(summary["features"]) == len(view.references())
    assert all(f["equal"] > 0 for f in summary["features"])  # compared, not all missing

    with datalayer.open(registry, profile) as dl:
        view = dl.features("service_features")
        now = view.online([{"service_id": s} for s in CHANGED], as_of=T, features=STREAM)
        view.push(
            [
                {
                    "service_id": service,
                    "last_severity_rank": rank,
                    "alerts_seen": seen + 100,  # the one feature that changes
                    "event_timestamp": T - timedelta(seconds=30),
                }
                for service, rank, seen in zip(
                    CHANGED,
                    now["service_alert_stream__last_severity_rank"],
                    now["service_alert_stream__alerts_seen"],
                    strict=True,
                )
            ],
            to="online",
        )
        for i in range(2):
            view.online(example_entity_rows(), as_of=LATER, request_id=f"skewed-{i}")
    skewed = skew(logged, "--since", LATER.isoformat(), "--json", str(tmp_path / "skew.json"))
    assert skewed.returncode == 2, skewed.stdout + skewed.stderr
    summary = json.loads((tmp_path / "skew.json").read_text())
    by_feature = {f["feature"]: f for f in summary["features"]}
    changed = by_feature.pop("service_alert_stream__alerts_seen")
    assert (changed["mismatches"], changed["online_only"], changed["offline_only"]) == (4, 0, 0)
    assert changed["largest_difference"] == 100
    assert sorted({e["entity"]["service_id"] for e in changed["examples"]}) == CHANGED
    assert all(e["online"] - e["offline"] == 100 for e in changed["examples"])
    assert all(
        f["mismatches"] + f["online_only"] + f["offline_only"] == 0 for f in by_feature.values()
    )
    assert summary["failures"] == [
        "service_alert_stream__alerts_seen: 4 of 18 rows disagree (22.2222% > 0.1000%)"
    ]
    assert "service_alert_stream__alerts_seen: 4 of 18 rows disagree" in skewed.stdout
    # a threshold the change stays under passes
    tolerant = skew(logged, "--since", LATER.isoformat(), "--max-mismatch", "0.25")
    assert tolerant.returncode == 0, tolerant.stdout + tolerant.stderr


STREAM = ["service_alert_stream:last_severity_rank", "service_alert_stream:alerts_seen"]


def test_a_shifted_distribution_crosses_the_psi_threshold(
    logged: tuple[Path, str], tmp_path: Path
) -> None:
    """Served values compared with a training set: the example's own training set passes,
    the same set with one feature shifted does not (PSI), and the report says which."""
    registry, profile = logged
    rows = example_entity_rows()[:-1]
    with datalayer.open(registry, profile) as dl:
        view = dl.features("service_features")
        served_spend = []
        for _ in range(6):
            served_spend += view.online(rows, as_of=T)["account_profile__monthly_spend"]
        training = view.historical(pd.DataFrame(rows * 6).assign(event_timestamp=T))
        instants = pd.DataFrame({"event_timestamp": [T - timedelta(hours=1), T]})
        over_range = view.historical(pd.DataFrame(rows).merge(instants, how="cross"))
    same = tmp_path / "training.parquet"
    training.to_parquet(same)
    shifted = tmp_path / "shifted.parquet"
    moved: Any = training.copy()
    moved["account_profile__monthly_spend"] = moved["account_profile__monthly_spend"] * 3 + 1000
    moved.to_parquet(shifted)
    passed = skew(logged, "--training", str(same), "--json", str(tmp_path / "same.json"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    psi = {
        f["feature"]: f["psi"] for f in json.loads((tmp_path / "same.json").read_text())["features"]
    }
    assert max(v for v in psi.values() if v is not None) < 0.01
    crossed = skew(logged, "--training", str(shifted), "--json", str(tmp_path / "moved.json"))
    assert crossed.returncode == 2, crossed.stdout + crossed.stderr
    summary = json.loads((tmp_path / "moved.json").read_text())
    failing = [f for f in summary["failures"] if "PSI" in f]
    assert len(failing) == 1 and failing[0].startswith("account_profile__monthly_spend: PSI")
    # KS at the training set's values (all of them: fewer than its 1,000 quantiles)
    served = np.sort(np.array(served_spend, dtype=float))
    trained = np.sort(moved["account_profile__monthly_spend"].to_numpy(dtype=float))
    points = np.unique(trained)
    exact = np.max(
        np.abs(
            np.searchsorted(served, points, side="right") / len(served)
            - np.searchsorted(trained, points, side="right") / len(trained)
        )
    )
    ks = {f["feature"]: f["ks"] for f in summary["features"]}
    assert ks["account_profile__monthly_spend"] == pytest.approx(exact) and exact > 0.5
    # a training time range: the logged entities' point-in-time rows at each hour of it
    since, until = (T - timedelta(hours=1)).isoformat(), (T + timedelta(minutes=30)).isoformat()
    ranged = skew(
        logged,
        "--training-since",
        since,
        "--training-until",
        until,
        "--max-psi",
        "1000",
        "--json",
        str(tmp_path / "range.json"),
    )
    assert ranged.returncode == 0, ranged.stdout + ranged.stderr
    summary = json.loads((tmp_path / "range.json").read_text())
    assert summary["training_set"].startswith(
        f"point-in-time rows of {len(rows)} logged entities every 1:00:00 from"
    )
    expected = FeatureSkew("account_profile__monthly_spend")
    distribution = _Distribution(over_range["account_profile__monthly_spend"])
    distribution.add(pd.Series(served_spend))
    distribution.finish(expected)
    got = {f["feature"]: f for f in summary["features"]}["account_profile__monthly_spend"]
    assert (got["psi"], got["ks"]) == (pytest.approx(expected.psi), pytest.approx(expected.ks))
    assert got["histogram"] == expected.histogram


def test_values_served_past_their_ttl_are_present_online_but_missing_offline(
    logged: tuple[Path, str], tmp_path: Path
) -> None:
    """A service that reads Feast directly gets values however old (Feast's online read
    ignores the TTL); logged, they are reported as present online and missing offline."""
    registry, profile = logged
    at = T + timedelta(hours=3)  # past service_alert_counts' 2 h TTL
    services = [row["service_id"] for row in example_entity_rows()[:-1]]
    wanted = ["service_alert_counts:alerts_1h", "service_alert_counts:error_rate"]
    with datalayer.open(registry, profile) as dl:
        view = dl.features("service_features")
        store = dl.store("features")
        assert isinstance(store, FeastStore) and view.log is not None
        served = store.feature_store.get_online_features(
            features=wanted,
            entity_rows=[{"service_id": s} for s in services],
            full_feature_names=True,
        ).to_dict()
        assert None not in served["service_alert_counts__alerts_1h"]  # however old
        view.log.record(
            {"service_id": services},
            {
                c: served[c]
                for c in ("service_alert_counts__alerts_1h", "service_alert_counts__error_rate")
            },
            {},
            at,
            request_id="feast-direct",
            model=None,
            version=None,
        )
    result = skew(logged, "--json", str(tmp_path / "ttl.json"))
    assert result.returncode == 2, result.stdout + result.stderr
    features = {
        f["feature"]: f for f in json.loads((tmp_path / "ttl.json").read_text())["features"]
    }
    for column in ("service_alert_counts__alerts_1h", "service_alert_counts__error_rate"):
        found = features[column]
        assert (found["online_only"], found["mismatches"], found["equal"]) == (len(services), 0, 0)
        assert {e["kind"] for e in found["examples"]} == {"missing offline"}


MODEL = """
def predict(frame):
    return (frame["service_alert_stream__alerts_seen"].astype("float64") >= 50).astype(int)
"""


def test_evaluate_compares_online_and_offline_accuracy_and_explains_the_difference(
    logged: tuple[Path, str], tmp_path: Path
) -> None:
    """A threshold model on alerts_seen; an online-only write lifts it past the threshold for
    two services, so online predictions differ there (and are wrong against labels of 0),
    offline ones do not. Labels come through a transactional pattern on the embedded
    profile and a stream on services."""
    registry, profile = logged
    (registry.parent / "busy_model.py").write_text(MODEL)
    config = yaml.safe_load(registry.read_text())
    if profile == "local":
        config["profiles"]["local"]["labels_sql"] = {
            "type": "sqlite",
            "path": ".datalayer/labels.db",
            "migrations": None,
        }
        config["profiles"]["services"]["labels_sql"] = config["profiles"]["services"]["sql"]
        labels = {"category": "transactional", "store": "labels_sql", "table": "outcomes"}
        labels["key"] = ["request_id", "row"]
    else:
        labels = {"category": "streaming", "store": "events"}
        labels["topic"] = f"labels-{uuid.uuid4().hex[:8]}"
    labels["schema"] = "datalayer.examples.alerting:GroupingLabel"
    config["patterns"]["outcomes"] = labels
    registry.write_text(yaml.safe_dump(config, sort_keys=False))
    rows = example_entity_rows()
    with datalayer.open(registry, profile) as dl:
        dl.apply()
        view = dl.features("service_features")
        view.push(
            [
                {
                    "service_id": s.service_id,
                    "last_severity_rank": 0,
                    "alerts_seen": i,
                    "event_timestamp": T - timedelta(minutes=10),
                }
                for i, s in enumerate(sample_services())
            ]
        )
        view.push(
            [
                {"service_id": s, "last_severity_rank": 0, "alerts_seen": 100 + i}
                | {"event_timestamp": T - timedelta(seconds=30)}
                for i, s in enumerate(CHANGED)
            ],
            to="online",
        )
        predict = _module_function(registry.parent / "busy_model.py")
        outcomes = []
        for i in range(2):
            request_id = f"eval-{i}"
            served = view.online(rows, as_of=LATER, request_id=request_id, model="busy")
            view.log_prediction(request_id, predict(pd.DataFrame(served)), model="busy")
            outcomes += [
                {"request_id": request_id, "row": j, "label": 0, "observed_at": LATER}
                for j in range(len(rows))
                if (i, j) != (1, 0)  # one read's first row is never labelled
            ]
        if profile == "local":
            dl.transactional("outcomes").put_many(outcomes)
        else:
            dl.stream("outcomes").publish_many(outcomes)
    evaluate = [*SKEW[:3], "evaluate", *SKEW[4:], "--model", "busy_model:predict"]
    evaluate += ["--labels", "outcomes", "--since", LATER.isoformat(), "--max-mismatch", "0.5"]
    evaluate += ["--config", str(registry), "--profile", profile, "--idle-timeout", "1"]
    evaluate += ["--json", str(tmp_path / "eval.json"), "--output", str(tmp_path / "eval.html")]
    done = subprocess.run(
        evaluate,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "eval.json").read_text())["evaluation"]
    changed_rows = 2 * len(CHANGED)
    assert (result["rows"], result["unpredicted"], result["labelled"]) == (18, 0, 17)
    assert result["differing"] == changed_rows
    assert result["offline_correct"] == 17  # offline every prediction is 0, as the labels
    assert result["online_correct"] == 17 - changed_rows
    assert result["predicted_by"] == "busy"
    explained = result["explanations"]
    assert [e["feature"] for e in explained] == ["service_alert_stream__alerts_seen"]
    assert explained[0]["with_differing_predictions"] == changed_rows
    assert {(e["online"], e["offline"], e["label"]) for e in result["examples"]} == {(1, 0, 0)}
    assert "accuracy online 76.47%, offline 100.00%; 4 predictions differ" in done.stdout
    page = (tmp_path / "eval.html").read_text()
    assert "online accuracy" in page and "<h2>Why predictions differ</h2>" in page
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page


def _module_function(path: Path) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["predict"]

"""Feature logging: sampled online reads published to a stream without slowing or failing the
read, then landed as parquet, ready for a point-in-time comparison."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import datalayer
from datalayer.categories.feature_log import FeatureLog, FeatureLogConfig
from datalayer.errors import ConfigError
from tests.example_project import copy_example, logging_example, materialized

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LAND_LOGS = ["-m", "datalayer.cli", "features", "land-logs", "service_features"]
SERVICES_ONE_SECOND = ["--profile", "services", "--idle-timeout", "1"]
ROWS = [
    {"service_id": "svc-01", "account_id": "acct-1"},
    {"service_id": "svc-02", "account_id": "acct-2"},
    {"service_id": "svc-nope", "account_id": "acct-nope"},
]


def logged_example(folder: Path, log: dict[str, Any], stream: dict[str, Any] | None = None) -> Path:
    """The example registry whose service_features logs to a ``feature_reads`` stream, with
    features written and materialized up to T."""
    return materialized(logging_example(folder, log, stream), T)


def test_logged_reads_land_as_rows_equal_to_what_was_served(tmp_path: Path) -> None:
    registry = logged_example(tmp_path, {"to": "feature_reads"})
    served = []
    with datalayer.open(registry, "local") as dl:
        view = dl.features("service_features")
        for i, at in enumerate([T, T + timedelta(hours=1, minutes=30)]):
            served.append(
                view.online(ROWS, as_of=at, request_id=f"req-{i}", model="grouping", version="v1")
            )
        view.online(ROWS[:1], as_of=T)  # no request id: a new one is made
    # closing published everything queued; landing reads it back
    with datalayer.open(registry, "local") as dl:
        from datalayer.categories.feature_log import ParquetFolder, land

        out = tmp_path / "landed"
        landed = land(
            dl.stream("feature_reads"), "service_features", ParquetFolder(out), idle_timeout=1.0
        )
    assert landed.reads == 7 and landed.predictions == 0
    frame = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet")))
    assert not list(out.glob(".*.tmp"))
    first = frame[frame["request_id"] == "req-0"].sort_values("row")
    assert first["service_id"].tolist() == ["svc-01", "svc-02", "svc-nope"]
    assert set(first["model"]) == {"grouping"} and set(first["version"]) == {"v1"}
    assert (first["requested_at"] == pd.Timestamp(T)).all()
    for i, answer in enumerate(served):
        landed = frame[frame["request_id"] == f"req-{i}"].sort_values("row")
        for column, values in answer.items():
            got = [None if pd.isna(v) else v for v in landed[column]]
            assert got == values, column
    # each view's event time, null where nothing was found
    stamps = first["service_alert_counts__event_timestamp"].tolist()
    assert stamps[0] <= pd.Timestamp(T) and pd.isna(stamps[2])
    other = frame[~frame["request_id"].str.startswith("req-")]
    assert len(other) == 1 and len(other["request_id"].iloc[0]) == 32


def test_sample_decides_how_many_reads_are_logged(tmp_path: Path) -> None:
    registry = logged_example(tmp_path, {"to": "feature_reads", "sample": 0.25})
    with datalayer.open(registry, "local") as dl:
        view = dl.features("service_features")
        for _ in range(400):
            view.online(ROWS[:1], as_of=T)
        log = view.log
        assert log is not None
        log.flush()
        published = log.stats.published
    assert 60 <= published <= 140, published  # binomial(400, 0.25): mean 100, sd 8.7


def test_a_failing_log_never_fails_or_slows_the_read(tmp_path: Path) -> None:
    """The log stream's schema refuses every record: reads still answer, failures counted."""
    stream = {
        "category": "streaming",
        "store": "events",
        "topic": "feature-reads",
        "schema": "datalayer.examples.alerting:Alert",
    }
    registry = logged_example(tmp_path, {"to": "feature_reads"}, stream)
    with datalayer.open(registry, "local") as dl:
        view = dl.features("service_features")
        answers = [view.online(ROWS, as_of=T) for _ in range(5)]
        assert view.log is not None and view.log.flush()
        assert view.log.stats.failed == 5 and view.log.stats.published == 0
    assert all(a["service_alert_counts__alerts_1h"][0] is not None for a in answers)


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    """A publish that hangs (a store that does not answer): the queue fills, the rest is
    dropped and counted, and recording never waits."""
    release = threading.Event()
    published: list[dict[str, Any]] = []

    def stuck(record: dict[str, Any]) -> None:
        release.wait(30)
        published.append(record)

    log = FeatureLog("p", FeatureLogConfig(to="s", queue=2), stuck)
    started = time.perf_counter()
    for i in range(10):
        log.record({"k": [i]}, {"v__f": [i]}, {}, T, request_id=str(i), model=None, version=None)
    assert time.perf_counter() - started < 0.5
    time.sleep(0.1)
    assert log.stats.dropped >= 7  # one in the publisher's hands, two queued
    release.set()
    log.close()
    assert log.stats.published == len(published) == 10 - log.stats.dropped
    assert [r["request_id"] for r in published] == sorted(
        (r["request_id"] for r in published), key=int
    )


def test_log_to_must_name_a_streaming_pattern(tmp_path: Path) -> None:
    registry_file = copy_example(tmp_path)
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["service_features"]["log"] = {"to": "incidents"}
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        datalayer.open(registry_file, "local")
    assert info.value.path == "patterns.service_features.log.to"
    assert "'incidents' is not a streaming pattern; streaming patterns: alerts" in str(info.value)


def test_the_server_logs_with_the_callers_request_id_and_the_cli_lands_it(
    tmp_path: Path,
) -> None:
    """A read through the feature server's ASGI application is logged under the caller's
    X-Request-ID with the model it names, and so are the predictions the caller then posts
    for that request id; ``datalayer features land-logs`` lands both."""
    import asyncio
    import json
    import subprocess
    import sys

    from datalayer.serve.app import FeatureServer

    registry = logged_example(tmp_path, {"to": "feature_reads"})
    app = FeatureServer(datalayer.open(registry, "local"), {})
    app.open()

    def post(path: str, body: Any) -> tuple[int, Any]:
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"x-request-id", b"model-call-17")],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], json.loads(sent[1]["body"])

    body = {"entities": ROWS[:2], "as_of": T.isoformat(), "model": "grouping", "version": "v2"}
    predictions = "/v1/predictions/service_features"
    try:
        assert post("/v1/features/service_features", body)[0] == 200
        logged = {"request_id": "model-call-17", "model": "grouping", "version": "v2"}
        assert post(predictions, {**logged, "predictions": [1, 0.25]}) == (202, {"logged": 2})
        for wrong, field in (
            ({"predictions": [1]}, "request_id"),
            ({**logged, "prediction": 1, "predictions": [1]}, "prediction"),
            ({**logged, "prediction": [1]}, "prediction"),
            ({**logged, "predictions": [{"a": 1}]}, "predictions"),
            ({**logged, "predictions": [1], "label": 1}, "label"),
        ):
            status, answer = post(predictions, wrong)
            assert (status, answer["error"]["field"]) == (400, field), (wrong, answer)
        assert post("/v1/predictions/nope", {**logged, "prediction": 1})[0] == 404
    finally:
        app.close()  # publishes what its reads logged
    landed = subprocess.run(
        [sys.executable, *LAND_LOGS, "--config", str(registry), "--idle-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert landed.returncode == 0, landed.stderr
    assert "2 logged rows and 2 predictions landed in" in landed.stdout
    folder = tmp_path / ".datalayer" / "feature_logs" / "service_features"
    frame = pd.concat(pd.read_parquet(p) for p in folder.glob("part-*.parquet"))
    assert set(frame["request_id"]) == {"model-call-17"}
    assert set(frame["model"]) == {"grouping"} and set(frame["version"]) == {"v2"}
    predicted = pd.concat(pd.read_parquet(p) for p in (folder / "predictions").glob("*.parquet"))
    assert predicted.sort_values("row")[
        ["request_id", "row", "model", "version"]
    ].values.tolist() == [
        ["model-call-17", 0, "grouping", "v2"],
        ["model-call-17", 1, "grouping", "v2"],
    ]
    assert sorted(predicted["prediction"]) == ["0.25", "1"]  # JSON: each value's type kept
    again = subprocess.run(
        [sys.executable, *LAND_LOGS, "--config", str(registry), "--idle-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        "0 logged rows and 0 predictions landed" in again.stdout
    )  # the group's offsets were committed


def test_closing_right_after_a_logged_read_publishes_it(tmp_path: Path) -> None:
    """The log's first publish opens its stream; a close at that moment neither waits on it
    nor loses the record."""
    registry = logged_example(tmp_path, {"to": "feature_reads"})
    started = time.perf_counter()
    with datalayer.open(registry, "local") as dl:
        dl.features("service_features").online(ROWS[:1], as_of=T, request_id="last")
    assert time.perf_counter() - started < 4  # not a flush that timed out
    with datalayer.open(registry, "local") as dl:
        got = [
            m.value["request_id"]
            for m in dl.stream("feature_reads").consume(None, start="earliest", idle_timeout=1)
        ]
    assert got == ["last"]


def test_on_services_the_log_lands_once_in_a_typed_postgresql_table(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_database: str,
    redis_url: str,
    kafka_bootstrap: str,
    mongodb_url: str,
) -> None:
    """The services profile's offline store is PostgreSQL: ``land-logs`` writes a table with
    a row per entity of each read, typed as the features are; a batch landed again (after an
    interruption) adds nothing."""
    import subprocess
    import sys

    import sqlalchemy as sa

    from datalayer.examples.features import feature_frames, write_postgres
    from datalayer.stores.feast.features import FeastFeatures
    from datalayer.stores.shared.postgres_urls import sqlalchemy_url

    registry_file = logging_example(tmp_path, services=True)
    servers = {
        "DATALAYER_POSTGRES_URL": postgres_database,
        "DATALAYER_REDIS_URL": redis_url,
        "DATALAYER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DATALAYER_MONGODB_URL": mongodb_url,
    }
    for name, value in servers.items():
        monkeypatch.setenv(name, value)
    write_postgres(feature_frames(T, days=3), postgres_database)
    with datalayer.open(registry_file, "services") as dl:
        dl.apply()
        view = dl.features("service_features")
        view.materialize(T - timedelta(days=3), T)
        served = view.online(ROWS, as_of=T, request_id="req-0", model="grouping", version="v1")
        view.online(ROWS[:1], as_of=T, request_id="req-1")
    landed = subprocess.run(
        [sys.executable, *LAND_LOGS, "--config", str(registry_file), *SERVICES_ONE_SECOND],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert landed.returncode == 0, landed.stderr
    assert (
        "4 logged rows and 0 predictions landed in tables feature_log_service_features"
        in landed.stdout
    )
    engine = sa.create_engine(sqlalchemy_url(postgres_database))
    try:
        frame = pd.read_sql_table("feature_log_service_features", engine)
        first = frame[frame["request_id"] == "req-0"].sort_values("row")
        assert first["service_id"].tolist() == ["svc-01", "svc-02", "svc-nope"]
        for column, values in served.items():
            assert [None if pd.isna(v) else v for v in first[column]] == values, column
        types = {
            c["name"]: str(c["type"])
            for c in sa.inspect(engine).get_columns("feature_log_service_features")
        }
        assert types["service_alert_counts__alerts_1h"] == "BIGINT"  # null for svc-nope
        assert types["service_alert_counts__error_rate"] == "DOUBLE PRECISION"
        assert types["service_alert_counts__event_timestamp"] == "TIMESTAMP"  # with time zone
        assert types["request_id"] == "TEXT"
        with datalayer.open(registry_file, "services") as dl:
            backend = dl.features("service_features").backend
            assert isinstance(backend, FeastFeatures)
            tables = backend.log_tables()
            assert tables is not None
            table = tables.reads
            again = [
                {
                    "request_id": "req-1",
                    "row": 0,
                    "requested_at": T.isoformat(),
                    "logged_at": T.isoformat(),
                    "model": None,
                    "version": None,
                },
            ]
            table(again)  # the row the table has: skipped
            assert len(pd.read_sql_table("feature_log_service_features", engine)) == 4
            tables.clear()  # the predictions table was never made: nothing to clear there
        assert len(pd.read_sql_table("feature_log_service_features", engine)) == 0
        assert sum(len(chunk) for chunk in tables.reads.chunks(None, None)) == 0
    finally:
        engine.dispose()

"""Features through Feast on both profiles: train/serve consistency, TTL, point-in-time joins,
streaming updates and clear errors."""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import datalayer
from datalayer import DataLayer, NotFound, PayloadValidationError, QueryError
from datalayer.examples.features import feature_frames, write_parquet, write_postgres
from datalayer.examples.streaming_features import AlertFeaturePusher
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.online import FeastOnlineRead, PackedOnlineRead, RedisOnlineRead
from datalayer.stores.feast.store import FeastStore
from datalayer.stores.feast.training import FeastTrainingSet, ParquetTrainingSet
from datalayer.testing.registry import write_registry
from tests.example_project import copy_example, example_entity_rows

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PIT_SERVICE = "svc-pit"
#: Hand-built rows of service_alert_counts (TTL 2h) for one service: (time, alerts_1h).
PIT_ROWS = [
    (T - timedelta(hours=3), 1),
    (T - timedelta(hours=1), 2),
    (T, 3),
    (T + timedelta(hours=1), 4),
]


def _pit_frame(frames: dict[str, Any]) -> None:
    extra = pd.DataFrame(
        [
            {
                "service_id": PIT_SERVICE,
                "alerts_1h": a,
                "alerts_24h": a,
                "critical_1h": 0,
                "error_rate": 0.0,
                "event_timestamp": at,
                "created": at,
            }
            for at, a in PIT_ROWS
        ]
    )
    for column in ("event_timestamp", "created"):
        extra[column] = extra[column].astype("datetime64[us, UTC]")
    frames["service_alert_counts"] = pd.concat(
        [frames["service_alert_counts"], extra], ignore_index=True
    )


@pytest.fixture(params=["local", "services"])
def layer(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DataLayer]:
    """The example registry in a temp folder with feature data ending at T, applied."""
    registry = yaml.safe_load(copy_example(tmp_path, migrations=True).read_text())
    project = f"t{uuid.uuid4().hex[:10]}"
    registry["profiles"][request.param]["features"]["project"] = project
    registry["patterns"]["bad_feature"] = {
        "category": "feature",
        "store": "features",
        "features": ["service_alert_counts:nope"],
    }
    registry["patterns"]["bad_view"] = {
        "category": "feature",
        "store": "features",
        "features": ["nope:x"],
    }
    registry["patterns"]["packed_features"] = {
        **registry["patterns"]["service_features"],
        "layout": "packed",
    }
    write_registry(tmp_path, registry["profiles"], registry["patterns"])
    frames = feature_frames(T, days=3)
    _pit_frame(frames)
    if request.param == "services":
        database = request.getfixturevalue("postgres_database")
        monkeypatch.setenv("DATALAYER_POSTGRES_URL", database)
        monkeypatch.setenv("DATALAYER_REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("DATALAYER_KAFKA_BOOTSTRAP", request.getfixturevalue("kafka_bootstrap"))
        monkeypatch.setenv("DATALAYER_MONGODB_URL", request.getfixturevalue("mongodb_url"))
        write_postgres(frames, database)
    else:
        write_parquet(frames, tmp_path / "feature_repo" / "data")
    dl = datalayer.open(tmp_path / "datalayer.yaml", request.param)
    dl.apply()
    yield dl
    dl.close()


def same(value: Any) -> Any:
    """One spelling for a missing value, and ints and floats compared as numbers."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value) if isinstance(value, int | float) else value


def training_rows(dl: DataLayer, at: datetime) -> dict[str, list[Any]]:
    entity_df = pd.DataFrame(example_entity_rows()).assign(event_timestamp=at)
    frame = dl.features("service_features").historical(entity_df)
    return {c: [same(v) for v in frame[c]] for c in frame.columns if "__" in c}


def serving_rows(dl: DataLayer, at: datetime) -> dict[str, list[Any]]:
    online = dl.features("service_features").online(example_entity_rows(), as_of=at)
    return {c: [same(v) for v in values] for c, values in online.items() if "__" in c}


def test_online_values_equal_the_training_set_at_the_same_instant(layer: DataLayer) -> None:
    layer.features("service_features").materialize(T - timedelta(days=3), T)
    serving, training = serving_rows(layer, T), training_rows(layer, T)
    assert serving == training
    assert serving["service_alert_counts__alerts_1h"][0] is not None
    assert serving["account_profile__plan_rank"][-1] is None  # the unknown entity


def test_values_past_their_ttl_are_missing_online_as_in_training(layer: DataLayer) -> None:
    features = layer.features("service_features")
    features.materialize(T - timedelta(days=3), T)
    later = T + timedelta(hours=2, minutes=1)  # service_alert_counts (ttl 2h) has expired
    serving, training = serving_rows(layer, later), training_rows(layer, later)
    assert serving == training
    assert set(serving["service_alert_counts__alerts_1h"]) == {None}
    assert serving["service_incident_history__incidents_7d"][0] is not None
    # Feast's own online read still serves the expired value: the skew this read path removes.
    store = layer.store("features")
    assert isinstance(store, FeastStore)
    raw = store.feature_store.get_online_features(
        features=["service_alert_counts:alerts_1h"], entity_rows=[{"service_id": "svc-01"}]
    ).to_dict()
    assert raw["alerts_1h"][0] is not None


def test_point_in_time_join_on_hand_built_rows(layer: DataLayer) -> None:
    cases = [
        (T, 3),  # a row exactly at the entity time counts; the later row does not
        (T - timedelta(minutes=30), 2),  # the latest row before
        (T + timedelta(hours=1), 4),  # exactly at another row
        (T + timedelta(hours=3), 4),  # that row is exactly TTL old: still in
        (T + timedelta(hours=3, seconds=1), None),  # one second past the TTL
        (T + timedelta(hours=5), None),  # long expired
        (T - timedelta(hours=4), None),  # before any row
    ]
    entity_df = pd.DataFrame(
        {"service_id": [PIT_SERVICE] * len(cases), "event_timestamp": [c[0] for c in cases]}
    )
    frame = layer.features("service_features").historical(
        entity_df, features=["service_alert_counts:alerts_1h"]
    )
    assert [same(v) for v in frame["service_alert_counts__alerts_1h"]] == [
        None if expected is None else float(expected) for _, expected in cases
    ]
    assert list(frame["event_timestamp"]) == [c[0] for c in cases]


def test_bad_input_names_what_is_wrong(layer: DataLayer) -> None:
    features = layer.features("service_features")
    with pytest.raises(QueryError, match="account_id"):
        features.online([{"service_id": "svc-01"}])
    with pytest.raises(QueryError, match="event_timestamp"):
        features.historical(pd.DataFrame({"service_id": ["svc-01"], "account_id": ["acct-1"]}))
    with pytest.raises(QueryError, match="account_id"):
        features.historical(pd.DataFrame({"service_id": ["svc-01"], "event_timestamp": [T]}))
    with pytest.raises(NotFound, match="service_alert_counts:nope"):
        features.online([{"service_id": "svc-01"}], features=["service_alert_counts:nope"])
    with pytest.raises(QueryError, match="nope"):
        layer.features("bad_feature").online([{"service_id": "svc-01"}])
    with pytest.raises(NotFound, match="nope"):
        layer.features("bad_view").online([{"service_id": "svc-01"}])


def test_published_alerts_update_the_streaming_features_in_one_push(layer: DataLayer) -> None:
    stream = layer.stream("alerts")
    start = stream.end_offsets()
    now = datetime.now(UTC)
    alerts = [
        ("svc-03", "warning", now - timedelta(seconds=2)),
        ("svc-04", "info", now - timedelta(seconds=1)),
        ("svc-03", "critical", now),
    ]
    stream.publish_many(
        [
            {
                "alert_id": f"al-{uuid.uuid4().hex[:6]}",
                "service_id": service,
                "fingerprint": "cpu_high",
                "severity": severity,
                "message": "cpu",
                "occurred_at": at,
            }
            for service, severity, at in alerts
        ]
    )
    pushes: list[int] = []
    pusher = AlertFeaturePusher(layer)
    push = pusher.features.push

    def counted(rows: list[dict[str, Any]], **kwargs: Any) -> Any:
        pushes.append(len(rows))
        return push(rows, **kwargs)

    pusher.features.push = counted  # type: ignore[method-assign]
    stats = stream.process_batch(
        pusher,
        group=f"features-{uuid.uuid4().hex[:6]}",
        start=start,
        max_messages=3,
        max_wait=5,
        idle_timeout=20,
    )
    assert stats.handled == 3
    assert sum(pushes) == 3 and len(pushes) <= 2  # rows pushed together, not one by one
    online = layer.features("service_features").online(
        [{"service_id": "svc-03"}, {"service_id": "svc-04"}],
        features=["service_alert_stream:last_severity_rank", "service_alert_stream:alerts_seen"],
    )
    assert online["service_alert_stream__last_severity_rank"] == [2, 0]
    assert online["service_alert_stream__alerts_seen"] == [2, 1]


def test_the_features_commands(layer: DataLayer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from datalayer.cli import app

    where = ["--config", str(layer.registry.file), "--profile", layer.profile]
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "features",
            "materialize",
            "service_features",
            "--start",
            "2026-11-17T00:00:00Z",
            "--end",
            T.isoformat(),
            *where,
        ],
        env={"COLUMNS": "200"},
    )
    assert done.exit_code == 0, done.output
    assert "materialized up to 2026-11-20T12:00:00+00:00" in done.output
    served = runner.invoke(
        app,
        [
            "features",
            "online",
            "service_features",
            "--row",
            "service_id=svc-01,account_id=acct-1",
            *where,
        ],
        env={"COLUMNS": "200"},
    )
    assert served.exit_code == 0, served.output
    assert "account_profile__plan_rank" in served.output
    entities = tmp_path / "entities.csv"
    pd.DataFrame(
        {
            "service_id": ["svc-01", PIT_SERVICE],
            "account_id": ["acct-1", "acct-1"],
            "event_timestamp": [T.isoformat(), T.isoformat()],
        }
    ).to_csv(entities, index=False)
    output = tmp_path / "training.parquet"
    built = runner.invoke(
        app,
        [
            "features",
            "historical",
            "service_features",
            "--entities",
            str(entities),
            "--output",
            str(output),
            *where,
        ],
        env={"COLUMNS": "200"},
    )
    assert built.exit_code == 0, built.output
    frame = pd.read_parquet(output)
    assert list(frame["service_alert_counts__alerts_1h"])[1] == 3
    broken = runner.invoke(
        app, ["features", "online", "service_features", "--row", "service_id", *where]
    )
    assert (
        broken.exit_code == 1 and "key=value" in broken.output and "Traceback" not in broken.output
    )


@pytest.mark.parametrize("layer", ["services"], indirect=True)
def test_direct_redis_read_equals_feasts_own_read(layer: DataLayer) -> None:
    """The fast read decodes Feast's Redis layout through Feast's own key encoding: if a Feast
    upgrade changed the layout, this comparison fails instead of serving wrong values."""
    features = layer.features("service_features")
    features.materialize(T - timedelta(days=3), T)
    features.push([{"service_id": "svc-04", "last_severity_rank": 1, "alerts_seen": 9}])
    entity_rows = [*example_entity_rows(), {"service_id": PIT_SERVICE, "account_id": "acct-1"}]
    references = features.references()
    checked = features.entity_rows(entity_rows, references)
    backend = features.backend
    assert isinstance(backend, FeastFeatures)
    assert isinstance(backend.online_read, RedisOnlineRead)
    through_feast = FeastOnlineRead(backend)
    keys = {k: [row[k] for row in checked] for k in features.join_keys(references)}
    for at in (T, T + timedelta(hours=2, minutes=1), datetime.now(UTC)):
        assert features.online(entity_rows, as_of=at) == {
            **keys,
            **through_feast.read(checked, references, at),
        }
    assert features.online(entity_rows, as_of=T)["service_alert_counts__alerts_1h"][0] is not None


def test_the_packed_layout_answers_as_feasts_through_materializations_and_pushes(
    layer: DataLayer,
) -> None:
    """Materialized through another pattern, pushed to (newer and older rows, a new entity):
    the packed pattern answers as the hash layout at every instant. On the local profile
    (SQLite online store) it reads Feast's layout."""
    packed = layer.features("packed_features")
    hashed = layer.features("service_features")
    read = packed.backend.online_read  # type: ignore[attr-defined]
    services = layer.profile == "services"
    assert isinstance(read, PackedOnlineRead) == services
    hashed.materialize(T - timedelta(days=3), T)
    now = datetime.now(UTC)
    stream_rows = [
        {"service_id": "svc-04", "last_severity_rank": 1, "alerts_seen": 9, "event_timestamp": now},
        {
            "service_id": "svc-new",
            "last_severity_rank": 2,
            "alerts_seen": 1,
            "event_timestamp": now,
        },
    ]
    hashed.push(stream_rows)
    older = [{**stream_rows[0], "alerts_seen": 3, "event_timestamp": now - timedelta(minutes=5)}]
    packed.push(older)
    hostile = {"service_id": "svc-\x1e\"'\n🙂" + "x" * 300, "account_id": "acct-1"}
    packed.push([{**stream_rows[1], "service_id": hostile["service_id"]}])
    if services:  # PostgreSQL text holds no NUL: refused, naming the row, nothing written
        nul = {**stream_rows[1], "service_id": "svc-\x00nul"}
        with pytest.raises(PayloadValidationError, match=r"row 1\.service_id: holds a NUL"):
            packed.push([stream_rows[1], nul])
        seen = packed.online(
            [{"service_id": nul["service_id"]}], features=["service_alert_stream:alerts_seen"]
        )
        assert seen["service_alert_stream__alerts_seen"] == [None]
    entity_rows = [*example_entity_rows(), {"service_id": "svc-new", "account_id": "acct-1"}]
    assert packed.online([hostile])["service_alert_stream__alerts_seen"] == [1]
    assert packed.online_stamped([hostile]) == hashed.online_stamped([hostile])
    for at in (T, T - timedelta(hours=5), T + timedelta(hours=2, minutes=1), now):
        assert packed.online_stamped(entity_rows, as_of=at) == hashed.online_stamped(
            entity_rows, as_of=at
        ), at
    latest = packed.online(entity_rows, as_of=now)
    svc_04 = [row["service_id"] for row in entity_rows].index("svc-04")
    assert latest["service_alert_stream__alerts_seen"][svc_04] == 9  # the older push lost
    assert latest["service_alert_stream__alerts_seen"][-1] == 1
    assert latest["service_alert_counts__alerts_1h"][-1] is None  # a new entity: not packed
    if services:
        store = layer.store("features")
        assert isinstance(store, FeastStore)
        client = store.fast_redis()
        complete = {
            ",".join(sorted(v.name for v in layout.views)): [
                string[0] if string else None for string in client.mget(layout.keys(entity_rows))
            ]
            for layout in read.layouts
        }
        # Every sample entity is complete (all its views written); "svc-new" has only its
        # pushed view (read from the hashes), "svc-missing" and "acct-missing" no string.
        assert complete == {
            "account_profile": [1] * 8 + [None, 1],
            "service_alert_counts,service_alert_stream,service_incident_history": [1] * 8
            + [None, 0],
        }


def test_pushes_out_of_order_leave_online_the_newest_as_in_training(layer: DataLayer) -> None:
    """Events pushed late (an older event time than the one online, or two of one entity in
    one push in the wrong order) never replace a newer value online: online answers what a
    training set at the same instant answers, on both profiles."""
    view = layer.features("service_features")
    now = datetime.now(UTC).replace(microsecond=0)

    def row(service: str, seen: int, age_s: int) -> dict[str, Any]:
        return {
            "service_id": service,
            "last_severity_rank": 1,
            "alerts_seen": seen,
            "event_timestamp": now - timedelta(seconds=age_s),
        }

    view.push([row("svc-01", 5, 10)])
    view.push([row("svc-01", 4, 20)])  # late
    view.push([row("svc-02", 7, 5), row("svc-02", 6, 30)])  # one push, newest first
    wanted = ["service_alert_stream:alerts_seen"]
    entities = [{"service_id": "svc-01"}, {"service_id": "svc-02"}]
    online = view.online(entities, as_of=now, features=wanted)
    assert online["service_alert_stream__alerts_seen"] == [5, 7]
    training = view.historical(pd.DataFrame(entities).assign(event_timestamp=now), features=wanted)
    assert training["service_alert_stream__alerts_seen"].tolist() == [5, 7]


@pytest.mark.parametrize("layer", ["services"], indirect=True)
def test_concurrent_pushes_and_a_materialization_leave_both_layouts_equal(
    layer: DataLayer,
) -> None:
    """Four threads push rows of one view with shuffled event times to the same entities while
    a materialization writes every view: each layout keeps the newest row per entity, and
    they agree."""
    packed = layer.features("packed_features")
    hashed = layer.features("service_features")
    services = [f"svc-{i:02d}" for i in range(1, 9)]
    base = datetime.now(UTC) - timedelta(minutes=30)
    errors: list[BaseException] = []

    def pusher(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                minute = rng.randrange(1, 25)
                packed.push(
                    [
                        {
                            "service_id": service,
                            "last_severity_rank": minute,
                            "alerts_seen": seed,
                            "event_timestamp": base + timedelta(minutes=minute, seconds=seed),
                        }
                        for service in rng.sample(services, 4)
                    ]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    hashed.materialize(T - timedelta(days=3), T)
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    entity_rows = [{"service_id": s, "account_id": "acct-1"} for s in services]
    now = datetime.now(UTC)
    assert packed.online_stamped(entity_rows, as_of=now) == hashed.online_stamped(
        entity_rows, as_of=now
    )
    ranks = packed.online(entity_rows, as_of=now)["service_alert_stream__last_severity_rank"]
    assert all(rank is not None and rank >= 1 for rank in ranks)


def test_incremental_materialization_catches_up_in_steps(layer: DataLayer) -> None:
    features = layer.features("service_features")
    features.materialize_incremental(T - timedelta(hours=6))
    early = serving_rows(layer, T - timedelta(hours=6))
    assert early == training_rows(layer, T - timedelta(hours=6))
    features.materialize_incremental(T)
    assert serving_rows(layer, T) == training_rows(layer, T)
    assert serving_rows(layer, T) != early


@pytest.mark.parametrize("layer", ["local"], indirect=True)
def test_parquet_join_equals_feasts_own_join(layer: DataLayer) -> None:
    """The fast training-set join returns exactly what Feast's get_historical_features does,
    with unknown entities, rows before any data, expired values and exact boundaries, in the
    entity DataFrame's row order."""
    features = layer.features("service_features")
    instants = [
        T,
        T - timedelta(hours=6),
        T + timedelta(hours=2, minutes=1),
        T - timedelta(days=5),
        T + timedelta(hours=1),
        T + timedelta(hours=3),
        T + timedelta(hours=3, seconds=1),
    ]
    entity_rows = [*example_entity_rows(), {"service_id": PIT_SERVICE, "account_id": "acct-2"}]
    entity_df = pd.DataFrame(
        [{**row, "event_timestamp": at} for at in instants for row in entity_rows]
    )
    references = features.references()
    backend = features.backend
    assert isinstance(backend, FeastFeatures)
    assert isinstance(backend.training_set, ParquetTrainingSet)
    fast = ParquetTrainingSet(backend).build(entity_df, references)
    slow = FeastTrainingSet(backend).build(entity_df, references)
    assert list(fast.columns) == [*entity_df.columns, *features.columns(references)]
    assert list(fast["service_id"]) == list(entity_df["service_id"])
    assert list(fast["event_timestamp"]) == list(slow["event_timestamp"])
    for column in features.columns(references):
        assert [same(v) for v in fast[column]] == [same(v) for v in slow[column]], column
    assert fast["service_alert_counts__alerts_1h"].notna().any()
    assert fast["service_alert_counts__alerts_1h"].isna().any()


def test_no_entity_rows_read_as_empty_columns(layer: DataLayer) -> None:
    served = layer.features("service_features").online([])
    assert served and all(values == [] for values in served.values())


@pytest.mark.parametrize("layer", ["local"], indirect=True)
def test_apply_leaves_the_process_as_it_was(layer: DataLayer) -> None:
    """``feast apply`` imports the repo's modules from its folder: the working directory,
    ``sys.path``, ``sys.modules`` and the environment are all as they were afterwards."""
    store = layer.store("features")
    assert isinstance(store, FeastStore)
    repo_modules = {p.stem for p in store.repo.glob("*.py")}
    assert repo_modules and not repo_modules & set(sys.modules)  # the fixture's apply
    cwd, path, modules, environ = os.getcwd(), list(sys.path), dict(sys.modules), dict(os.environ)
    assert store.apply([])
    assert os.getcwd() == cwd
    assert sys.path == path
    assert dict(sys.modules) == modules
    assert dict(os.environ) == environ

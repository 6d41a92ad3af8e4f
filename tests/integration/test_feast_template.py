"""The repository ``feast init`` generates, used unchanged but for its online store (Redis): its
feature services mix stored features with pandas on-demand views over request data; three more
on-demand views add the python modes (batch and singleton) and a view without request data.

Online and training-set values must equal Feast's own, through datalayer's fast paths (the Redis
read, the parquet join), with the transformation applied once per request."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import datalayer
from datalayer.errors import QueryError
from datalayer.stores.feast.features import FeastFeatures
from datalayer.stores.feast.online import RedisOnlineRead
from datalayer.stores.feast.training import ParquetTrainingSet
from datalayer.testing.feast_template import init_template
from datalayer.testing.registry import write_registry

SERVICES = ("driver_activity_v1", "driver_activity_v2", "driver_activity_v3")
#: Every on-demand mode next to stored features of two views.
MIXED = [
    "driver_hourly_stats:acc_rate",
    "transformed_conv_rate:conv_rate_plus_val2",
    "python_conv_rate:conv_rate_times_val",
    "python_conv_rate:trips_label",
    "singleton_acc_rate:acc_rate_plus_val",
    "rates_only:acc_rate_pct",
    "rates_only:conv_over_acc",
    "driver_hourly_stats_fresh:avg_daily_trips",
]
DRIVERS = [1001, 1002, 1003, 1004, 1005]


@dataclass
class Template:
    dl: datalayer.DataLayer
    fs: Any
    now: datetime
    registry: Path

    def backend(self, pattern: str) -> FeastFeatures:
        backend = self.dl.features(pattern).backend
        assert isinstance(backend, FeastFeatures)
        return backend


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Template]:
    folder = tmp_path_factory.mktemp("feast_init")
    project = f"tmpl_{uuid.uuid4().hex[:8]}"
    init_template(folder, redis_url, project, more_on_demand=True)
    patterns: dict[str, Any] = {
        service: {"category": "feature", "store": "features", "feature_service": service}
        for service in SERVICES
    }
    patterns["mixed"] = {"category": "feature", "store": "features", "features": MIXED}
    registry = write_registry(
        folder,
        {"local": {"features": {"type": "feast", "repo": f"{project}/feature_repo"}}},
        patterns,
    )
    with datalayer.open(registry, "local") as dl:
        dl.apply()
        now = datetime.now(UTC)
        dl.features("driver_activity_v2").materialize(now - timedelta(days=30), now)
        fs = dl.store("features").feature_store
        fresh = pd.DataFrame(
            {
                "driver_id": DRIVERS[:3],
                "conv_rate": [0.25, 0.5, 0.75],
                "acc_rate": [0.5, 0.25, 0.125],
                "avg_daily_trips": [100, 900, 300],
                "driver_metadata": [{"vehicle_type": "van"}] * 3,
                "driver_config": ['{"max_distance_km": 3}'] * 3,
                "driver_profile": [{"name": "x", "age": "40"}] * 3,
            }
        )
        dl.features("driver_activity_v3").push(fresh, view="driver_hourly_stats_fresh")
        yield Template(dl, fs, now, registry)
        fs.teardown()


def request_rows(drivers: list[int]) -> list[dict[str, Any]]:
    return [{"driver_id": d, "val_to_add": d % 7, "val_to_add_2": -d % 5} for d in drivers]


def feast_references(template: Template, pattern: str) -> Any:
    features = template.dl.features(pattern)
    if features.pattern.feature_service:
        return template.fs.get_feature_service(features.pattern.feature_service)
    return list(features.pattern.features)


def python_mode_through_feast(
    template: Template, references: list[str], rows: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    """Feast's values of python-mode on-demand features. With full feature names Feast leaves
    them out of its answer (the transformation returns short names, which it then does not
    select), so they are read by short name, one view at a time; a singleton view one row at a
    time (Feast's singleton call reads the first row of a request only)."""
    found: dict[str, list[Any]] = {}
    for view, requests in (
        ("python_conv_rate", [rows]),
        ("singleton_acc_rate", [[r] for r in rows]),
    ):
        wanted = [r for r in references if r.startswith(f"{view}:")]
        for reference in wanted:
            found[f"{view}__{reference.split(':')[1]}"] = [
                value
                for request in requests
                for value in template.fs.get_online_features(
                    features=[reference], entity_rows=request, full_feature_names=False
                ).to_dict()[reference.split(":")[1]]
            ]
    return found


def same(got: Any, want: Any) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        return got == want or (math.isnan(got) and math.isnan(want))
    return bool(got == want)


@pytest.mark.parametrize("pattern", [*SERVICES, "mixed"])
def test_online_values_equal_feast_s_through_the_fast_read(
    template: Template, pattern: str
) -> None:
    backend = template.backend(pattern)
    assert isinstance(backend.online_read, RedisOnlineRead)
    rows = request_rows([*DRIVERS, 99999])  # 99999: never written
    ours = template.dl.features(pattern).online(rows)
    theirs = template.fs.get_online_features(
        features=feast_references(template, pattern), entity_rows=rows, full_feature_names=True
    ).to_dict()
    theirs.update(python_mode_through_feast(template, backend.references(), rows))
    assert list(ours) == ["driver_id", *(r.replace(":", "__") for r in backend.references())]
    for column, values in ours.items():
        assert len(values) == len(rows)
        for got, want in zip(values, theirs[column], strict=True):
            assert same(got, want), (column, values, theirs[column])
    assert any(v is not None for v in ours[list(ours)[-1]])


@pytest.mark.parametrize("pattern", ["driver_activity_v1", "driver_activity_v2", "mixed"])
def test_training_set_values_equal_feast_s_through_the_parquet_join(
    template: Template, pattern: str
) -> None:
    assert isinstance(template.backend(pattern).training_set, ParquetTrainingSet)
    now = template.now
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1004, 1005, 99999],
            "event_timestamp": [now - timedelta(hours=h) for h in (1, 3, 20, 60, 24 * 20, 2)],
            "val_to_add": [1, 2, 3, 4, 5, 6],
            "val_to_add_2": [10, 20, 30, 40, 50, 60],
        }
    )
    # Feast's training set fails with a singleton view (it hands the whole table to the
    # one-row function): its values are checked against Feast's inputs below
    singleton = "singleton_acc_rate:acc_rate_plus_val"
    if pattern == "mixed":  # the fresh view has rows of the push only: no history to compare
        references = [r for r in MIXED if not r.startswith("driver_hourly_stats_fresh:")]
        through_feast = [r for r in references if r != singleton]
    else:
        references = through_feast = None
    ours = template.dl.features(pattern).historical(entity_df, features=references)
    job = template.fs.get_historical_features(
        entity_df=entity_df,
        features=through_feast or feast_references(template, pattern),
        full_feature_names=True,
    )
    # Feast's file offline store leaves out entity rows it has no value for (1005, here)
    theirs = job.to_df().set_index("driver_id")
    assert list(ours.columns[:4]) == list(entity_df.columns)
    for i, driver in enumerate(entity_df["driver_id"]):
        for column in ours.columns[4:]:
            got = ours[column].iloc[i]
            if driver not in theirs.index:
                assert pd.isna(got), (driver, column, got)
                continue
            if column == singleton.replace(":", "__"):
                want = (
                    theirs.loc[driver, "driver_hourly_stats__acc_rate"]
                    + entity_df["val_to_add_2"].iloc[i]
                )
            else:
                want = theirs.loc[driver, column]
            if pd.isna(want):
                assert pd.isna(got), (driver, column, got)
            else:
                assert same(got, want), (driver, column, got, want)
    assert ours[ours.columns[-1]].notna().sum() >= 3


def test_expired_inputs_compute_from_nothing_online_as_in_the_training_set(
    template: Template,
) -> None:
    """Feast's online read ignores the TTL; datalayer's does not, so an on-demand value past
    its inputs' TTL is the one a training set built at that instant has."""
    features = template.dl.features("mixed")
    at = template.now + timedelta(days=3)  # the template's views live a day
    references = [r for r in MIXED if not r.startswith("driver_hourly_stats_fresh:")]
    online = features.online(request_rows(DRIVERS), as_of=at, features=references)
    entity_df = pd.DataFrame(request_rows(DRIVERS)).assign(event_timestamp=at)
    training = features.historical(entity_df, features=references)
    for column, values in online.items():
        if column == "driver_id":
            continue
        for got, want in zip(values, training[column], strict=True):
            assert got is None or (isinstance(got, str) and got == want), (column, values)
            assert pd.isna(want) or got == want, (column, list(training[column]))


def test_a_pandas_transformation_runs_once_per_request(
    template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = template.backend("driver_activity_v1")
    view = backend.on_demand_views()["transformed_conv_rate"]
    calls: list[int] = []
    transform = view.feature_transformation.transform

    def counted(frame: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(frame))
        return transform(frame)

    monkeypatch.setattr(view.feature_transformation, "transform", counted)
    template.dl.features("driver_activity_v1").online(request_rows(DRIVERS * 20))
    assert calls == [100]


def test_request_data_is_asked_for_by_name(template: Template) -> None:
    features = template.dl.features("driver_activity_v1")
    with pytest.raises(
        QueryError, match=r"entity row 1 lacks request field\(s\) \['val_to_add_2'\]"
    ):
        features.online([*request_rows([1001]), {"driver_id": 1002, "val_to_add": 1}])
    entity_df = pd.DataFrame({"driver_id": [1001], "event_timestamp": [template.now]})
    with pytest.raises(QueryError, match=r"lacks request data column\(s\) \['val_to_add'"):
        features.historical(entity_df)
    # stored features alone need no request data
    only_stored = features.online([{"driver_id": 1001}], features=["driver_hourly_stats:conv_rate"])
    assert only_stored["driver_hourly_stats__conv_rate"][0] is not None


def test_one_dtype_per_feature_online_and_in_the_training_set(template: Template) -> None:
    features = template.dl.features("driver_activity_v2")
    rows = request_rows([1001, 99999])
    online = features.online_df(rows)
    entity_df = pd.DataFrame(rows).assign(event_timestamp=template.now)
    training = features.historical(entity_df)
    for column in online.columns:
        if column != "driver_id":
            assert str(online[column].dtype) == str(training[column].dtype), column


def test_the_cli_reads_typed_entity_rows_with_request_data(template: Template) -> None:
    from typer.testing import CliRunner

    from datalayer.cli import app

    where = ["--config", str(template.registry), "--profile", "local"]
    runner = CliRunner()
    row = "driver_id=1001,val_to_add=1,val_to_add_2=2"
    served = runner.invoke(
        app,
        ["features", "online", "driver_activity_v1", "--row", row, *where],
        env={"COLUMNS": "200"},
    )
    assert served.exit_code == 0, served.output
    expected = template.dl.features("driver_activity_v1").online(
        [{"driver_id": 1001, "val_to_add": 1, "val_to_add_2": 2}]
    )
    value = expected["transformed_conv_rate__conv_rate_plus_val1"][0]
    assert value is not None and str(value) in served.output
    as_json = runner.invoke(
        app, ["features", "online", "driver_activity_v1", "--row", row, "--json", *where]
    )
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"features": expected}
    wrong = runner.invoke(
        app,
        [
            "features",
            "online",
            "driver_activity_v1",
            "--row",
            "driver_id=10x1,val_to_add=1",
            *where,
        ],
    )
    assert wrong.exit_code == 1
    assert "driver_id='10x1' is not an int" in wrong.output and "Traceback" not in wrong.output

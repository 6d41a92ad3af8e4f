"""A model rolls out to a new feature service by percentage: each entity is served by one
variant, chosen by a stable hash of its join keys (the same in every process, within 2 points
of the percent over 10,000 entities); each variant's values are what a read of its feature
service alone returns; the log records the variant of every row, and ``datalayer skew``
compares one variant's reads when asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import datalayer
from tests.example_project import example_entity_rows, logging_example, materialized

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
V1, V2 = "alert_grouping_v1", "alert_grouping_v2"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """The example registry (local profile), service_features logged and rolling 30% of its
    entities out to alert_grouping_v2, with pattern reading each feature service alone."""
    file = logging_example(tmp_path)
    found = yaml.safe_load(file.read_text())
    patterns = found["patterns"]
    patterns["service_features"]["rollout"] = {"to_feature_service": V2, "percent": 30}
    for name, service in (("only_v1", V1), ("only_v2", V2)):
        patterns[name] = {"category": "feature", "store": "features", "feature_service": service}
    file.write_text(yaml.safe_dump(found, sort_keys=False))
    return materialized(file, T)


def entities(count: int) -> list[dict[str, str]]:
    return [{"service_id": f"svc-{i}", "account_id": f"acct-{i % 13}"} for i in range(count)]


def test_each_entity_reads_from_its_variant_stably_and_in_its_share(registry: Path) -> None:
    rows = entities(10_000)
    with datalayer.open(registry, "local") as dl:
        view = dl.features("service_features")
        variants = view.online(rows, as_of=T)["variant"]
        assert view.online(rows, as_of=T)["variant"] == variants  # stable
    share = variants.count(V2) / len(rows) * 100
    assert abs(share - 30) <= 2, share
    assert set(variants) == {V1, V2}
    code = (
        "import json, sys, datalayer; rows = json.loads(sys.stdin.read()); "
        f"dl = datalayer.open({str(registry)!r}, 'local'); "
        "print(json.dumps(dl.features('service_features').routed(rows)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "7"},
    )
    assert other.returncode == 0, other.stderr
    assert [V2 if n else V1 for n in json.loads(other.stdout)] == variants


def test_each_variant_serves_what_its_feature_service_alone_does(registry: Path) -> None:
    rows = example_entity_rows()
    with datalayer.open(registry, "local") as dl:
        read = dl.features("service_features").online(rows, as_of=T)
        v1 = dl.features("only_v1").online(rows, as_of=T)
        v2 = dl.features("only_v2").online(rows, as_of=T)
        stamped, stamps = dl.features("service_features").online_stamped(rows, as_of=T)
    assert list(read)[:3] == [*list(v1)[:2], "variant"]  # the join keys, then the variant
    assert set(read) == {"variant", *v1, *v2}
    served = read["variant"]
    assert set(served) == {V1, V2}, served  # the example's 9 entities meet both
    for i, variant in enumerate(served):
        alone = v1 if variant == V1 else v2
        for column in read:
            if column == "variant":
                continue
            if column in rows[i]:  # a join key: the caller's, whichever variant read it
                expected = rows[i][column]
            else:
                expected = alone[column][i] if column in alone else None
            assert read[column][i] == expected, (i, variant, column)
    assert stamped == read
    assert all(stamps["account_profile"][i] == 0 for i, v in enumerate(served) if v == V2)
    with (
        datalayer.open(registry, "local") as dl,
        pytest.raises(datalayer.QueryError, match="read all of its features"),
    ):
        dl.features("service_features").online(rows, features=["account_profile:plan_rank"])


def cli(registry: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``datalayer COMMAND --pattern service_features ARGS`` on ``registry``."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "datalayer.cli", command, "--pattern", "service_features"),
            *("--config", str(registry), "--idle-timeout", "1", *args),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize("percent", [0, 100])
def test_a_read_all_one_variant_has_both_variants_columns(tmp_path: Path, percent: int) -> None:
    """At 0% (or 100%) every entity meets one variant: the other is not read, and its
    features are columns of Nones, so a read's columns never depend on its entities."""
    file = logging_example(tmp_path)
    found = yaml.safe_load(file.read_text())
    rollout = {"to_feature_service": V2, "percent": percent}
    found["patterns"]["service_features"]["rollout"] = rollout
    file.write_text(yaml.safe_dump(found, sort_keys=False))
    rows = example_entity_rows()
    with datalayer.open(materialized(file, T), "local") as dl:
        view = dl.features("service_features")
        read = view.online(rows, as_of=T)
        columns = [*view.join_keys(), "variant", *view.columns(view.references())]
    assert set(read["variant"]) == {V2 if percent else V1}
    assert list(read) == columns  # alert_grouping_v2's features are v1's, fewer
    if percent:
        assert read["account_profile__plan_rank"] == [None] * len(rows)
    else:
        assert any(v is not None for v in read["account_profile__plan_rank"])


def skew(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(registry, "skew", *args)


def test_the_log_records_each_rows_variant_and_skew_compares_one(
    registry: Path, tmp_path: Path
) -> None:
    rows = example_entity_rows()
    with datalayer.open(registry, "local") as dl:
        view = dl.features("service_features")
        served = view.online(rows, as_of=T, request_id="r-1", model="grouping")["variant"]
        view.log_prediction("r-1", [0.5] * len(rows), model="grouping")
    on_v2 = served.count(V2)
    found_with_rollout = yaml.safe_load(registry.read_text())
    both = skew(registry, "--json", str(tmp_path / "both.json"))
    assert both.returncode == 0, both.stdout + both.stderr
    summary = json.loads((tmp_path / "both.json").read_text())
    assert (summary["rows"], summary["reads"], summary["variant"]) == (len(rows), 1, None)
    landed = pd_rows(registry)
    assert sorted(landed["row"]) == list(range(len(rows)))  # each row at its place in the read
    assert dict(zip(landed["row"], landed["variant"], strict=True)) == dict(enumerate(served))
    # every row logged with the keys its variant was chosen by, whatever that variant reads
    by_row = dict(zip(landed["row"], landed["account_id"], strict=True))
    assert by_row == {i: row["account_id"] for i, row in enumerate(rows)}
    only = skew(registry, "--variant", V2, "--json", str(tmp_path / "v2.json"))
    assert only.returncode == 0, only.stdout + only.stderr
    summary = json.loads((tmp_path / "v2.json").read_text())
    assert (summary["rows"], summary["variant"]) == (on_v2, V2)
    assert not any(f["feature"].startswith("account_profile") for f in summary["features"])
    assert all(f["equal"] + f["both_missing"] == on_v2 for f in summary["features"])
    mine = skew(registry, "--variant", V1, "--json", str(tmp_path / "v1.json"))
    assert json.loads((tmp_path / "v1.json").read_text())["rows"] == len(rows) - on_v2
    assert mine.returncode == 0, mine.stdout
    removed = yaml.safe_load(registry.read_text())
    del removed["patterns"]["service_features"]["rollout"]
    registry.write_text(yaml.safe_dump(removed, sort_keys=False))
    after = skew(registry, "--json", str(tmp_path / "after.json"))
    assert after.returncode == 0, after.stdout + after.stderr
    summary = json.loads((tmp_path / "after.json").read_text())
    assert summary["not_compared"] == {V2: on_v2} and summary["rows"] == len(rows)
    assert f"{on_v2} rows served by variant {V2}" in after.stdout
    registry.write_text(yaml.safe_dump(found_with_rollout, sort_keys=False))
    unknown = skew(registry, "--variant", "v3")
    assert unknown.returncode != 0
    assert f"no variant 'v3'; its variants: {V1}, {V2}" in unknown.stdout + unknown.stderr
    model = ["--model", "datalayer.examples.model:predict", "--labels", "feature_reads"]
    evaluated = cli(registry, "evaluate", *model)
    assert evaluated.returncode != 0
    assert "name the model's with --variant" in evaluated.stdout + evaluated.stderr


def pd_rows(registry: Path) -> Any:
    import pandas as pd

    folder = registry.parent / ".datalayer" / "feature_logs" / "service_features"
    return pd.concat([pd.read_parquet(p) for p in folder.glob("part-*.parquet")])


def test_a_feature_service_the_repo_lacks_is_named_when_the_pattern_is_opened(
    tmp_path: Path,
) -> None:
    file = materialized(logging_example(tmp_path), T)
    found = yaml.safe_load(file.read_text())
    found["patterns"]["service_features"]["rollout"] = {
        "to_feature_service": "no_such_service",
        "percent": 5,
    }
    file.write_text(yaml.safe_dump(found, sort_keys=False))
    with (
        datalayer.open(file, "local") as dl,
        pytest.raises(datalayer.DataLayerError) as info,
    ):
        dl.features("service_features")
    said = str(info.value)
    assert "service_features" in said and "rollout.to_feature_service" in said
    assert "no_such_service" in said


def test_a_rollout_to_its_own_feature_service_is_refused(tmp_path: Path) -> None:
    file = logging_example(tmp_path)
    found = yaml.safe_load(file.read_text())
    found["patterns"]["service_features"]["rollout"] = {"to_feature_service": V1, "percent": 5}
    file.write_text(yaml.safe_dump(found, sort_keys=False))
    with pytest.raises(datalayer.ConfigError) as info:
        datalayer.open(file, "local")
    assert "service_features" in str(info.value) and "own 'alert_grouping_v1'" in str(info.value)


def test_the_feature_server_and_status_show_the_variants(registry: Path) -> None:
    import asyncio

    from datalayer.serve.app import FeatureServer

    rows = example_entity_rows()
    app = FeatureServer(datalayer.open(registry, "local"), {})
    app.open()

    def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], json.loads(bytes(sent[1]["body"]))

    try:
        status, answer = post(
            "/v1/features/service_features", {"entities": rows, "as_of": T.isoformat()}
        )
        # Feast's protocol with a features list: served by a pattern without a rollout
        feast_status, feast_answer = post(
            "/get-online-features",
            {
                "entities": {"service_id": ["svc-01"]},
                "features": ["service_alert_counts:alerts_1h"],
            },
        )
    finally:
        app.close()
    assert status == 200, answer
    served = answer["features"]
    with datalayer.open(registry, "local") as dl:
        assert served == json.loads(
            json.dumps(dl.features("service_features").online(rows, as_of=T), default=str)
        )
    assert set(served["variant"]) == {V1, V2}
    assert feast_status == 200, feast_answer
    assert feast_answer["metadata"]["feature_names"] == ["service_id", "alerts_1h"]
    status = subprocess.run(
        [sys.executable, "-m", "datalayer.cli", "rollout", "status", "--config", str(registry)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert status.returncode == 0, status.stderr
    (line,) = [s for s in status.stdout.splitlines() if "service_features" in s]
    assert f"feature service {V2}" in line and "30" in line, status.stdout


def test_describe_says_where_a_model_is_rolling_out(registry: Path) -> None:
    described = subprocess.run(
        [sys.executable, "-m", "datalayer.cli", "describe", "--config", str(registry), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert described.returncode == 0, described.stderr
    (row,) = [
        r for r in json.loads(described.stdout)["patterns"] if r["pattern"] == "service_features"
    ]
    assert row["target"].endswith(f"30% of entities to feature service '{V2}'"), row

"""The repository ``feast init`` generates, made by Feast's own CLI, for tests and benchmarks.

It is what a new Feast user has: a plain ``feature_store.yaml``, relative ``FileSource`` paths,
Map, Json and Struct features, two pandas on-demand views over a request source, a push source
and feature services that mix stored and on-demand features. ``init_template`` runs
``feast init`` and changes only what a team moving to Redis would: the online store (a literal
connection string). ``MORE_ON_DEMAND`` adds on-demand views the template
lacks (python mode, batch and singleton; pandas without request data).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from datalayer.stores.feast.repo_yaml import connection_string

#: On-demand views appended to the template's definitions: the modes and sources it lacks.
MORE_ON_DEMAND = """

# -- added by datalayer's tests: the on-demand modes the template lacks -----------------------
from typing import Any


# Python mode infers types from sample inputs, which Feast cannot make for Map features: these
# read a projection of the plain ones (made inline: a module-level one would be a second view).


@on_demand_feature_view(
    sources=[driver_stats_fv[["conv_rate", "acc_rate", "avg_daily_trips"]], input_request],
    schema=[
        Field(name="conv_rate_times_val", dtype=Float64),
        Field(name="trips_label", dtype=String),
    ],
    mode="python",
)
def python_conv_rate(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "conv_rate_times_val": [
            None if c is None else c * v
            for c, v in zip(inputs["conv_rate"], inputs["val_to_add"])
        ],
        "trips_label": [
            None if t is None else ("busy" if t > 500 else "calm")
            for t in inputs["avg_daily_trips"]
        ],
    }


@on_demand_feature_view(
    sources=[driver_stats_fv[["conv_rate", "acc_rate", "avg_daily_trips"]], input_request],
    schema=[Field(name="acc_rate_plus_val", dtype=Float64)],
    mode="python",
    singleton=True,
)
def singleton_acc_rate(inputs: dict[str, Any]) -> dict[str, Any]:
    acc = inputs["acc_rate"]
    return {"acc_rate_plus_val": None if acc is None else acc + inputs["val_to_add_2"]}


@on_demand_feature_view(
    sources=[driver_stats_fv],
    schema=[
        Field(name="acc_rate_pct", dtype=Float32),
        Field(name="conv_over_acc", dtype=Float64),
    ],
)
def rates_only(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["acc_rate_pct"] = (inputs["acc_rate"] * 100).astype("float32")
    df["conv_over_acc"] = inputs["conv_rate"] / inputs["acc_rate"]
    return df
"""


def init_template(
    folder: Path, redis_url: str, project: str, *, more_on_demand: bool = False
) -> Path:
    """``feast init <project>`` in ``folder``, its online store moved to Redis; the feature
    repo's path (``folder/<project>/feature_repo``)."""
    subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", "init", project],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    repo = folder / project / "feature_repo"
    yaml = repo / "feature_store.yaml"
    text = re.sub(
        r"(?ms)^online_store:\n(    .*\n)+",
        "online_store:\n"
        "    type: redis\n"
        f'    connection_string: "{connection_string(redis_url)}"\n',
        yaml.read_text(),
    )
    yaml.write_text(text)
    if more_on_demand:
        definitions = repo / "feature_definitions.py"
        definitions.write_text(definitions.read_text() + MORE_ON_DEMAND)
    return repo

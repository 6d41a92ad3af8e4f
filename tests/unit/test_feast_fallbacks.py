"""Where a fast path cannot serve a view, the reason names the view and its source; an
on-demand view datalayer does not compute is refused by name, never answered differently."""

from __future__ import annotations

import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, RequestSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from datalayer.errors import QueryError
from datalayer.stores.feast.on_demand import OnDemandRead
from datalayer.stores.feast.training_parquet import not_parquet


def view(name: str, source: object) -> FeatureView:
    thing = Entity(name="thing", join_keys=["thing_id"])
    return FeatureView(
        name=name, entities=[thing], schema=[Field(name="x", dtype=Int64)], source=source
    )


def test_the_first_view_the_fast_join_cannot_read_is_named_with_its_source() -> None:
    parquet = FileSource(path="data/a.parquet", timestamp_field="ts")
    views = {
        "a": view("a", parquet),
        "b": view("b", PostgreSQLSource(name="b", table="b", timestamp_field="ts")),
        "c": view("c", FileSource(path="data/c.csv", timestamp_field="ts")),
        "d": view(
            "d", FileSource(path="d.parquet", timestamp_field="ts", field_mapping={"y": "x"})
        ),
    }
    assert (
        not_parquet(views, ["a:x", "b:x"])
        == "view 'b' reads a PostgreSQLSource, not a parquet file"
    )
    assert not_parquet(views, ["c:x"]) == "view 'c' reads 'data/c.csv', not a .parquet file"
    assert "renames its source's columns" in not_parquet(views, ["d:x", "a:x"])


def test_on_demand_views_datalayer_does_not_compute_are_refused_by_name() -> None:
    source = RequestSource(name="extra", schema=[Field(name="bonus", dtype=Float64)])

    @on_demand_feature_view(
        sources=[source],
        schema=[Field(name="doubled", dtype=Float64)],
        write_to_online_store=True,
    )
    def stored_doubles(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"doubled": inputs["bonus"] * 2})

    with pytest.raises(QueryError, match="'stored_doubles' writes its values to the online store"):
        OnDemandRead.plan(["stored_doubles:doubled"], {"stored_doubles": stored_doubles})

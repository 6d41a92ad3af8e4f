"""Point-in-time joins on Feast's file offline store, as DuckDB queries.

Feast's own file/DuckDB retrieval builds the training set in several passes through pandas and
Ibis; the same semantics fit one ASOF join per view, which is what a hand-written join does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

TIMESTAMP = "event_timestamp"


def quoted(identifier: str) -> str:
    """A quoted DuckDB identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def parquet_sources(views: Mapping[str, Any], references: Sequence[str]) -> dict[str, str]:
    """Each view's parquet file, when every view reads one (the local profile)."""
    from feast import FileSource

    paths = {}
    for view_name in {ref.split(":", 1)[0] for ref in references}:
        source = views[view_name].batch_source
        if not isinstance(source, FileSource) or not str(source.path).endswith(".parquet"):
            return {}
        paths[view_name] = str(source.path)
    return paths


def historical_duckdb(frame: Any, views: Mapping[str, Any], references: Sequence[str]) -> Any:
    """Feast's point-in-time join as one DuckDB query: an ASOF LEFT JOIN per view on its join
    keys and ``feature time <= entity time``, rows of equal time deduplicated by their created
    time, values older than the view's TTL nulled (``entity time - ttl <= feature time``,
    inclusive, as Feast does)."""
    import duckdb

    paths = parquet_sources(views, references)
    wanted: dict[str, list[str]] = {}
    for reference in references:
        view, feature = reference.split(":", 1)
        wanted.setdefault(view, []).append(feature)
    selects, joins, ctes = ["e.*"], [], []
    for i, (view_name, features) in enumerate(wanted.items()):
        view = views[view_name]
        source = view.batch_source
        keys = list(view.join_keys)
        order = (
            f"{quoted(source.created_timestamp_column)} DESC"
            if source.created_timestamp_column
            else "1"
        )
        path = paths[view_name].replace("'", "''")
        key_list = ", ".join(quoted(k) for k in keys)
        ctes.append(
            f"f{i} AS (SELECT {key_list}, {quoted(source.timestamp_field)} AS __ts, "
            f"{', '.join(quoted(f) for f in features)} FROM read_parquet('{path}') "
            f"QUALIFY row_number() OVER (PARTITION BY {key_list}, "
            f"{quoted(source.timestamp_field)} ORDER BY {order}) = 1)"
        )
        on = " AND ".join(
            [
                *(f"e.{quoted(k)} = f{i}.{quoted(k)}" for k in keys),
                f"e.{quoted(TIMESTAMP)} >= f{i}.__ts",
            ]
        )
        joins.append(f"ASOF LEFT JOIN f{i} ON {on}")
        ttl = view.ttl // timedelta(microseconds=1) if view.ttl else 0
        for feature in features:
            value = f"f{i}.{quoted(feature)}"
            if ttl:
                value = (
                    f"CASE WHEN f{i}.__ts >= e.{quoted(TIMESTAMP)} - to_microseconds({ttl}) "
                    f"THEN {value} END"
                )
            selects.append(f"{value} AS {quoted(f'{view_name}__{feature}')}")
    sql = f"WITH {', '.join(ctes)} SELECT {', '.join(selects)} FROM entities e {' '.join(joins)}"
    with duckdb.connect() as con:
        con.register("entities", frame)
        return con.execute(sql).df()

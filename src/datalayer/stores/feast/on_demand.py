"""On-demand feature views: features computed from stored features and request data.

The stored inputs are read the usual way (the online read with its TTL, the training set's
point-in-time join), then each view's transformation runs once over the whole request or
training set, as Feast's offline retrieval runs it. Online, Feast's own input table and output
conversion are reproduced (the declared sources' features under both names, the join keys, the
request fields; outputs converted to the view's schema types), so the values equal what Feast's
online read gives wherever the inputs are within their views' TTL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datalayer.errors import QueryError
from datalayer.stores.feast import compat
from datalayer.stores.feast.online_redis import decode

#: Feast value types whose Python values build the same DataFrame with or without Arrow.
_PLAIN = frozenset({"INT32", "INT64", "FLOAT", "DOUBLE", "STRING", "BOOL"})
#: Value types converted in one numpy call, and the array dtypes Feast accepts for them.
_FAST = {"DOUBLE": ("float64",), "FLOAT": ("float32", "float64"), "INT64": ("int64",)}


@dataclass(frozen=True)
class OnDemandRead:
    """The on-demand part of one request shape: which stored references to read (the
    requested ones, then the inputs), and which on-demand features to compute from them."""

    stored: list[str]
    computed: dict[str, list[str]]  # on-demand view name -> its requested features
    request_fields: list[str]
    views: Mapping[str, Any]  # on-demand views by name
    references: list[str]

    @classmethod
    def plan(cls, references: Sequence[str], views: Mapping[str, Any]) -> OnDemandRead:
        """``references`` split into stored and computed ones; ``views`` holds every
        on-demand view of the registry."""
        stored: list[str] = []
        computed: dict[str, list[str]] = {}
        for reference in references:
            view, feature = reference.split(":", 1)
            if view in views:
                computed.setdefault(view, []).append(feature)
            elif reference not in stored:
                stored.append(reference)
        fields: list[str] = []
        for name in computed:
            view = views[name]
            refuse_unsupported(view)
            for reference in inputs(view):
                if reference not in stored:
                    stored.append(reference)
            fields.extend(f for f in request_schema(view) if f not in fields)
        return cls(stored, computed, fields, {n: views[n] for n in computed}, list(references))

    def online(
        self, rows: list[dict[str, Any]], keys: list[str], stored: dict[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """The requested columns, in order: stored ones as read, computed ones from them."""
        out = dict(stored)
        for name, features in self.computed.items() if rows else ():
            view = self.views[name]
            table = _online_inputs(view, rows, keys, stored)
            columns: dict[str, Any]
            with _transforming(view):
                if view.mode == "python":
                    result = _python_transform(view, table, len(rows))
                    columns = {f: _python_column(result, view, f) for f in features}
                else:
                    frame = view.feature_transformation.transform(_frame(view, table))
                    columns = {f: _pandas_column(frame, view, f) for f in features}
                for feature, column in columns.items():
                    value_type = _value_type(view, feature)
                    out[f"{name}__{feature}"] = as_feast_online(column, value_type)
        return {column: out.get(column, []) for column in _columns(self.references)}

    def historical(self, frame: Any, entity_columns: Sequence[str]) -> Any:
        """The training set with the computed columns added and the inputs nobody asked for
        dropped: each transformation sees the whole table, as in Feast's retrieval."""
        import pandas as pd
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        for name, features in self.computed.items():
            view = self.views[name]
            with _transforming(view):
                if view.singleton:
                    given = _with_short_names(view, table.to_pydict())
                    result = _python_transform(view, given, len(frame))
                    for feature in features:
                        values = _python_column(result, view, feature)
                        frame[f"{name}__{feature}"] = pd.Series(values, index=frame.index)
                    continue
                arrow = view.transform_arrow(table, True)
                for feature in features:
                    column = _arrow_column(arrow, view, feature)
                    frame[f"{name}__{feature}"] = column.to_pandas()
        return frame[[*entity_columns, *_columns(self.references)]]


@contextlib.contextmanager
def _transforming(view: Any) -> Iterator[None]:
    """A transformation's own failure as an error naming the on-demand view."""
    try:
        yield
    except QueryError:
        raise
    except Exception as exc:
        raise QueryError(
            f"on-demand feature view '{view.name}' failed: {type(exc).__name__}: {exc}"
        ) from exc


def refuse_unsupported(view: Any) -> None:
    """On-demand views datalayer does not compute: say so rather than answer differently."""
    if getattr(view, "write_to_online_store", False):
        raise QueryError(
            f"on-demand feature view '{view.name}' writes its values to the online store "
            "(write_to_online_store=True); datalayer computes on-demand views at read time only"
        )
    if getattr(view, "aggregations", None):
        raise QueryError(
            f"on-demand feature view '{view.name}' aggregates; datalayer does not serve "
            "on-demand aggregations"
        )
    if view.mode not in ("pandas", "python"):
        raise QueryError(
            f"on-demand feature view '{view.name}' is in mode '{view.mode}'; datalayer "
            "computes the pandas and python modes"
        )


def inputs(view: Any) -> list[str]:
    """``view:feature`` of every stored feature an on-demand view declares as its input."""
    return [
        f"{projection.name}:{feature.name}"
        for projection in view.source_feature_view_projections.values()
        for feature in projection.features
    ]


def request_schema(view: Any) -> dict[str, Any]:
    """The request-data fields of an on-demand view and their Feast value types."""
    return dict(view.get_request_data_schema())


def _columns(references: Sequence[str]) -> list[str]:
    return [reference.replace(":", "__", 1) for reference in references]


def _online_inputs(
    view: Any, rows: list[dict[str, Any]], keys: list[str], stored: dict[str, list[Any]]
) -> dict[str, list[Any]]:
    """What Feast's online read hands a transformation: join keys, request fields, and the
    declared sources' features under their full and their short names."""
    table: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in keys}
    for field in request_schema(view):
        table[field] = [row[field] for row in rows]
    for reference in inputs(view):
        column = reference.replace(":", "__", 1)
        table[column] = stored[column]
    return _with_short_names(view, table)


def _with_short_names(view: Any, table: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The declared sources' features under their short names too, as Feast gives them."""
    for projection in view.source_feature_view_projections.values():
        for feature in projection.features:
            full = f"{projection.name}__{feature.name}"
            if full in table:
                table.setdefault(feature.name, table[full])
    return table


def _frame(view: Any, table: dict[str, list[Any]]) -> Any:
    """The input DataFrame of a pandas transformation, as Feast builds it (through an Arrow
    table); straight from the lists where every input is a plain scalar, which gives the same
    frame in a fraction of the time."""
    import pandas as pd

    if _plain_inputs(view):
        return pd.DataFrame(table)
    import pyarrow as pa

    return pa.Table.from_pydict(table).to_pandas()


def _plain_inputs(view: Any) -> bool:
    kinds = [t.name for t in request_schema(view).values()]
    kinds += [
        feature.dtype.to_value_type().name
        for projection in view.source_feature_view_projections.values()
        for feature in projection.features
    ]
    return all(kind in _PLAIN for kind in kinds)


def _value_type(view: Any, feature: str) -> Any:
    return next(f.dtype for f in view.features if f.name == feature).to_value_type()


def _pandas_column(frame: Any, view: Any, feature: str) -> Any:
    """An output column of a pandas transformation, under its full or its short name."""
    full = f"{view.projection.name_to_use()}__{feature}"
    for name in (full, feature):
        if name in frame.columns:
            return frame[name]
    raise QueryError(
        f"on-demand feature view '{view.name}' did not return feature '{feature}' "
        f"(it returned {', '.join(map(str, frame.columns))})"
    )


def _arrow_column(table: Any, view: Any, feature: str) -> Any:
    """An output column of a transformation, under its full or its short name."""
    full = f"{view.projection.name_to_use()}__{feature}"
    for name in (full, feature):
        if name in table.column_names:
            return table.column(name)
    raise QueryError(
        f"on-demand feature view '{view.name}' did not return feature '{feature}' "
        f"(it returned {', '.join(table.column_names)})"
    )


def _python_transform(view: Any, table: dict[str, list[Any]], rows: int) -> dict[str, Any]:
    """A python transformation over a table: once, or once per row for a singleton one (Feast's
    own singleton call reads the first row only, whatever the number of rows)."""
    if not view.singleton:
        return view.transform_dict(table)  # type: ignore[no-any-return]
    transformation = view.feature_transformation
    each = [
        transformation.transform_singleton({k: [v[i]] for k, v in table.items()})
        for i in range(rows)
    ]
    return {name: [one[name] for one in each] for name in (each[0] if each else {})}


def _python_column(result: Mapping[str, Any], view: Any, feature: str) -> list[Any]:
    full = f"{view.projection.name_to_use()}__{feature}"
    for name in (full, feature):
        if name in result:
            values = result[name]
            return values if isinstance(values, list) else [values]
    raise QueryError(
        f"on-demand feature view '{view.name}' did not return feature '{feature}' "
        f"(it returned {', '.join(result)})"
    )


def as_feast_online(column: Any, value_type: Any) -> list[Any]:
    """Values as Feast's online read returns them: converted to the schema's type and back
    (a float32 feature is rounded to float32; NaN reads as None). Float and int64 arrays
    are converted in one numpy call; the rest value by value, by Feast."""
    import numpy as np
    import pandas as pd

    if isinstance(column, pd.Series):
        import pyarrow as pa

        values = pa.Array.from_pandas(column).to_numpy(zero_copy_only=False)
    else:
        values = column
    kind = value_type.name
    if isinstance(values, np.ndarray) and values.dtype.name in _FAST.get(kind, ()):
        if kind == "INT64":
            return values.tolist()  # type: ignore[no-any-return]
        with np.errstate(over="ignore"):  # too large for float32: infinite, as in Feast
            floats = values.astype(values.dtype if kind == "DOUBLE" else np.float32)
        out: list[Any] = floats.astype(np.float64).tolist()
        if np.isnan(floats).any():
            out = [None if v != v else v for v in out]
        return out
    return [decode(value) for value in compat.to_protos(values, value_type)]

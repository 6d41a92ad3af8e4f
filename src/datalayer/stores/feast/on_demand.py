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
class Computed:
    """One on-demand view of a request shape, with what each call needs worked out once."""

    view: Any
    features: list[str]  # the requested ones
    fields: list[str]  # its request-data fields
    inputs: list[tuple[str, str]]  # each input feature's full and short column name
    plain: bool  # every input a plain scalar: the input frame needs no Arrow
    types: dict[str, Any]  # each requested feature's Feast value type

    @classmethod
    def of(cls, view: Any, features: list[str]) -> Computed:
        refuse_unsupported(view)
        schema = request_schema(view)
        declared = [
            (projection.name, feature)
            for projection in view.source_feature_view_projections.values()
            for feature in projection.features
        ]
        kinds = [t.name for t in schema.values()]
        kinds += [feature.dtype.to_value_type().name for _, feature in declared]
        dtypes = {f.name: f.dtype.to_value_type() for f in view.features}
        return cls(
            view=view,
            features=features,
            fields=list(schema),
            inputs=[(f"{name}__{feature.name}", feature.name) for name, feature in declared],
            plain=all(kind in _PLAIN for kind in kinds),
            types={feature: dtypes[feature] for feature in features},
        )

    def online(
        self, rows: list[dict[str, Any]], keys: list[str], stored: dict[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """The requested features of these rows, as Feast's online read gives them: the
        transformation gets the join keys, the request fields and the declared sources'
        features under their full and their short names."""
        view = self.view
        table: dict[str, list[Any]] = {key: [row[key] for row in rows] for key in keys}
        for field in self.fields:
            table[field] = [row[field] for row in rows]
        for full, _ in self.inputs:
            table[full] = stored[full]
        for full, short in self.inputs:
            table.setdefault(short, table[full])
        columns: dict[str, Any]
        with _transforming(view):
            if view.mode == "python":
                result = _python_transform(view, table, len(rows))
                columns = {f: _python_column(result, view, f) for f in self.features}
            else:
                frame = view.feature_transformation.transform(self._frame(table))
                columns = {f: _pandas_column(frame, view, f) for f in self.features}
            return {
                f"{view.name}__{feature}": as_feast_online(column, self.types[feature])
                for feature, column in columns.items()
            }

    def _frame(self, table: dict[str, list[Any]]) -> Any:
        """The input DataFrame of a pandas transformation, as Feast builds it (through an
        Arrow table); straight from the lists where every input is a plain scalar, which
        gives the same frame sooner."""
        import pandas as pd
        import pyarrow as pa

        if self.plain:
            return pd.DataFrame(table)
        # one thread: for a request's few rows, starting threads costs more than converting
        return pa.Table.from_pydict(table).to_pandas(use_threads=False)

    def historical(self, frame: Any, table: Any) -> None:
        """The requested features added to a training set (``table``: it as Arrow): the
        transformation sees the whole table, as in Feast's retrieval."""
        import pandas as pd

        view = self.view
        with _transforming(view):
            if view.singleton:
                given = table.to_pydict()
                for full, short in self.inputs:
                    if full in given:
                        given.setdefault(short, given[full])
                result = _python_transform(view, given, len(frame))
                for feature in self.features:
                    values = _python_column(result, view, feature)
                    frame[f"{view.name}__{feature}"] = pd.Series(values, index=frame.index)
                return
            arrow = view.transform_arrow(table, True)
            for feature in self.features:
                frame[f"{view.name}__{feature}"] = _arrow_column(arrow, view, feature).to_pandas()


@dataclass(frozen=True)
class OnDemandRead:
    """The on-demand part of one request shape: which stored references to read (the
    requested ones, then the inputs), and which on-demand features to compute from them."""

    stored: list[str]
    computed: list[Computed]
    request_fields: list[str]
    references: list[str]

    @classmethod
    def plan(cls, references: Sequence[str], views: Mapping[str, Any]) -> OnDemandRead:
        """``references`` split into stored and computed ones; ``views`` holds every
        on-demand view of the registry."""
        stored: list[str] = []
        wanted: dict[str, list[str]] = {}
        for reference in references:
            view, feature = reference.split(":", 1)
            if view in views:
                wanted.setdefault(view, []).append(feature)
            elif reference not in stored:
                stored.append(reference)
        computed = [Computed.of(views[name], features) for name, features in wanted.items()]
        fields: list[str] = []
        for one in computed:
            stored.extend(r for r in inputs(one.view) if r not in stored)
            fields.extend(f for f in one.fields if f not in fields)
        return cls(stored, computed, fields, list(references))

    @property
    def views(self) -> dict[str, Any]:
        """The on-demand views computed, by name."""
        return {one.view.name: one.view for one in self.computed}

    def online(
        self, rows: list[dict[str, Any]], keys: list[str], stored: dict[str, list[Any]]
    ) -> dict[str, list[Any]]:
        """The requested columns, in order: stored ones as read, computed ones from them."""
        out = dict(stored)
        for one in self.computed if rows else ():
            out.update(one.online(rows, keys, stored))
        return {column: out.get(column, []) for column in _columns(self.references)}

    def historical(self, frame: Any, entity_columns: Sequence[str]) -> Any:
        """The training set with the computed columns added and the inputs nobody asked for
        dropped."""
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        for one in self.computed:
            one.historical(frame, table)
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

"""Feature logs landed in the offline PostgreSQL: one wide table per pattern.

The table has a row per entity of each logged read, as the parquet files do: the read's ids,
the entity keys, every feature and each view's event time, typed (a feature list as ``jsonb``),
so a point-in-time comparison can take its entity rows straight from it. Columns are added as
they appear (a feature added to the pattern later), and rows are inserted once: a batch landed
again after an interruption skips the rows the table has (``request_id`` and ``row``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from datalayer.categories.feature_log import log_frame
from datalayer.errors import DataLayerError

#: PostgreSQL keeps identifiers of at most this many bytes (longer ones are cut, silently).
MAX_NAME_BYTES = 63
_KEY = ("request_id", "row")
#: Rows per chunk read back.
CHUNK_ROWS = 50_000


def table_name(pattern: str) -> str:
    return f"feature_log_{pattern}"


def predictions_table_name(pattern: str) -> str:
    return f"feature_predictions_{pattern}"


class LogTable:
    """Writes landed rows of one pattern's log (or of its predictions) into a table keyed by
    ``key``."""

    def __init__(
        self,
        engine: Any,
        name: str,
        dtypes: dict[str, str],
        *,
        key: tuple[str, ...] = _KEY,
        time_column: str = "requested_at",
    ) -> None:
        self.engine = engine
        self.name = name
        #: pandas dtypes of the features whose values alone would not give theirs (an
        #: integer feature with a null would be floats).
        self.dtypes = dtypes
        self.key = key
        self.time_column = time_column

    def __str__(self) -> str:
        return f"table {self.name}"

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql

        frame = log_frame(rows)
        for column, dtype in self.dtypes.items():
            if column in frame.columns:
                frame[column] = frame[column].astype(dtype)
        long = [c for c in [self.name, *frame.columns] if len(c.encode()) > MAX_NAME_BYTES]
        if long:
            raise DataLayerError(
                f"{self}: PostgreSQL names are at most {MAX_NAME_BYTES} bytes, and "
                f"'{long[0]}' is longer: land this log into parquet files (--output FOLDER)"
            )
        inferred = {column: _sql_type(frame[column]) for column in frame.columns}
        with self.engine.begin() as connection:
            # One lander at a time creates or widens the table (concurrent DDL would collide).
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": self.name}
            )
            # A column keeps the type it was created with (a later batch may look otherwise:
            # all nulls, say).
            types = {**inferred, **self._create_or_widen(connection, inferred)}
            table = sa.Table(
                self.name, sa.MetaData(), *(sa.Column(c, types[c]) for c in frame.columns)
            )
            insert = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(self.key))
            connection.execute(insert, _records(frame))

    def chunks(
        self, since: datetime | None, until: datetime | None, size: int = CHUNK_ROWS
    ) -> Iterator[Any]:
        """The table's rows in [since, until), ``size`` at a time (a server-side cursor)."""
        import pandas as pd
        import sqlalchemy as sa

        clauses, params = [], {}
        column = self.engine.dialect.identifier_preparer.quote(self.time_column)
        if since is not None:
            clauses.append(f"{column} >= :since")
            params["since"] = since
        if until is not None:
            clauses.append(f"{column} < :until")
            params["until"] = until
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        quoted = self.engine.dialect.identifier_preparer.quote(self.name)
        with self.engine.connect().execution_options(stream_results=True) as connection:
            if not sa.inspect(connection).has_table(self.name):
                return
            sql = sa.text(f"SELECT * FROM {quoted}{where}")
            yield from pd.read_sql(sql, connection, params=params, chunksize=size)

    def clear(self) -> None:
        """Delete every row (the table stays, with its columns)."""
        import sqlalchemy as sa

        quoted = self.engine.dialect.identifier_preparer.quote(self.name)
        with self.engine.begin() as connection:
            if sa.inspect(connection).has_table(self.name):
                connection.execute(sa.text(f"DELETE FROM {quoted}"))

    def _create_or_widen(self, connection: Any, types: dict[str, Any]) -> dict[str, Any]:
        """Create the table, or add the columns it lacks; the types of those it had."""
        import sqlalchemy as sa

        preparer = connection.dialect.identifier_preparer
        quoted = preparer.quote(self.name)
        inspector = sa.inspect(connection)
        if not inspector.has_table(self.name):
            columns = ", ".join(
                f"{preparer.quote(c)} {t.compile(dialect=connection.dialect)}"
                + (" NOT NULL" if c in self.key else "")
                for c, t in types.items()
            )
            keys = ", ".join(preparer.quote(c) for c in self.key)
            connection.execute(sa.text(f"CREATE TABLE {quoted} ({columns}, PRIMARY KEY ({keys}))"))
            return {}
        existing = {c["name"]: c["type"] for c in inspector.get_columns(self.name)}
        for column, kind in types.items():
            if column not in existing:
                connection.execute(
                    sa.text(
                        f"ALTER TABLE {quoted} ADD COLUMN {preparer.quote(column)} "
                        f"{kind.compile(dialect=connection.dialect)}"
                    )
                )
        return existing


def _sql_type(series: Any) -> Any:
    """The column type of a landed column: from its dtype, or, for objects, text when every
    value is a string (or none is), boolean when every one is a bool (a null among them makes
    the column objects), and jsonb otherwise (lists, maps)."""
    import pandas as pd
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series):
        return sa.DateTime(timezone=True)
    if pd.api.types.is_bool_dtype(series):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(series):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(series):
        return sa.Float(precision=53)
    present = series.dropna().tolist()
    for kinds, sql_type in (
        ((str,), sa.Text()),
        ((bool,), sa.Boolean()),
    ):
        if all(isinstance(v, kinds) for v in present):
            return sql_type
    return postgresql.JSONB()


def _records(frame: Any) -> list[dict[str, Any]]:
    """Rows with plain Python values: None for every kind of missing, datetimes for times."""
    import pandas as pd

    out = []
    for record in frame.to_dict("records"):
        row = {}
        for column, value in record.items():
            if isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            elif value is pd.NaT or value is pd.NA or (isinstance(value, float) and value != value):
                value = None
            elif hasattr(value, "item") and not isinstance(value, list | dict):
                value = value.item()  # a numpy scalar
            row[column] = value
        out.append(row)
    return out

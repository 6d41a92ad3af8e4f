"""Column types of transactional tables, from a pattern schema's field annotations."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import types
import typing
import uuid
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware datetimes on every backend: stored in UTC, read back as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def column_type(annotation: Any) -> tuple[sa.types.TypeEngine[Any], bool]:
    """SQL type for a pydantic field annotation, and whether it admits None."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, inner_nullable = column_type(args[0])
            return inner, nullable or inner_nullable
        return sa.JSON(), nullable
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return sa.String(max(len(v) for v in values)), nullable
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return sa.BigInteger(), nullable
    if origin is typing.Annotated:
        return column_type(typing.get_args(annotation)[0])
    simple: list[tuple[type, sa.types.TypeEngine[Any]]] = [
        (bool, sa.Boolean()),
        (int, sa.BigInteger()),
        (float, sa.Double()),
        (decimal.Decimal, sa.Numeric(38, 10)),
        (dt.datetime, UTCDateTime()),
        (dt.date, sa.Date()),
        (uuid.UUID, sa.Uuid()),
        (str, sa.String()),
    ]
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return sa.String(), nullable
        for python_type, sql_type in simple:
            if issubclass(annotation, python_type):
                return sql_type, nullable
    return sa.JSON(), nullable

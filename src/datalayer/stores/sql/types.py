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
from pydantic.fields import FieldInfo

from datalayer.errors import QueryError
from datalayer.query import decimal_problem


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


#: The exponent of a decimal's leading digit, offset so every one a store keeps (see
#: ``patterns.check_storable``) is six digits: its place in ``ordered_text``.
_EXPONENT_OFFSET = 500_000
_FLIP = str.maketrans("0123456789", "9876543210")


def ordered_text(value: decimal.Decimal) -> str:
    """A finite decimal as text that sorts as the numbers do, equal for equal numbers.

    ``1`` for zero; ``2``, the leading digit's exponent (offset, six digits) and the digits
    for a positive number; ``0`` and the same with every digit flipped (9 - d) and a ``~``
    after, for a negative one: so comparing texts compares numbers, trailing zeros aside.
    """
    sign, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits)).rstrip("0")
    if not text:
        return "1"
    if not isinstance(exponent, int):
        raise ValueError(f"{value} has no exact text (refused before writing)")
    place = _EXPONENT_OFFSET + exponent + len(digits) - 1
    if not sign:
        return f"2{place:06d}{text}"
    return f"0{999_999 - place:06d}{text.translate(_FLIP)}~"


def from_ordered_text(text: str, scale: int | None) -> decimal.Decimal:
    """The decimal ``ordered_text`` wrote, with ``scale`` digits after the point when the schema
    declares them (as NUMERIC(p, s) reads back), else with none dropped before it."""
    if text == "1":
        return decimal.Decimal(0).scaleb(-(scale or 0))
    negative = text[0] == "0"
    place = int(text[1:7])
    digits = text[7:-1].translate(_FLIP) if negative else text[7:]
    if negative:
        place = 999_999 - place
    exponent = place - _EXPONENT_OFFSET - len(digits) + 1
    keep = -scale if scale is not None else 0
    if exponent > keep:  # pad with zeros, exactly: quantize would round past 28 digits
        digits += "0" * (exponent - keep)
        exponent = keep
    return decimal.Decimal((int(negative), tuple(map(int, digits)), exponent))


class ExactDecimal(sa.types.TypeDecorator[decimal.Decimal]):
    """Decimals kept exactly, never through a float.

    PostgreSQL: ``NUMERIC(p, s)`` when the schema declares both ``max_digits`` and
    ``decimal_places``, else unconstrained ``NUMERIC``, which keeps any digits given. SQLite,
    whose NUMERIC stores a float: ``ordered_text``, so comparisons and sorts stay exact.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int | None = None, scale: int | None = None) -> None:
        super().__init__(precision, scale, asdecimal=True)
        self.precision = precision
        self.scale = scale

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String())
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        if isinstance(value, float):  # a filter's float means its shortest text, as pydantic
            value = repr(value)  # reads one into a Decimal field
        try:
            number = decimal.Decimal(value)
        except (decimal.InvalidOperation, TypeError, ValueError) as exc:
            raise QueryError(
                f"a {type(value).__name__} that is no number cannot match a decimal"
            ) from exc
        if problem := decimal_problem(number):
            raise QueryError(f"a filter cannot compare a {problem}")
        return ordered_text(number)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> decimal.Decimal | None:
        if value is None or dialect.name != "sqlite":
            return typing.cast("decimal.Decimal | None", value)
        if not isinstance(value, str):  # a number a NUMERIC column held before ExactDecimal
            return decimal.Decimal(str(value))
        return from_ordered_text(value, self.scale)


def _declared(item: Any, name: str, default: int | None) -> int | None:
    value = getattr(item, name, None)
    return value if isinstance(value, int) else default


def decimal_type(metadata: typing.Iterable[Any]) -> ExactDecimal:
    """``ExactDecimal`` with the precision and scale a field's constraints declare, if both
    are, and PostgreSQL can hold them (at most 1000 digits)."""
    precision = scale = None
    for item in metadata:
        precision = _declared(item, "max_digits", precision)
        scale = _declared(item, "decimal_places", scale)
    if precision is None or scale is None or not 0 <= scale <= precision <= 1000:
        return ExactDecimal()
    return ExactDecimal(precision, scale)


def column_type(
    annotation: Any, metadata: typing.Sequence[Any] = ()
) -> tuple[sa.types.TypeEngine[Any], bool]:
    """SQL type for a pydantic field annotation and its constraints (``Field(...)``,
    ``Annotated`` metadata), and whether it admits None."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, inner_nullable = column_type(args[0], metadata)
            return inner, nullable or inner_nullable
        return sa.JSON(), nullable
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return sa.String(max(len(v) for v in values)), nullable
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return sa.BigInteger(), nullable
    if origin is typing.Annotated:
        inner_type, *extra = typing.get_args(annotation)
        # ``Annotated[Decimal, Field(...)]`` holds the constraints in the FieldInfo's metadata
        extra = [c for e in extra for c in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return column_type(inner_type, [*metadata, *extra])
    if isinstance(annotation, type) and issubclass(annotation, decimal.Decimal):
        return decimal_type(metadata), nullable
    simple: list[tuple[type, sa.types.TypeEngine[Any]]] = [
        (bool, sa.Boolean()),
        (int, sa.BigInteger()),
        (float, sa.Double()),
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

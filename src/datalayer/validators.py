"""Annotated types shared by the registry models: safe identifiers and durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

from datalayer.errors import shown

_SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration accepted, in seconds: 100 years (a longer one overflows downstream).
_LONGEST = 100 * 365.25 * 86400


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):  # ``$`` alone would let a trailing newline through
            raise ValueError(f"{shown(value)} is not a safe {what} (allowed: {pattern.pattern})")
        return value

    return AfterValidator(check)


def _not_reserved(what: str, reserved: re.Pattern[str], owner: str) -> AfterValidator:
    """Refuse a name that is, or may be read as, a system object of the store."""

    def check(value: str) -> str:
        if reserved.match(value):
            raise ValueError(f"{shown(value)} is reserved for {owner}; choose another {what}")
        return value

    return AfterValidator(check)


SqlIdentifier = Annotated[str, _matching(_SQL_IDENTIFIER, "table/collection/column name")]
#: PostgreSQL resolves ``pg_*`` names to its catalogs first; SQLite owns ``sqlite_*``;
#: Alembic keeps its revision in ``alembic_version``.
TableName = Annotated[
    SqlIdentifier,
    _not_reserved(
        "table name",
        re.compile(r"(?i)^(pg_|sqlite_|information_schema$|alembic_version$)"),
        "the database's own tables (pg_*, sqlite_*, information_schema, alembic_version)",
    ),
]
CollectionName = Annotated[
    SqlIdentifier,
    _not_reserved("collection name", re.compile(r"(?i)^system$"), "MongoDB's system.* collections"),
]
#: No leading ``_`` or ``.``: Kafka's internal topics (``__consumer_offsets``) stay out of reach.
TopicName = Annotated[str, _matching(_TOPIC, "topic name")]
Name = Annotated[str, _matching(_NAME, "name")]
FieldPath = Annotated[str, _matching(_FIELD_PATH, "field path")]


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8: no lone surrogate (``"\\ud800"``, or what
    ``surrogateescape`` decoding leaves), which no store, driver or JSON encoder takes."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def text_problem(text: str) -> str | None:
    """Why some store would not keep ``text`` as it is: NUL (PostgreSQL's text refuses it,
    SQLite's JSON functions end a text there) or a lone surrogate (no UTF-8 form); None when
    every store keeps it."""
    if "\x00" in text:
        return "text may not contain NUL"
    if not is_utf8(text):
        return "text is not valid Unicode (it holds a lone surrogate)"
    return None


def parse_duration(value: Any) -> timedelta:
    """Accept ``30s``, ``5m``, ``1h``, ``2d``, ``500ms``, a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"not a duration: {shown(value)}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m["num"]) * _UNITS[m["unit"] or "s"]
    else:
        raise ValueError(f"not a duration: {shown(value)} (use e.g. 30s, 5m, 1h, 2d)")
    if not 0 < seconds <= _LONGEST:
        raise ValueError(f"a duration must be positive and at most 100 years, got {shown(value)}")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
]

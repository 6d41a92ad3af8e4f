"""Annotated types shared by the registry models: safe identifiers and durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"'{value}' is not a safe {what} (allowed: {pattern.pattern})")
        return value

    return AfterValidator(check)


SqlIdentifier = Annotated[str, _matching(_SQL_IDENTIFIER, "table/collection/column name")]
TopicName = Annotated[str, _matching(_TOPIC, "topic name")]
Name = Annotated[str, _matching(_NAME, "name")]
FieldPath = Annotated[str, _matching(_FIELD_PATH, "field path")]


def parse_duration(value: Any) -> timedelta:
    """Accept ``30s``, ``5m``, ``1h``, ``2d``, ``500ms``, a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m["num"]) * _UNITS[m["unit"] or "s"]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h, 2d)")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return timedelta(seconds=seconds)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda d: f"{d.total_seconds():g}s", return_type=str),
]

"""The filter, sort and update language shared by the transactional and document contracts.

Filters are plain dicts, parsed here into conditions that each store translates to its own
query language with bound parameters; nothing is ever evaluated as code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from datalayer.errors import QueryError, shown
from datalayer.validators import _FIELD_PATH, text_problem

#: Operators every store of the transactional and document categories supports.
OPERATORS = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$exists")
_RANGE = ("$gt", "$gte", "$lt", "$lte")
#: The most values one ``$in`` may list: every store takes this many bound values at once.
MAX_IN = 10_000
#: The integers every store holds exactly (64-bit signed: SQLite, PostgreSQL BIGINT, BSON).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The digits every store keeps before and after a decimal's point (PostgreSQL's NUMERIC).
DECIMAL_DIGITS_BEFORE, DECIMAL_DIGITS_AFTER = 131_072, 16_383


def decimal_problem(value: Decimal) -> str | None:
    """Why some store would not keep a decimal exactly (NaN, infinities, too many digits)."""
    if not value.is_finite():
        return f"{value} cannot be stored"
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if (value and value.adjusted() >= DECIMAL_DIGITS_BEFORE) or exponent < -DECIMAL_DIGITS_AFTER:
        return (
            f"decimal with more than {DECIMAL_DIGITS_BEFORE:,} digits before the point or "
            f"{DECIMAL_DIGITS_AFTER:,} after it"
        )
    return None


def check_value(field: str, value: Any) -> Any:
    """A filter or key value every store can compare: no integer past 64 bits, no NaN or
    infinity, no text some store cannot hold (NUL, a lone surrogate)."""
    if isinstance(value, str):
        if problem := text_problem(value):
            raise QueryError(f"field '{field}': {problem}, so no stored value equals it")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise QueryError(f"field '{field}': {value} is outside the 64-bit integer range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"field '{field}': {value} is not a number a filter can compare")
    elif isinstance(value, Decimal) and (problem := decimal_problem(value)):
        raise QueryError(f"field '{field}': a filter cannot compare a {problem}")
    return value


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool


def _check_field(field: str) -> str:
    if not isinstance(field, str) or not _FIELD_PATH.fullmatch(field):
        raise QueryError(f"{shown(field)} is not a valid field path (letters, digits, '_', dots)")
    return field


def parse_filter(where: Mapping[str, Any] | None) -> list[Condition]:
    """``{"a": 1, "b": {"$gte": 2, "$lt": 5}, "c": {"$in": [..]}}`` into conditions (ANDed)."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise QueryError(f"a filter must be a mapping of field to condition, got {shown(where)}")
    conditions: list[Condition] = []
    for field, spec in where.items():
        _check_field(field)
        if isinstance(spec, Mapping) and any(str(k).startswith("$") for k in spec):
            for op, value in spec.items():
                if op not in OPERATORS:
                    raise QueryError(
                        f"operator {shown(op)} on field '{field}' is not supported; "
                        f"supported: {', '.join(OPERATORS)}"
                    )
                if op == "$in" and (
                    isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence)
                ):
                    raise QueryError(f"'$in' on field '{field}' needs a list, got {shown(value)}")
                if op == "$exists" and not isinstance(value, bool):
                    raise QueryError(f"'$exists' on field '{field}' needs true or false")
                if op in _RANGE and (value is None or isinstance(value, bool)):
                    raise QueryError(
                        f"'{op}' on field '{field}' orders values: {shown(value)} has no order "
                        "(stores disagreed: SQLite read true as 1, MongoDB ordered no bool)"
                    )
                if op == "$in":
                    if len(value) > MAX_IN:
                        raise QueryError(
                            f"'$in' on field '{field}' has {len(value):,} values; "
                            f"at most {MAX_IN:,} (query in batches)"
                        )
                    value = [check_value(field, v) for v in value]
                conditions.append(Condition(field, op, check_value(field, value)))
        elif isinstance(spec, Mapping):
            raise QueryError(
                f"field '{field}': a filter compares values, not objects; "
                f"match nested fields by dotted path (e.g. '{field}.name') or use an operator "
                f"({', '.join(OPERATORS)})"
            )
        else:
            conditions.append(Condition(field, "$eq", check_value(field, spec)))
    return conditions


def parse_sort(sort: str | Sequence[str] | None) -> list[SortKey]:
    """``"-opened_at"`` or ``["service_id", "-opened_at"]``: a leading '-' sorts descending."""
    if sort is None:
        return []
    if not isinstance(sort, str | Sequence):
        raise QueryError(f"a sort is a field name or a list of them, got {shown(sort)}")
    items = [sort] if isinstance(sort, str) else list(sort)
    keys = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise QueryError(
                f"a sort key must be a field name, optionally with '-', got {shown(item)}"
            )
        descending = item.startswith("-")
        keys.append(SortKey(_check_field(item.removeprefix("-")), descending))
    return keys


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= INT64_MAX
    ):
        raise QueryError(f"limit must be a positive 64-bit integer or None, got {shown(limit)}")
    return limit


def apply_update(
    doc: Mapping[str, Any],
    *,
    set: Mapping[str, Any] | None = None,
    unset: Sequence[str] | None = None,
    push: Mapping[str, Any] | None = None,
    inc: Mapping[str, int | float] | None = None,
) -> dict[str, Any]:
    """A partial update on a copy of ``doc``: dotted paths allowed, ``push`` appends to lists,
    ``inc`` adds to numbers (a missing field counts as 0)."""
    result = copy.deepcopy(dict(doc))
    for path, value in (set or {}).items():
        parent, leaf = _walk(result, _check_field(path), create=True)
        parent[leaf] = value
    for path in unset or ():
        parent, leaf = _walk(result, _check_field(path), create=False)
        if parent is not None:
            parent.pop(leaf, None)
    for path, value in (push or {}).items():
        parent, leaf = _walk(result, _check_field(path), create=True)
        current = parent.setdefault(leaf, [])
        if not isinstance(current, list):
            raise QueryError(
                f"cannot push to '{path}': it holds {type(current).__name__}, not a list"
            )
        current.append(value)
    for path, amount in (inc or {}).items():
        parent, leaf = _walk(result, _check_field(path), create=True)
        number = parent.get(leaf, 0)
        if not is_number(number):
            raise QueryError(f"cannot inc '{path}': it holds {type(number).__name__}, not a number")
        parent[leaf] = number + amount
    return result


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_increments(inc: Mapping[str, Any]) -> None:
    """Every ``inc`` amount a finite number every store adds exactly (64-bit for integers)."""
    for path, amount in inc.items():
        _check_field(path)
        if not is_number(amount) or (isinstance(amount, float) and not math.isfinite(amount)):
            raise QueryError(f"inc of '{path}' must be a finite number, got {shown(amount)}")
        if isinstance(amount, int) and not INT64_MIN <= amount <= INT64_MAX:
            raise QueryError(f"inc of '{path}': {amount} is outside the 64-bit integer range")


def _walk(doc: dict[str, Any], path: str, *, create: bool) -> tuple[Any, str]:
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            if not create:
                return None, parts[-1]
            child = node[part] = {}
        if not isinstance(child, dict):
            raise QueryError(f"cannot update '{path}': '{part}' is not an object")
        node = child
    return node, parts[-1]


def check_update(set: Any, unset: Any, push: Any, inc: Any = None) -> None:
    """Reject an update of the wrong shape (``set``, ``push`` and ``inc`` map field paths to
    values, ``unset`` lists field paths), an empty one, or one touching a path twice."""
    for name, given in (("set", set), ("push", push), ("inc", inc)):
        if given is not None and not isinstance(given, Mapping):
            raise QueryError(
                f"'{name}' of an update maps field paths to values, got {type(given).__name__}"
            )
    if unset is not None and (isinstance(unset, str | bytes) or not isinstance(unset, Sequence)):
        raise QueryError(f"'unset' of an update lists field paths, got {type(unset).__name__}")
    paths = [*(set or {}), *(unset or []), *(push or {}), *(inc or {})]
    for path in paths:
        _check_field(path)
    if not paths:
        raise QueryError("an update needs at least one of set, unset, push or inc")
    if len(paths) != len(set_ := {*paths}) or any(
        a != b and (a.startswith(b + ".") or b.startswith(a + ".")) for a in set_ for b in set_
    ):
        raise QueryError(f"an update touches the same path twice: {sorted(paths)}")

"""What the contracts promise, written out independently of the stores, so each attempt knows
what to expect: the stored form of a value, what a filter matches, what order a sort gives.

``Refuse`` means the contract refuses the input; ``Either`` that it may refuse it or keep it
in a form the suites do not pin down (pydantic's JSON of bytes, sets, complex numbers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

#: Operators of the shared filter language, and the most values one ``$in`` takes.
OPERATORS = ("$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$exists")
MAX_IN = 10_000
#: How deep documents nest, the document itself counted (MongoDB's limit).
MAX_DOCUMENT_DEPTH = 100
FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: What no document field name holds: MongoDB's dot, and what FerretDB cannot read back.
NAME_BREAKERS = re.compile(r'[.\\"\x00-\x1f]')
MISSING = object()


class Refuse(Exception):
    """The contract refuses this input."""


class Either(Exception):
    """The contract may refuse this input or keep it in a form not pinned down here."""


def utf8_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def text_ok(text: str) -> bool:
    """Text every store of the transactional and document categories keeps."""
    return "\x00" not in text and utf8_ok(text)


def json_form(value: Any) -> Any:
    """What a JSON store (key-value, a schemaless event) reads back, or ``Refuse``: no NaN,
    infinities, non-JSON types, lone surrogates or nesting past the encoder's reach."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode()
        return json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Refuse(str(exc)) from exc


def depth_of(value: Any) -> int:
    """Levels of objects and lists in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, level + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def utc_text(value: datetime) -> str:
    """A datetime as documents store it: the UTC instant to the microsecond, then ``Z``."""
    try:
        at = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError as exc:
        raise Refuse("no UTC instant") from exc
    return at.isoformat(timespec="microseconds") + "Z"


def is_plain_scalar(value: Any) -> bool:
    """True for None, a bool, an int, a float or text that every store keeps as it is;
    ``Refuse`` for one of those no store keeps; False for any other value."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise Refuse("integer past 64 bits")
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refuse("not finite")
        return True
    if isinstance(value, str):
        if not text_ok(value):
            raise Refuse("NUL or a lone surrogate")
        return True
    return False


def document_form(value: Any, *, top: bool = False) -> Any:
    """A field value as the document contract stores it, or ``Refuse``: JSON values with
    datetimes as UTC text; no NaN, infinities, integers past 64 bits, NUL, lone surrogates or
    field names MongoDB or FerretDB refuse (``$``-prefixed, dotted, with a backslash, a double
    quote or a control character, and ``_id`` at the top)."""
    if is_plain_scalar(value):
        return value
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, dict):
        out = {}
        for name, child in value.items():
            if (
                not isinstance(name, str)
                or name.startswith("$")
                or NAME_BREAKERS.search(name)
                or not text_ok(name)
                or (top and name == "_id")
            ):
                raise Refuse(f"field name {name!r}")
            out[name] = document_form(child)
        return out
    if isinstance(value, list | tuple):
        return [document_form(child) for child in value]
    if isinstance(value, Decimal) and not value.is_finite():
        raise Refuse("not finite")
    raise Either(value)


def expected_document(doc: dict[str, Any]) -> Any:
    """``document_form`` of a whole document, its depth checked first."""
    if depth_of(doc) > MAX_DOCUMENT_DEPTH:
        raise Refuse(f"nests deeper than {MAX_DOCUMENT_DEPTH} levels")
    return document_form(doc, top=True)


def kind(value: Any) -> str:
    """The kind of value a filter compares: values of one kind only compare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def filter_value(value: Any) -> Any:
    """A filter value as the contract takes it, or ``Refuse``/``Either``."""
    if is_plain_scalar(value):
        return value
    if isinstance(value, datetime):
        utc_text(value)  # refuses one without a UTC instant
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise Refuse("not finite")
        return value  # a number to a table; documents refuse it (they keep decimals as text)
    if isinstance(value, bytes | bytearray | complex):
        raise Either(value)  # documents compare its JSON text; a typed column refuses it
    raise Refuse(f"{type(value).__name__} is not a scalar filter value")


def parse_filter(where: Any) -> list[tuple[str, str, Any]]:
    """The filter as (field, operator, value) triples, or ``Refuse`` where the contract
    refuses it: fields that are not dotted paths, unknown operators, ``$in`` without a list
    (or with too many values), ``$exists`` without a bool, objects or lists as values, None or
    bools in a range."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise Refuse("not a mapping")
    out: list[tuple[str, str, Any]] = []
    for name, spec in where.items():
        if not isinstance(name, str) or not FIELD_PATH.fullmatch(name):
            raise Refuse(f"field {name!r}")
        if isinstance(spec, Mapping) and any(str(k).startswith("$") for k in spec):
            for op, value in spec.items():
                if op not in OPERATORS:
                    raise Refuse(f"operator {op!r}")
                if op == "$in":
                    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list):
                        raise Refuse("$in needs a list")
                    if len(value) > MAX_IN:
                        raise Refuse("$in past its limit")
                    out.append((name, op, [filter_value(v) for v in value]))
                elif op == "$exists":
                    if not isinstance(value, bool):
                        raise Refuse("$exists needs a bool")
                    out.append((name, op, value))
                else:
                    value = filter_value(value)
                    if op != "$eq" and (value is None or isinstance(value, bool)):
                        raise Refuse("a range on None or a bool")
                    out.append((name, op, value))
        elif isinstance(spec, Mapping):
            raise Refuse("an object as a value")
        else:
            out.append((name, "$eq", filter_value(spec)))
    return out


def at_path(row: Mapping[str, Any], path: str) -> Any:
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def _comparable(value: Any) -> Any:
    """Datetimes compare as instants (documents hold them as UTC text)."""
    return utc_text(value) if isinstance(value, datetime) else value


def _equal(held: Any, wanted: Any) -> bool:
    if held is MISSING or held is None:
        return wanted is None
    held, wanted = _comparable(held), _comparable(wanted)
    return kind(held) == kind(wanted) and bool(held == wanted)


def _ordered(held: Any, op: str, wanted: Any) -> bool:
    held, wanted = _comparable(held), _comparable(wanted)
    if held is MISSING or kind(held) != kind(wanted):
        return False
    if op == "$gt":
        return bool(held > wanted)
    if op == "$gte":
        return bool(held >= wanted)
    if op == "$lt":
        return bool(held < wanted)
    return bool(held <= wanted)


def matches(
    row: Mapping[str, Any], conditions: list[tuple[str, str, Any]], *, null_exists: bool = True
) -> bool:
    """Whether ``row`` matches every condition: equality and ranges compare values of one kind
    only (a bool is not a number, an object not text), None matches null or missing (in
    ``$in`` too), ``$exists`` asks for the field (in a document a null field exists; in a row,
    ``null_exists=False``, a column exists when it is not null)."""
    for name, op, wanted in conditions:
        held = at_path(row, name)
        if op == "$eq":
            ok = _equal(held, wanted)
        elif op == "$in":
            ok = any(_equal(held, w) for w in wanted)
        elif op == "$exists":
            ok = (held is not MISSING and (null_exists or held is not None)) == wanted
        else:
            ok = _ordered(held, op, wanted)
        if not ok:
            return False
    return True


def sort_order(
    rows: list[dict[str, Any]], sort: Any, key: str, columns: set[str] | None = None
) -> list[Any]:
    """Keys of ``rows`` in ``sort`` order (missing or null first ascending, last descending,
    ties by key), or ``Refuse``. ``columns``: the fields a table has (a sort on another is
    refused); None for documents, where any path but ``_id`` sorts."""
    if sort is None:
        items: list[Any] = []
    elif isinstance(sort, str):
        items = [sort]
    elif isinstance(sort, list | tuple):
        items = list(sort)
    else:
        raise Refuse("not a field or a list of them")
    parsed = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise Refuse(f"sort key {item!r}")
        name = item.removeprefix("-")
        if not FIELD_PATH.fullmatch(name):
            raise Refuse(f"sort field {name!r}")
        if columns is not None and name not in columns:
            raise Refuse(f"no column {name!r}")
        if columns is None and name.split(".")[0] == "_id":
            raise Refuse("_id is MongoDB's own key")
        parsed.append((name, item.startswith("-")))
    ordered = sorted(rows, key=lambda r: str(r[key]))
    for name, descending in reversed(parsed):

        def place(row: dict[str, Any], name: str = name) -> tuple[int, Any]:
            held = at_path(row, name)
            return (0, 0) if held is MISSING or held is None else (1, held)

        ordered.sort(key=place, reverse=descending)
    return [row[key] for row in ordered]


def limit_refused(limit: Any) -> bool:
    """Whether the contract refuses ``limit``: anything but a positive 64-bit int or None."""
    if limit is None:
        return False
    return not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit < 2**63

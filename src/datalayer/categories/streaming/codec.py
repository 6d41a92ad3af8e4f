"""Events to bytes and back: schema validation, compact JSON, partition keys."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter, itemgetter
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from datalayer.categories.streaming.backend import OutgoingRecord, Record
from datalayer.categories.streaming.pattern import StreamingPattern
from datalayer.errors import PayloadValidationError, shown
from datalayer.patterns import (
    DictCodec,
    dict_codec,
    loads_json,
    validate_model,
    validate_payload,
)
from datalayer.validators import is_utf8

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
#: Events validated per pydantic call by ``EventCodec.encode_many``.
_SLICE = 64
_TO_JSON: TypeAdapter[Any] = TypeAdapter(Any)


class EventCodec:
    """Validates events against a pattern's schema, serializes them and reads their keys."""

    def __init__(self, pattern: StreamingPattern) -> None:
        # Read once: the pattern's private attributes are slow to read on every event.
        self._name = pattern.name
        self._key_name = pattern.key or ""
        self._schema = pattern.schema_cls
        self._key_path = pattern.key.split(".") if pattern.key else None
        # One pydantic call validates a whole batch; the schema's serializer writes its bytes.
        # Batches of dicts skip building models when the schema's fields are all it checks.
        self._batch: TypeAdapter[list[BaseModel]] | None = None
        self._to_json: Callable[[BaseModel], bytes] | None = None
        self._dicts: DictCodec | None = None
        if self._schema is not None:
            self._batch = TypeAdapter(list[self._schema])  # type: ignore[name-defined]
            self._to_json = self._schema.__pydantic_serializer__.to_json
            self._dicts = dict_codec(self._schema)
        self._from_json = self._dicts.from_json if self._dicts is not None else None
        self._many_from_json = self._dicts.many_from_json if self._dicts is not None else None
        field = self._key_path[0] if self._key_path and len(self._key_path) == 1 else None
        self._key_field = attrgetter(field) if field and self._schema is not None else None
        self._key_item = itemgetter(field) if field and self._schema is not None else None
        # A key field declared ``str`` is text once validated: no per-event check is needed.
        declared = self._schema.model_fields.get(field) if field and self._schema else None
        self._key_is_text = declared is not None and declared.annotation is str
        # Validation lets NaN and infinities through and the serializer writes them as null:
        # checked after validation, only on the fields that can hold a float (often none).
        self._finite = finite_check(self._schema) if self._schema is not None else None

    def encode(
        self, event: Any, key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> OutgoingRecord:
        """Validate and serialize one event (compact UTF-8 JSON) and find its partition key;
        a ``key`` or ``headers`` given are checked to be text (``check_extras``)."""
        if key is not None or headers is not None:
            headers = self.check_extras(key, headers)
        if self._to_json is not None and self._schema is not None:
            value: Any = validate_model(self._name, self._schema, event)
            if self._finite is not None:
                found = self._finite.one(value)
                if found is not None:
                    self._refuse_non_finite(*found)
            body = self._serialized(self._to_json, [value], 0)[0]
        else:
            value = validate_payload(self._name, None, event)
            try:
                body = _JSON.encode(value).encode()
            except RecursionError as exc:
                raise PayloadValidationError(
                    self._name, [("", "nests too deep for the JSON encoder (about 1,000 levels)")]
                ) from exc
            except (TypeError, ValueError) as exc:  # NaN, infinity, or no JSON form at all
                found = non_finite(value, "")
                if found is not None:
                    self._refuse_non_finite(*found)
                raise PayloadValidationError(self._name, [("", str(exc))]) from exc
        if key is None and self._key_path:
            key = self._key_text(self._key_value(value))
        return OutgoingRecord(key=key, value=body, headers=dict(headers or {}))

    def check_extras(self, key: Any, headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """Refuse a partition key or headers that are not text every store carries as it is:
        strings of valid Unicode (drivers raised AttributeError or TypeError on others, and
        librdkafka crashed the process on a header name with a lone surrogate), header names
        without NUL (librdkafka ends a name there)."""
        problems = []
        if key is not None and not (isinstance(key, str) and is_utf8(key)):
            problems.append(("key", f"a partition key is text of valid Unicode, got {shown(key)}"))
        if headers is not None and not isinstance(headers, Mapping):
            problems.append(
                ("headers", f"headers are a mapping of text to text, got {shown(headers)}")
            )
        elif headers:
            for name, text in headers.items():
                if not (isinstance(name, str) and is_utf8(name)) or "\x00" in name:
                    problems.append(
                        ("headers", f"a header name is text without NUL, got {shown(name)}")
                    )
                elif not (isinstance(text, str) and is_utf8(text)):
                    problems.append(
                        (f"headers.{name}", f"a header value is text, got {shown(text)}")
                    )
        if problems:
            raise PayloadValidationError(self._name, problems)
        return headers

    def encode_many(self, events: Iterable[Any]) -> tuple[list[str | None], list[bytes]]:
        """Partition keys and bodies of a batch; an invalid event raises before any is sent.

        With a schema, events are validated a slice at a time (one pydantic call each), and
        each slice's models are serialized and dropped before the next: a whole batch of live
        models would keep the cyclic garbage collector promoting and rescanning them, which
        costs more than validating. A slice of dicts is validated into dicts instead when the
        schema allows (``DictCodec``: same checks, same bytes). A slice that fails is checked
        one event at a time to name the first bad one (and to accept instances of other models).
        """
        if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
            raise PayloadValidationError(  # a dict would be read as its keys, one event each
                self._name, [("", f"expected a list of events, got {type(events).__name__}")]
            )
        batch = events if isinstance(events, list) else list(events)
        if self._batch is None or self._to_json is None:
            records = [self._encode_at(i, event) for i, event in enumerate(batch)]
            return [r.key for r in records], [r.value for r in records]
        keys: list[str | None] = []
        values: list[bytes] = []
        dicts = self._dicts
        finite = self._finite
        for start in range(0, len(batch), _SLICE):
            part = batch[start : start + _SLICE]
            if dicts is not None and type(part[0]) is dict:
                try:
                    rows = dicts.validate_many(part)
                except ValidationError:
                    pass  # the model path below names the first bad event
                else:
                    if finite is not None:
                        self._check_finite(start, rows, finite)
                    values += self._serialized(dicts.to_json, rows, start)
                    keys += self._keys(rows, self._key_item)
                    continue
            try:
                models = self._batch.validate_python(part)
            except ValidationError:
                models = [self._validate_at(start + i, event) for i, event in enumerate(part)]
            if finite is not None:
                self._check_finite(start, models, finite)
            values += self._serialized(self._to_json, models, start)
            keys += self._keys(models, self._key_field)
        return keys, values

    def decode_many(self, records: list[Record]) -> list[Any] | None:
        """The payloads of ``records`` in one pydantic call, or ``None`` when the schema does
        not allow it or one of them fails (``decode`` then takes them one at a time)."""
        if self._many_from_json is None:
            return None
        try:
            return self._many_from_json([record.value for record in records])
        except ValueError:  # pydantic's ValidationError too
            return None

    def decode(self, record: Record) -> Any:
        """The record's payload, validated against the schema (in one pydantic call where the
        schema allows; what that refuses goes the long way, which names the problem)."""
        if self._from_json is not None:
            try:
                return self._from_json(record.value)
            except ValueError:  # pydantic's ValidationError too
                pass
        try:
            payload = loads_json(record.value)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested ~1,000 deep
            raise PayloadValidationError(self._name, [("", f"not JSON: {exc}")]) from exc
        return validate_payload(self._name, self._schema, payload)

    def _keys(self, found: list[Any], read_key: Callable[[Any], Any] | None) -> list[str | None]:
        """Partition keys of validated events (models or dicts; ``read_key`` reads one)."""
        if not self._key_path:
            return [None] * len(found)
        if read_key is not None:
            found = list(map(read_key, found))
            if self._key_is_text:
                return found
        else:
            found = [self._key_value(event) for event in found]
        if set(map(type, found)) == {str}:
            return found
        return [self._key_text(k) for k in found]

    def _serialized(
        self, to_json: Callable[[Any], bytes], events: list[Any], start: int
    ) -> list[bytes]:
        """Each event's JSON; one the serializer cannot write (text with a lone surrogate has
        no UTF-8 form) is refused, naming its index in the batch (``start``: its first)."""
        try:
            return list(map(to_json, events))
        except PydanticSerializationError:
            for i, event in enumerate(events):
                try:
                    to_json(event)
                except PydanticSerializationError as exc:
                    where = f"[{start + i}]" if len(events) > 1 or start else ""
                    raise PayloadValidationError(self._name, [(where, str(exc))]) from exc
            raise

    def _check_finite(self, start: int, events: list[Any], finite: FiniteCheck) -> None:
        """Refuse the batch if an event of this slice (``start``: the batch index of its first
        event) holds NaN or an infinity, naming the event and the field."""
        found = finite.first(events)
        if found is not None:
            index, field, number = found
            self._refuse_non_finite(f"[{start + index}].{field}", number)

    def _refuse_non_finite(self, field: str, number: float) -> None:
        raise PayloadValidationError(
            self._name, [(field, f"{number} is not a finite number: JSON cannot hold it")]
        )

    def _encode_at(self, index: int, event: Any) -> OutgoingRecord:
        """``encode`` for event ``index`` of a batch: a problem names the index too."""
        try:
            return self.encode(event)
        except PayloadValidationError as exc:
            problems = [(f"[{index}].{f}" if f else f"[{index}]", m) for f, m in exc.problems]
            raise PayloadValidationError(self._name, problems) from exc

    def _validate_at(self, index: int, event: Any) -> BaseModel:
        assert self._schema is not None
        try:
            return validate_model(self._name, self._schema, event)
        except PayloadValidationError as exc:
            problems = [(f"[{index}].{f}" if f else f"[{index}]", m) for f, m in exc.problems]
            raise PayloadValidationError(self._name, problems) from exc

    def _key_value(self, value: Any) -> Any:
        for part in self._key_path or ():
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        return value

    def _key_text(self, value: Any) -> str:
        if value is None:
            raise PayloadValidationError(
                self._name, [(self._key_name, "the partition key field is missing")]
            )
        if isinstance(value, str):
            return value
        return _JSON.encode(_TO_JSON.dump_python(value, mode="json")).strip('"')


def non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The first NaN or infinity in ``value`` (dicts, models, sequences), with its path."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if value is None or isinstance(value, str | int):
        return None
    if isinstance(value, Mapping | BaseModel):
        items = value.items() if isinstance(value, Mapping) else iter(value)
        for key, child in items:
            found = non_finite(child, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for i, child in enumerate(value):
            found = non_finite(child, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


class FiniteCheck:
    """Finds NaN and infinities in validated events (all dicts or all models) of one schema,
    looking only at the fields that can hold a float.

    A field declared ``float`` (or ``float | None``) is checked a slice at a time: the sum of
    its values is finite unless one of them is not (or the sum overflowed, in which case each
    value is looked at). Other fields that can hold a float are walked event by event.
    """

    def __init__(self, flat: list[str], deep: list[str], whole: bool = False) -> None:
        self.flat = flat
        self.deep = deep
        self.whole = whole
        self._items = [(name, itemgetter(name), attrgetter(name)) for name in flat]

    def one(self, event: Any) -> tuple[str, float] | None:
        """(field path, number) of the first NaN or infinity in one validated event."""
        if self.whole:
            return non_finite(event, "")
        dicts = type(event) is dict
        for name, item, attr in self._items:
            value = item(event) if dicts else attr(event)
            if type(value) is float:
                if not math.isfinite(value):
                    return name, value
            elif value is not None:
                hit = non_finite(value, name)
                if hit is not None:
                    return hit
        for name in self.deep:
            hit = non_finite(event.get(name) if dicts else getattr(event, name, None), name)
            if hit is not None:
                return hit
        return None

    def first(self, events: list[Any]) -> tuple[int, str, float] | None:
        """(index, field path, number) of the first event holding NaN or an infinity."""
        if not events:
            return None
        if self.whole:
            return self._walk(events, lambda event: non_finite(event, ""), len(events))
        dicts = type(events[0]) is dict
        found: tuple[int, str, float] | None = None
        for name, item, attr in self._items:
            read = item if dicts else attr
            try:
                if math.isfinite(sum(filter(None, map(read, events)))):
                    continue
            except TypeError:  # not a float after all (a model built without validation)
                pass
            values = map(read, events[: len(events) if found is None else found[0]])
            for i, value in enumerate(values):
                hit = non_finite(value, name)
                if hit is not None:
                    found = (i, *hit)
                    break
        if self.deep:

            def walk(event: Any) -> tuple[str, float] | None:
                for name in self.deep:
                    value = event.get(name) if dicts else getattr(event, name, None)
                    hit = non_finite(value, name)
                    if hit is not None:
                        return hit
                return None

            found = self._walk(events, walk, len(events) if found is None else found[0]) or found
        return found

    @staticmethod
    def _walk(
        events: list[Any], check: Callable[[Any], tuple[str, float] | None], stop: int
    ) -> tuple[int, str, float] | None:
        for i, event in enumerate(events[:stop]):
            hit = check(event)
            if hit is not None:
                return i, *hit
        return None


def finite_check(schema: type[BaseModel]) -> FiniteCheck | None:
    """The ``FiniteCheck`` of ``schema``, or ``None`` when no field can hold a float (at any
    depth, or through ``Any``, extra fields or user code)."""
    core: Any = schema.__pydantic_core_schema__
    fields = core.get("schema", {}).get("fields") if core.get("type") == "model" else None
    config = core.get("config") or {}
    if fields is None or config.get("extra_fields_behavior") == "allow":
        return FiniteCheck([], [], whole=True)  # a shape not read here: check it all
    flat: list[str] = []
    deep: list[str] = []
    for name, field in fields.items():
        if _is_float(field["schema"]):
            flat.append(name)
        elif _may_hold_float(field):
            deep.append(name)
    computed = core["schema"].get("computed_fields") or []
    deep += [c["property_name"] for c in computed if _may_hold_float(c)]
    return FiniteCheck(flat, deep) if flat or deep else None


def _is_float(node: Any) -> bool:
    """Whether a field's schema is plain ``float``, maybe optional or with a default."""
    while node.get("type") in ("default", "nullable") and "serialization" not in node:
        if node.get("type") == "default" and not isinstance(node.get("default"), float | None):
            return False
        node = node["schema"]
    return node.get("type") == "float" and "serialization" not in node


#: Core schema types whose values may be, or hold, a float the schema does not spell out.
_FLOATING = {"float", "any", "json", "complex", "definition-ref", "definitions", "is-instance"}
#: Container types whose items are ``Any`` when their item schema is left out.
_ITEMS = {
    "list": "items_schema",
    "set": "items_schema",
    "frozenset": "items_schema",
    "generator": "items_schema",
    "tuple": "items_schema",
    "dict": "values_schema",
}


def _may_hold_float(node: Any) -> bool:
    """Whether a core schema can validate or serialize to a float anywhere inside it: a float
    or ``Any`` field, a container without item types, a float literal, extra fields, or user
    code (validators and serializers may return anything)."""
    if isinstance(node, list | tuple):
        return any(_may_hold_float(child) for child in node)
    if not isinstance(node, dict):
        return False
    kind = node.get("type")
    if isinstance(kind, str):
        if kind in _FLOATING or kind.startswith("function") or "serialization" in node:
            return True
        if kind in _ITEMS and _ITEMS[kind] not in node:
            return True
        if kind == "literal" and any(isinstance(v, float) for v in node.get("expected", ())):
            return True
        if kind == "enum" and node.get("sub_type") == "float":
            return True
        if kind == "model" and (node.get("config") or {}).get("extra_fields_behavior") == "allow":
            return True
        if isinstance(node.get("default"), float):
            return True
    return any(_may_hold_float(v) for k, v in node.items() if k not in ("metadata", "default"))


def loose_decode(record: Record) -> Any:
    """The record's payload as JSON when it is JSON, else its bytes (dead letters)."""
    try:
        return loads_json(record.value)
    except ValueError:
        return record.value

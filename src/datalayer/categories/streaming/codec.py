"""Events to bytes and back: schema validation, compact JSON, partition keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from operator import attrgetter, itemgetter
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from datalayer.categories.streaming.backend import OutgoingRecord, Record
from datalayer.categories.streaming.pattern import StreamingPattern
from datalayer.errors import PayloadValidationError
from datalayer.patterns import DictCodec, dict_codec, validate_model, validate_payload

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
        field = self._key_path[0] if self._key_path and len(self._key_path) == 1 else None
        self._key_field = attrgetter(field) if field and self._schema is not None else None
        self._key_item = itemgetter(field) if field and self._schema is not None else None
        # A key field declared ``str`` is text once validated: no per-event check is needed.
        declared = self._schema.model_fields.get(field) if field and self._schema else None
        self._key_is_text = declared is not None and declared.annotation is str

    def encode(self, event: Any, key: str | None = None) -> OutgoingRecord:
        """Validate and serialize one event (compact UTF-8 JSON) and find its partition key."""
        if self._to_json is not None and self._schema is not None:
            value: Any = validate_model(self._name, self._schema, event)
            body = self._to_json(value)
        else:
            value = validate_payload(self._name, None, event)
            try:
                body = _JSON.encode(value).encode()
            except (TypeError, ValueError) as exc:  # NaN, infinity, or no JSON form at all
                raise PayloadValidationError(self._name, [("", str(exc))]) from exc
        if key is None and self._key_path:
            key = self._key_text(self._key_value(value))
        return OutgoingRecord(key=key, value=body)

    def encode_many(self, events: Iterable[Any]) -> tuple[list[str | None], list[bytes]]:
        """Partition keys and bodies of a batch; an invalid event raises before any is sent.

        With a schema, events are validated a slice at a time (one pydantic call each), and
        each slice's models are serialized and dropped before the next: a whole batch of live
        models would keep the cyclic garbage collector promoting and rescanning them, which
        costs more than validating. A slice of dicts is validated into dicts instead when the
        schema allows (``DictCodec``: same checks, same bytes). A slice that fails is checked
        one event at a time to name the first bad one (and to accept instances of other models).
        """
        batch = events if isinstance(events, list) else list(events)
        if self._batch is None or self._to_json is None:
            records = [self.encode(event) for event in batch]
            return [r.key for r in records], [r.value for r in records]
        keys: list[str | None] = []
        values: list[bytes] = []
        dicts = self._dicts
        for start in range(0, len(batch), _SLICE):
            part = batch[start : start + _SLICE]
            if dicts is not None and type(part[0]) is dict:
                try:
                    rows = dicts.validate_many(part)
                except ValidationError:
                    pass  # the model path below names the first bad event
                else:
                    values += map(dicts.to_json, rows)
                    keys += self._keys(rows, self._key_item)
                    continue
            try:
                models = self._batch.validate_python(part)
            except ValidationError:
                models = [self._validate_at(start + i, event) for i, event in enumerate(part)]
            values += map(self._to_json, models)
            keys += self._keys(models, self._key_field)
        return keys, values

    def decode(self, record: Record) -> Any:
        """The record's payload, validated against the schema."""
        try:
            payload = json.loads(record.value)
        except ValueError as exc:
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


def loose_decode(record: Record) -> Any:
    """The record's payload as JSON when it is JSON, else its bytes (dead letters)."""
    try:
        return json.loads(record.value)
    except ValueError:
        return record.value

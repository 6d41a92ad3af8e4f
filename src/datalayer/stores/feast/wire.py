"""The protobuf wire format of Feast's online values, read from Feast's own descriptors.

Feast stores each online value as a serialized ``ValueProto`` (one field of its ``val`` oneof)
and each event time as a ``google.protobuf.Timestamp``. The fast paths write and parse those
bytes without protobuf objects, so they need each field's number, type and tag: this table
derives them at import from the descriptors of the protobuf classes Feast itself uses, so a
renumbered field changes the table, and the self-check (``selfcheck``) catches what the fast
code cannot follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from datalayer.stores.feast import compat

#: Protobuf wire types by field type: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32.
_WIRE_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: 1,
    FieldDescriptor.TYPE_FIXED64: 1,
    FieldDescriptor.TYPE_SFIXED64: 1,
    FieldDescriptor.TYPE_FLOAT: 5,
    FieldDescriptor.TYPE_FIXED32: 5,
    FieldDescriptor.TYPE_SFIXED32: 5,
    FieldDescriptor.TYPE_STRING: 2,
    FieldDescriptor.TYPE_BYTES: 2,
    FieldDescriptor.TYPE_MESSAGE: 2,
}
#: ``struct`` codes of the fixed-width field types (little-endian on the wire).
_STRUCT_CODES = {FieldDescriptor.TYPE_DOUBLE: "d", FieldDescriptor.TYPE_FLOAT: "f"}


def varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


@dataclass(frozen=True)
class WireField:
    """One protobuf field as it appears on the wire."""

    name: str
    number: int
    type: int  # FieldDescriptor.TYPE_*
    key: int  # number << 3 | wire type
    tag: bytes  # ``key`` as a varint: what precedes the field's value
    struct_code: str | None  # for fixed-width fields: their ``struct`` code
    message_type: str | None = None  # for message fields: the message's full name

    @classmethod
    def of(cls, descriptor: Any) -> WireField:
        key = descriptor.number << 3 | _WIRE_TYPES.get(descriptor.type, 0)
        return cls(
            name=descriptor.name,
            number=descriptor.number,
            type=descriptor.type,
            key=key,
            tag=varint(key),
            struct_code=_STRUCT_CODES.get(descriptor.type),
            message_type=descriptor.message_type.full_name if descriptor.message_type else None,
        )


def _value_fields() -> dict[str, WireField]:
    """Each ``ValueProto`` oneof field by the Feast value type it holds (``int64_val``:
    ``INT64``, ``unix_timestamp_val``: ``UNIX_TIMESTAMP``, ...)."""
    oneof = compat.value_class().DESCRIPTOR.oneofs_by_name["val"]
    return {f.name.removesuffix("_val").upper(): WireField.of(f) for f in oneof.fields}


#: Feast value type name -> the ValueProto field that holds it.
VALUE = _value_fields()
#: A Timestamp's two fields.
SECONDS = WireField.of(Timestamp.DESCRIPTOR.fields_by_name["seconds"])
NANOS = WireField.of(Timestamp.DESCRIPTOR.fields_by_name["nanos"])

"""Decoded Avro and Protobuf records as the JSON value the rules read: one event shape for rules.

Pure. The mapping (README "Schema Registry events" has the table, `shapes` gives the same types
to `rules check`):

| Avro | Protobuf | JSON |
|---|---|---|
| null | - | null |
| boolean | bool | true / false |
| int, long | int32, int64, uint32, uint64, sint*, fixed*, sfixed* | number (integer, exact) |
| float, double | float, double | number; NaN and infinities as "NaN", "Infinity", "-Infinity" |
| string | string | string |
| bytes, fixed | bytes | string, base64 (standard alphabet, padded) |
| enum | enum | string: the symbol (a Protobuf number unknown to the schema stays a number) |
| record | message | object with the schema's field names (Protobuf: as written in the .proto) |
| array | repeated | array |
| map | map<K, V> | object (Protobuf keys as text: "1", "true") |
| union [null, T] | optional, oneof member, message field | the value, or null when unset |
| union of several types | oneof | the branch's value, not wrapped |
| decimal | - | number (a double: digits past ~15 significant are rounded) |
| date | google.type.Date is a message | "2026-11-23" |
| time-millis, time-micros | - | "16:05:09.250" |
| timestamp-millis, -micros | google.protobuf.Timestamp | "2026-11-23T16:05:09.250Z" (UTC) |
| local-timestamp-millis, -micros | - | "2026-11-23T16:05:09.250" (no zone) |
| uuid | - | "0f8fad5b-d9cb-469f-a165-70867728950e" |
| - | google.protobuf.Duration | "1.500s" |
| - | Int32Value, StringValue, ... (wrappers) | the wrapped value, or null when unset |
| - | Struct, Value, ListValue | the JSON they hold |
| - | FieldMask | "a.b,c" |
| - | Any | {"@type": URL, ...fields} when its type is known, else {"@type", "value": base64} |
| - | Empty | {} |

Every field the writer's schema declares is present in the object: Protobuf scalars that were not
written read as their default (0, "", false, the first enum value), as in proto3.
"""

from __future__ import annotations

import base64
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from consumer.json_types import JSONObject, JSONValue


class UnmappableValueError(ValueError):
    """A decoded value of a type the mapping does not cover (a bug, or a new logical type)."""


def avro_to_json(value: object) -> JSONValue:
    """A record as fastavro decodes it (logical types already applied) as JSON."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        return {str(k): avro_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [avro_to_json(v) for v in value]
    if isinstance(value, bytes):
        return _base64(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime):  # before date: a datetime is a date
        return timestamp_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return _time_text(value)
    if isinstance(value, UUID):
        return str(value)
    raise UnmappableValueError(f"no JSON mapping for a decoded {type(value).__name__}")


def timestamp_text(value: datetime) -> str:
    """ISO 8601 with milliseconds (microseconds when they are not whole milliseconds); UTC as Z,
    a naive (local-timestamp) value without a zone."""
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    text = value.isoformat(timespec=spec)
    if text.endswith("+00:00"):
        return text[: -len("+00:00")] + "Z"
    return text


def _time_text(value: time) -> str:
    spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec)


def _float(value: float) -> JSONValue:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _decimal(value: Decimal) -> JSONValue:
    if not value.is_finite():
        return _float(float(value))
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= 0:
        return int(value)
    return float(value)


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# -- Protobuf ---------------------------------------------------------------------------------

_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})

WRAPPERS = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)
# Well-known types whose proto3 JSON form is a string, a number or free JSON: json_format writes it.
_JSON_FORM = frozenset(
    f"google.protobuf.{name}"
    for name in ("Timestamp", "Duration", "FieldMask", "Struct", "Value", "ListValue", "Empty")
)
WELL_KNOWN = WRAPPERS | _JSON_FORM | {"google.protobuf.Any"}


def proto_to_json(message: Message) -> JSONValue:
    """A Protobuf message (of a class made from the writer's schema) as JSON."""
    name = message.DESCRIPTOR.full_name
    if name in WRAPPERS:
        return _wrapped(message)
    if name in _JSON_FORM:
        return _json_form(message)
    if name == "google.protobuf.Any":
        return _any(message)
    return _message(message, message.DESCRIPTOR)


def _message(message: Message, descriptor: Descriptor) -> JSONObject:
    out: JSONObject = {}
    for field in descriptor.fields:
        value: Any = getattr(message, field.name)
        if field.is_repeated:
            if _is_map(field):
                out[field.name] = _map(field, value)
            else:
                out[field.name] = [_single(field, item) for item in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _single(field, value)
    return out


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def _map(field: FieldDescriptor, value: Any) -> JSONObject:
    entry = field.message_type
    value_field = entry.fields_by_name["value"]
    return {_map_key(key): _single(value_field, item) for key, item in value.items()}


def _map_key(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _single(field: FieldDescriptor, value: Any) -> JSONValue:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return proto_to_json(value)
    if kind in _INTEGER_TYPES:
        return int(value)
    if kind in _FLOAT_TYPES:
        return _float(float(value))
    if kind == FieldDescriptor.TYPE_BOOL:
        return bool(value)
    if kind == FieldDescriptor.TYPE_STRING:
        return str(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return _base64(bytes(value))
    if kind == FieldDescriptor.TYPE_ENUM:
        symbol = field.enum_type.values_by_number.get(int(value))
        return int(value) if symbol is None else str(symbol.name)
    raise UnmappableValueError(
        f"no JSON mapping for Protobuf field type {kind} ({field.full_name})"
    )


def _wrapped(message: Message) -> JSONValue:
    field = message.DESCRIPTOR.fields_by_name["value"]
    return _single(field, getattr(message, "value"))  # noqa: B009  # a field, not an attribute


def _json_form(message: Message) -> JSONValue:
    value: JSONValue = json_format.MessageToDict(message)
    return value


def _any(message: Message) -> JSONValue:
    try:
        value: JSONValue = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError, json_format.Error):
        type_url: str = getattr(message, "type_url")  # noqa: B009
        payload: bytes = getattr(message, "value")  # noqa: B009
        return {"@type": type_url, "value": _base64(payload)}
    return value

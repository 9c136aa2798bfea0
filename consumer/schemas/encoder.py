"""JSON events written as the rules read them, encoded into the Confluent wire format with the
latest schema of `<topic>-value`: `rules preview --event-avro` / `--event-proto` preview the very
bytes a producer would write, decoded back as the service decodes them.

Avro: the JSON shape of `to_json` is turned back into what the Avro writer takes (base64 into
bytes, ISO 8601 text into dates and timestamps, numbers into decimals), guided by the schema.
Protobuf: `json_format.ParseDict` reads that shape already (field names as in the .proto, enums
by name, int64 as numbers, Timestamp and Duration as text).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import fastavro
from google.protobuf import json_format
from google.protobuf.message_factory import GetMessageClass

from consumer.json_types import JSONValue
from consumer.schemas import wire
from consumer.schemas.decoder import protobuf_messages
from consumer.schemas.registry import Registry


class EncodeError(ValueError):
    """The JSON does not fit the schema (a missing field, a wrong type)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def wire_encoder(registry: Registry, topic: str, kind: str) -> Callable[[JSONValue], bytes]:
    """An encoder for `kind` ("avro" or "proto") with the latest schema of `<topic>-value`.
    Raises `RegistryUnavailableError`, or LookupError when the subject has no schema of that kind.
    """
    subject = f"{topic}-value"
    latest = registry.latest(subject)
    if latest is None or latest.schema_id is None:
        raise LookupError(f"the schema registry has no subject {subject}")
    schema = latest.schema
    schema_type = (schema.schema_type or "AVRO").upper()
    wanted = "AVRO" if kind == "avro" else "PROTOBUF"
    if schema_type != wanted:
        raise LookupError(f"the latest schema of {subject} is {schema_type}, not {wanted}")
    schema_id: int = latest.schema_id
    if wanted == "AVRO":
        return _avro_encoder(schema_id, json.loads(schema.schema_str or "null"))
    served = registry.serialized(schema_id)
    message_class = GetMessageClass(protobuf_messages(registry.client, served)[0])

    def encode_proto(document: JSONValue) -> bytes:
        try:
            message = json_format.ParseDict(document, message_class())
        except json_format.ParseError as exc:
            raise EncodeError(str(exc)) from None
        # Message index [0] (the first message), written as the single byte 0.
        return wire.frame(schema_id, b"\x00" + message.SerializeToString())

    return encode_proto


def _avro_encoder(schema_id: int, schema_json: Any) -> Callable[[JSONValue], bytes]:
    parsed = fastavro.parse_schema(schema_json)

    def encode_avro(document: JSONValue) -> bytes:
        buffer = io.BytesIO()
        try:
            record = _to_avro(document, schema_json, {})
            fastavro.schemaless_writer(buffer, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"does not fit the Avro schema: {exc}") from None
        return wire.frame(schema_id, buffer.getvalue())

    return encode_avro


def _to_avro(value: Any, schema: Any, named: dict[str, Any]) -> Any:
    """`value` in the JSON shape of `to_json`, as the Avro writer takes it for `schema`."""
    if isinstance(schema, list):  # a union: the first branch the value fits
        if value is None:
            return None
        for branch in schema:
            if branch == "null":
                continue
            try:
                return _to_avro(value, branch, named)
            except (ValueError, TypeError, KeyError):
                continue
        return value
    if isinstance(schema, str):
        if schema in named:
            return _to_avro(value, named[schema], named)
        return _primitive(value, schema)
    kind = schema.get("type")
    if isinstance(schema.get("name"), str):
        named[schema["name"]] = schema
        if schema.get("namespace"):
            named[f"{schema['namespace']}.{schema['name']}"] = schema
    logical = schema.get("logicalType")
    if logical is not None and value is not None:
        return _logical(value, logical, kind)
    if kind == "record":
        if not isinstance(value, dict):
            raise TypeError(f"record {schema.get('name')} needs an object")
        out = {}
        for field in schema["fields"]:
            name = field["name"]
            if name in value:
                out[name] = _to_avro(value[name], field["type"], named)
        return out
    if kind == "array":
        return [_to_avro(item, schema["items"], named) for item in value]
    if kind == "map":
        return {key: _to_avro(item, schema["values"], named) for key, item in value.items()}
    if kind == "fixed":
        return _bytes(value)
    if kind == "enum":
        return value
    return _to_avro(value, kind, named)


def _primitive(value: Any, kind: str) -> Any:
    if kind == "bytes":
        return _bytes(value)
    if kind in ("float", "double") and isinstance(value, str):
        return float(value.replace("Infinity", "inf"))
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError("bytes are written as base64 text")
    return base64.b64decode(value, validate=True)


def _logical(value: Any, logical: str, kind: Any) -> Any:
    if logical == "decimal":
        return Decimal(str(value))
    if logical == "date":
        return date.fromisoformat(value)
    if logical.startswith("time-"):
        return time.fromisoformat(value)
    if logical.startswith(("timestamp-", "local-timestamp-")):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if logical == "uuid":
        return str(value)
    if kind in {"bytes", "fixed"}:
        return _bytes(value)
    return value

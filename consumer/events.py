"""Stage 1: a raw Kafka message becomes an Event (its JSON object plus the `_kafka` namespace).

Pure: no Kafka client here. `kafka_io` builds `RawMessage`s; the rules read `Event.document`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumer.json_codec import loads_event
from consumer.json_types import JSONObject, JSONValue
from consumer.reasons import Reason
from consumer.schemas.errors import RegistryUnavailableError, UndecodableError
from consumer.schemas.wire import is_wire_format

if TYPE_CHECKING:  # the registry client is imported only where a registry is configured
    from consumer.schemas.decoder import WireDecoder

# The records made for every consumed message are slotted dataclasses, never changed once made, but
# not frozen: a frozen one costs about four times as much to build (0.73 against 0.19 us with six
# fields), and several are built per event on the hot path.


@dataclass(slots=True)
class KafkaMeta:
    """Where a message came from; the `_kafka` namespace of the rules reads this."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    def as_document(self) -> JSONObject:
        """The `_kafka` object: key and header values as UTF-8 text (undecodable bytes replaced)."""
        headers: JSONObject = {name: _text(value) for name, value in self.headers}
        return {
            "key": _text(self.key),
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
            "headers": headers,
        }


@dataclass(slots=True)
class RawMessage:
    """A consumed message exactly as Kafka gave it; dead letters carry it back unchanged."""

    meta: KafkaMeta
    value: bytes | None


@dataclass(slots=True)
class Event:
    """A decoded event. `document` is the event object with `_kafka` added, for JMESPath."""

    raw: RawMessage
    document: JSONObject = field(repr=False)


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A message that is not a JSON object: it becomes a dead letter with `reason`."""

    raw: RawMessage
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class SchemaWait:
    """A Schema Registry record whose schema cannot be had now (the registry is unreachable or
    failing): the deployment's fault, so the event waits and is decoded again later."""

    raw: RawMessage
    detail: str


def decode_any(
    raw: RawMessage, wire: WireDecoder | None, *, kafka_namespace: bool = True
) -> Event | DecodeError | SchemaWait:
    """`decode`, and a value (or key) in the Confluent wire format decoded through the Schema
    Registry: the record's JSON value, with `_kafka.schema` (and a decoded `_kafka.key`, with
    `_kafka.key_schema`). Never raises.

    No JSON text starts with byte 0, so such a value is the wire format. A key is any bytes (a
    big-endian integer key starts with 0 too): it is read as a record only with a registry to
    ask, and stays text when it is not one (`_decode_wire`)."""
    value, key = raw.value, raw.meta.key
    wire_value = is_wire_format(value)
    wire_key = wire is not None and is_wire_format(key)
    if not wire_value and not wire_key:
        return decode(raw, kafka_namespace=kafka_namespace)
    if wire is None:
        return DecodeError(
            raw,
            Reason.INVALID_PAYLOAD,
            "the value is in the Schema Registry wire format (first byte 0x00), but no "
            "kafka.schema_registry.url is set",
        )
    return _decode_wire(raw, wire, wire_value, wire_key)


def _decode_wire(
    raw: RawMessage, wire: WireDecoder, wire_value: bool, wire_key: bool
) -> Event | DecodeError | SchemaWait:
    meta = raw.meta
    extra: JSONObject = {}
    try:
        if wire_key:
            assert meta.key is not None
            try:
                key_value, key_info = wire.decode(meta.key, meta.topic, is_key=True)
            except UndecodableError:
                pass  # not a registry record after all (an integer key): `_kafka.key` is its text
            else:
                extra["key"] = key_value
                extra["key_schema"] = key_info.as_document()
        if not wire_value:
            decoded = decode(raw)
            if isinstance(decoded, Event):
                kafka = decoded.document["_kafka"]
                assert isinstance(kafka, dict)
                kafka.update(extra)
            return decoded
        assert raw.value is not None
        document, info = wire.decode(raw.value, meta.topic)
    except RegistryUnavailableError as exc:
        return SchemaWait(raw, f"schema registry: {exc}")
    except UndecodableError as exc:
        return DecodeError(raw, Reason.INVALID_PAYLOAD, _short(exc, 500))
    if not isinstance(document, dict):
        kind = "null" if document is None else type(document).__name__
        return DecodeError(
            raw, Reason.INVALID_PAYLOAD, f"the decoded value must be a record (object), got {kind}"
        )
    kafka = meta.as_document()
    kafka["schema"] = info.as_document()
    kafka.update(extra)
    document["_kafka"] = kafka
    return Event(raw, document)


def decode(raw: RawMessage, *, kafka_namespace: bool = True) -> Event | DecodeError:
    """Parse the message value; never raises.

    `kafka_namespace=False` leaves `_kafka` out of the document when the event has no field of
    that name (`with_kafka_namespace` adds it later): most events of a busy topic match no rule,
    and the rules' conditions may not read it.

    Valid JSON that Python cannot hold exactly still decodes: `1e400` becomes inf and an escaped
    lone surrogate (`"\\ud800"`) a str that UTF-8 cannot encode. Rules that do not read such a
    value work; one that renders it into a request fails that mapping (`strict_json_problem`).
    """
    if raw.value is None:
        return DecodeError(raw, Reason.INVALID_JSON, "message has no value (tombstone)")
    try:
        # Strict UTF-8 (a BOM is allowed): json.loads(bytes) would also take UTF-16/32 and
        # encoded lone surrogates, which then fail every rule mapping instead of reading as
        # invalid JSON.
        value: JSONValue = loads_event(raw.value)
    except (ValueError, RecursionError) as exc:
        return DecodeError(raw, Reason.INVALID_JSON, f"value is not valid JSON: {_short(exc)}")
    if not isinstance(value, dict):
        kind = type(value).__name__
        return DecodeError(raw, Reason.INVALID_JSON, f"value must be a JSON object, got {kind}")
    if kafka_namespace or "_kafka" in value:  # an event's own `_kafka` is always replaced
        value["_kafka"] = raw.meta.as_document()  # the parsed value is ours: no copy needed
    return Event(raw, value)


def with_kafka_namespace(event: Event) -> JSONObject:
    """The event's document with `_kafka` in it (added now if `decode` left it out)."""
    document = event.document
    if "_kafka" not in document:
        document["_kafka"] = event.raw.meta.as_document()
    return document


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="replace")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

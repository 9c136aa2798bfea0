"""Stage 1: a raw Kafka message becomes an Event (its JSON object plus the `_kafka` namespace).

Pure: no Kafka client here. `kafka_io` builds `RawMessage`s; the rules read `Event.document`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumer.json_codec import loads_event
from consumer.json_types import JSONObject, JSONValue
from consumer.reasons import Reason

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

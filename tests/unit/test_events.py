"""events.decode: JSON objects become Events with `_kafka`; everything else a DecodeError."""

from __future__ import annotations

import json
import math
import struct
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.events import (
    DecodeError,
    Event,
    KafkaMeta,
    RawMessage,
    SchemaWait,
    decode,
    decode_any,
)
from consumer.json_types import JSONValue
from consumer.schemas import wire
from consumer.schemas.decoder import WireDecoder
from consumer.schemas.errors import RegistryUnavailableError, UndecodableError
from consumer.schemas.registry import SchemaInfo

META = KafkaMeta("shop.orders", 3, 42, key=b"k-1", timestamp_ms=1_714_558_000_000)


def raw(value: bytes | None, meta: KafkaMeta = META) -> RawMessage:
    return RawMessage(meta, value)


def as_event(value: bytes | None, meta: KafkaMeta = META) -> Event:
    decoded = decode(raw(value, meta))
    assert isinstance(decoded, Event), decoded
    return decoded


def as_error(value: bytes | None) -> DecodeError:
    message = raw(value)
    decoded = decode(message)
    assert isinstance(decoded, DecodeError), decoded
    assert decoded.raw is message
    assert decoded.reason == "invalid_json"
    assert 0 < len(decoded.detail) <= 250
    return decoded


def test_object_becomes_event_with_kafka_namespace() -> None:
    event = as_event(b'{"type": "order.shipped", "data": {"total": 50.5, "items": [1, 2]}}')
    assert event.document == {
        "type": "order.shipped",
        "data": {"total": 50.5, "items": [1, 2]},
        "_kafka": {
            "key": "k-1",
            "topic": "shop.orders",
            "partition": 3,
            "offset": 42,
            "timestamp": 1_714_558_000_000,
            "headers": {},
        },
    }


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        pytest.param(
            KafkaMeta("t", 0, 7, key=None, timestamp_ms=None),
            {"key": None, "timestamp": None, "headers": {}},
            id="no key, no timestamp",
        ),
        pytest.param(
            KafkaMeta("t", 0, 7, key=b"\xffk", timestamp_ms=5),
            {"key": "\ufffdk", "timestamp": 5, "headers": {}},
            id="undecodable key replaced",
        ),
        pytest.param(
            KafkaMeta("t", 0, 7, headers=(("x-source", b"web"), ("empty", b""), ("null", None))),
            {
                "key": None,
                "timestamp": None,
                "headers": {"x-source": "web", "empty": "", "null": None},
            },
            id="headers as text, null kept null",
        ),
        pytest.param(
            KafkaMeta("t", 0, 7, headers=(("h", "é".encode()), ("bad", b"a\xfe"))),
            {"key": None, "timestamp": None, "headers": {"h": "é", "bad": "a\ufffd"}},
            id="utf-8 headers, undecodable bytes replaced",
        ),
    ],
)
def test_kafka_namespace(meta: KafkaMeta, expected: dict[str, JSONValue]) -> None:
    kafka = as_event(b"{}", meta).document["_kafka"]
    assert kafka == {"topic": "t", "partition": 0, "offset": 7, **expected}


def test_event_cannot_spoof_the_kafka_namespace() -> None:
    event = as_event(b'{"_kafka": {"topic": "spoofed", "key": "someone-else"}, "a": 1}')
    kafka = event.document["_kafka"]
    assert isinstance(kafka, dict)
    assert kafka["topic"] == "shop.orders"
    assert kafka["key"] == "k-1"


def test_utf8_byte_order_mark_is_allowed() -> None:
    assert as_event(b'\xef\xbb\xbf{"a": "\xc3\xa9"}').document["a"] == "\u00e9"


def test_event_keeps_the_raw_message() -> None:
    message = raw(b'{"a": 1}')
    decoded = decode(message)
    assert isinstance(decoded, Event)
    assert decoded.raw is message


DEEP = 100_000


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param(None, "tombstone", id="tombstone"),
        pytest.param(b"", "not valid JSON", id="empty value"),
        pytest.param(b'{"a": ', "not valid JSON", id="truncated"),
        pytest.param(b"{'a': 1}", "not valid JSON", id="single quotes"),
        pytest.param(b'{"a": 1} x', "not valid JSON", id="trailing garbage"),
        pytest.param(b'{"a": NaN}', "NaN", id="NaN"),
        pytest.param(b'{"a": Infinity}', "Infinity", id="Infinity"),
        pytest.param(b'{"a": [-Infinity]}', "-Infinity", id="-Infinity nested"),
        pytest.param(b'{"a": "\xff\xfe"}', "not valid JSON", id="invalid utf-8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', "not valid JSON", id="utf-8 surrogate"),
        pytest.param('{"a": 1}'.encode("utf-16"), "not valid JSON", id="utf-16"),
        pytest.param('{"a": 1}'.encode("utf-32-le"), "not valid JSON", id="utf-32 without BOM"),
        pytest.param(b"[1, 2]", "got list", id="array"),
        pytest.param(b'"text"', "got str", id="string"),
        pytest.param(b"12", "got int", id="number"),
        pytest.param(b"1.5", "got float", id="float"),
        pytest.param(b"true", "got bool", id="boolean"),
        pytest.param(b"null", "got NoneType", id="null"),
        pytest.param(b"[" * DEEP + b"]" * DEEP, "not valid JSON", id="deep array"),
        pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, "not valid JSON", id="deep object"),
        pytest.param(b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON", id="huge integer"),
    ],
)
def test_not_an_object_is_a_decode_error(value: bytes | None, fragment: str) -> None:
    assert fragment in as_error(value).detail


def test_detail_is_bounded() -> None:
    error = as_error(b'{"' + b"x" * 10_000 + b"\x01")
    assert len(error.detail) <= len("value is not valid JSON: ") + 200


@given(st.binary(max_size=200))
def test_decode_never_raises_on_bytes(value: bytes) -> None:
    decoded = decode(raw(value))
    assert isinstance(decoded, Event | DecodeError)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_decodes_to_an_event_exactly_when_it_is_an_object(
    value: JSONValue,
) -> None:
    decoded = decode(raw(json.dumps(value).encode()))
    if isinstance(value, dict):
        assert isinstance(decoded, Event)
        assert decoded.document == {**value, "_kafka": META.as_document()}
    else:
        assert isinstance(decoded, DecodeError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b'{"a": 1e400}', math.inf, id="1e400 overflows to inf"),
        pytest.param(b'{"a": -1e400}', -math.inf, id="-1e400 overflows to -inf"),
        pytest.param(b'{"a": "\\ud800"}', "\ud800", id="escaped lone high surrogate"),
        pytest.param(b'{"a": "x\\udfff"}', "x\udfff", id="escaped lone low surrogate"),
        pytest.param(b'{"a": "\\ud83d\\ude00"}', "\U0001f600", id="an escaped pair is one char"),
    ],
)
def test_valid_json_python_cannot_hold_exactly_still_decodes(
    value: bytes, expected: JSONValue
) -> None:
    # Valid JSON text: the event decodes, and only a rule rendering `a` fails (a mapping error).
    assert as_event(value).document["a"] == expected


def test_an_escaped_lone_surrogate_key_decodes() -> None:
    assert "\udc00" in as_event(b'{"\\udc00": 1}').document


# -- keys that start with byte 0 ------------------------------------------------------------------
# A key is any bytes: an integer written big-endian (Kafka's LongSerializer) starts with 0 for
# every value below 2**56, as the Schema Registry wire format does. Such a key must never cost a
# JSON event anything; it is read as a registry record only when the registry knows it.

INTEGER_KEY = struct.pack(">q", 12345)  # 00 00 00 00 00 00 30 39: "schema id 0"
KEY_INFO = SchemaInfo(id=9, type="AVRO", subject="shop.orders-key", version=1)


class KeyRegistry:
    """Knows schema id 9 (the key decodes to {"id": 1}); fails as the registry would while down."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down

    def decode(self, data: bytes, topic: str, is_key: bool = False) -> tuple[JSONValue, SchemaInfo]:
        if self.down:
            raise RegistryUnavailableError("schema id 0: ConnectError: connection refused")
        if wire.schema_id(data) != 9:
            raise UndecodableError(f"schema id {wire.schema_id(data)}: the registry has none")
        return {"id": 1}, KEY_INFO


def keyed(key: bytes) -> RawMessage:
    return RawMessage(KafkaMeta("shop.orders", 0, 7, key=key), b'{"type": "x"}')


def test_an_integer_key_without_a_registry_is_the_key_text_as_before() -> None:
    decoded = decode_any(keyed(INTEGER_KEY), None)
    assert isinstance(decoded, Event), decoded
    kafka = decoded.document["_kafka"]
    assert isinstance(kafka, dict)
    assert kafka["key"] == INTEGER_KEY.decode("utf-8", "replace")


def test_an_integer_key_the_registry_does_not_know_stays_text() -> None:
    decoded = decode_any(keyed(INTEGER_KEY), cast(WireDecoder, KeyRegistry()))
    assert isinstance(decoded, Event), decoded
    kafka = decoded.document["_kafka"]
    assert isinstance(kafka, dict)
    assert kafka["key"] == INTEGER_KEY.decode("utf-8", "replace")
    assert "key_schema" not in kafka


def test_a_registry_key_decodes_with_its_schema() -> None:
    decoded = decode_any(keyed(wire.frame(9, b"\x02")), cast(WireDecoder, KeyRegistry()))
    assert isinstance(decoded, Event), decoded
    kafka = decoded.document["_kafka"]
    assert isinstance(kafka, dict)
    assert (kafka["key"], kafka["key_schema"]) == ({"id": 1}, KEY_INFO.as_document())


def test_a_key_waits_while_the_registry_is_down() -> None:
    decoded = decode_any(keyed(INTEGER_KEY), cast(WireDecoder, KeyRegistry(down=True)))
    assert isinstance(decoded, SchemaWait), decoded  # the deployment's fault: not a dead letter

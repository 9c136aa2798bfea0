"""The Avro and Protobuf to JSON mapping (consumer/schemas/to_json.py): every row of its table."""

from __future__ import annotations

import io
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from google.protobuf import descriptor_pb2, duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass

from consumer.schemas.to_json import (
    UnmappableValueError,
    avro_to_json,
    proto_to_json,
    timestamp_text,
)

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "small", "type": "int"},
        {"name": "ok", "type": "boolean"},
        {"name": "ratio", "type": "double"},
        {"name": "ratio32", "type": "float"},
        {"name": "name", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 2}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "items", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "either", "type": ["int", "string"]},
        {
            "name": "total",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {
            "name": "whole",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 0},
        },
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [{"name": "city", "type": "string"}],
            },
        },
    ],
}

UID = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")


def _avro_round_trip(record: dict[str, Any]) -> object:
    """As the service sees it: written with the schema, read back by fastavro."""
    schema = fastavro.parse_schema(AVRO_SCHEMA)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema, None)


def test_every_avro_type_maps_to_its_documented_json() -> None:
    record = {
        "id": 2**62,
        "small": -5,
        "ok": True,
        "ratio": 0.25,
        "ratio32": 1.5,
        "name": "é",
        "blob": b"\x00\xff",
        "tag": b"ab",
        "status": "PAID",
        "items": ["a", "b"],
        "attrs": {"x": 1},
        "note": None,
        "either": "s",
        "total": Decimal("12.30"),
        "whole": Decimal("7"),
        "day": date(2026, 11, 23),
        "at_ms": datetime(2026, 11, 23, 16, 5, 9, 250_000, tzinfo=UTC),
        "at_us": datetime(2026, 11, 23, 16, 5, 9, 250_001, tzinfo=UTC),
        "local": datetime(2026, 11, 23, 16, 5, 9, 250_000),
        "clock": time(16, 5, 9, 250_000),
        "uid": UID,
        "address": {"city": "Paris"},
    }
    assert avro_to_json(_avro_round_trip(record)) == {
        "id": 2**62,
        "small": -5,
        "ok": True,
        "ratio": 0.25,
        "ratio32": 1.5,
        "name": "é",
        "blob": "AP8=",
        "tag": "YWI=",
        "status": "PAID",
        "items": ["a", "b"],
        "attrs": {"x": 1},
        "note": None,
        "either": "s",
        "total": 12.3,
        "whole": 7,
        "day": "2026-11-23",
        "at_ms": "2026-11-23T16:05:09.250Z",
        "at_us": "2026-11-23T16:05:09.250001Z",
        "local": "2026-11-23T16:05:09.250",
        "clock": "16:05:09.250",
        "uid": str(UID),
        "address": {"city": "Paris"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), (-0.5, -0.5)],
)
def test_non_finite_floats_become_the_proto3_json_strings(value: float, expected: object) -> None:
    assert avro_to_json({"x": value}) == {"x": expected}


def test_a_value_outside_the_mapping_is_refused() -> None:
    with pytest.raises(UnmappableValueError):
        avro_to_json({"x": object()})


def test_timestamps_in_another_zone_keep_their_offset() -> None:
    value = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp_text(value) == "2026-01-01T01:00:00.000+02:00"


# -- Protobuf ---------------------------------------------------------------------------------


def _message_class(pool_extra: descriptor_pb2.FileDescriptorProto) -> Any:
    pool = DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, wrappers_pb2, struct_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)
    pool.Add(pool_extra)
    return GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def _order_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="order.proto", package="shop", syntax="proto3")
    f.dependency.extend(
        [
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/struct.proto",
        ]
    )
    status = f.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    address = f.message_type.add(name="Address")
    address.field.add(name="city", number=1, type=9, label=1)
    order = f.message_type.add(name="Order")
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=3, label=1)
    fd = descriptor_pb2.FieldDescriptorProto
    add = order.field.add
    add(name="id", number=1, type=fd.TYPE_INT64, label=1)
    add(name="count", number=2, type=fd.TYPE_UINT32, label=1)
    add(name="ok", number=3, type=fd.TYPE_BOOL, label=1)
    add(name="ratio", number=4, type=fd.TYPE_DOUBLE, label=1)
    add(name="name", number=5, type=fd.TYPE_STRING, label=1)
    add(name="blob", number=6, type=fd.TYPE_BYTES, label=1)
    add(name="status", number=7, type=fd.TYPE_ENUM, type_name=".shop.Status", label=1)
    add(name="items", number=8, type=fd.TYPE_STRING, label=3)
    add(name="attrs", number=9, type=fd.TYPE_MESSAGE, type_name=".shop.Order.AttrsEntry", label=3)
    add(name="address", number=10, type=fd.TYPE_MESSAGE, type_name=".shop.Address", label=1)
    add(name="unset", number=11, type=fd.TYPE_MESSAGE, type_name=".shop.Address", label=1)
    ts = ".google.protobuf.Timestamp"
    add(name="at", number=12, type=fd.TYPE_MESSAGE, type_name=ts, label=1)
    dur = ".google.protobuf.Duration"
    add(name="took", number=13, type=fd.TYPE_MESSAGE, type_name=dur, label=1)
    i64 = ".google.protobuf.Int64Value"
    add(name="maybe", number=14, type=fd.TYPE_MESSAGE, type_name=i64, label=1)
    add(name="maybe_not", number=15, type=fd.TYPE_MESSAGE, type_name=i64, label=1)
    st = ".google.protobuf.Struct"
    add(name="extra", number=16, type=fd.TYPE_MESSAGE, type_name=st, label=1)
    add(name="opt", number=17, type=fd.TYPE_STRING, label=1, proto3_optional=True, oneof_index=1)
    add(name="card", number=18, type=fd.TYPE_STRING, label=1, oneof_index=0)
    add(name="cash", number=19, type=fd.TYPE_BOOL, label=1, oneof_index=0)
    add(name="score", number=20, type=fd.TYPE_FLOAT, label=1)
    add(name="big", number=21, type=fd.TYPE_UINT64, label=1)
    order.oneof_decl.add(name="payment")
    order.oneof_decl.add(name="_opt")  # synthetic (proto3 optional): after the real ones
    return f


def test_every_protobuf_type_maps_to_its_documented_json() -> None:
    order_class = _message_class(_order_file())
    order = order_class(
        id=2**62, ok=True, ratio=0.5, name="n", blob=b"\x01", status=1, items=["a"], card="4242"
    )
    order.attrs["x"] = 3
    order.address.city = "Paris"
    order.at.FromDatetime(datetime(2026, 11, 23, 16, 5, 9, 250_000))
    order.took.FromMilliseconds(1500)
    order.maybe.value = 2**40
    order.extra.update({"k": [1, "two"]})
    order.score = math.inf
    order.big = 2**64 - 1
    decoded = order_class.FromString(order.SerializeToString())
    assert proto_to_json(decoded) == {
        "id": 2**62,
        "count": 0,
        "ok": True,
        "ratio": 0.5,
        "name": "n",
        "blob": "AQ==",
        "status": "PAID",
        "items": ["a"],
        "attrs": {"x": 3},
        "address": {"city": "Paris"},
        "unset": None,
        "at": "2026-11-23T16:05:09.250Z",
        "took": "1.500s",
        "maybe": 2**40,
        "maybe_not": None,
        "extra": {"k": [1.0, "two"]},
        "opt": None,
        "card": "4242",
        "cash": None,
        "score": "Infinity",
        "big": 2**64 - 1,
    }


def test_an_enum_number_the_schema_does_not_know_stays_a_number() -> None:
    order_class = _message_class(_order_file())
    assert proto_to_json(order_class(status=7))["status"] == 7  # type: ignore[index,call-overload]

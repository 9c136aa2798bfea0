"""Schemas as JSON shapes (consumer/schemas/shapes.py): the fields and types decoded records have.

The shapes must agree with `to_json`: the round-trip tests decode real records and check that
every value the decoder gives is at a path its shape has, with a type the shape allows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

import fastavro
import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass

from consumer.json_types import JSONValue
from consumer.rules.conditions import json_type
from consumer.schemas import shapes
from consumer.schemas.shapes import (
    ANY,
    Shape,
    Step,
    avro_shape,
    json_schema_shape,
    json_types,
    lookup,
    protobuf_shape,
)
from consumer.schemas.to_json import avro_to_json, proto_to_json

ALL = set(shapes.JSON_TYPES)


def types_at(shape: Shape, path: str) -> set[str] | None:
    """The JSON types at a dotted path (digits are indexes), None when the path is never there."""
    steps: list[Step] = [(part, int(part) if part.isdigit() else None) for part in path.split(".")]
    found = lookup(shape, steps)
    return None if found is None else set(json_types(found))


def walk(value: JSONValue, steps: tuple[Step, ...] = ()) -> Iterator[tuple[tuple[Step, ...], str]]:
    """Every (path, JSON type) of a decoded value."""
    yield steps, json_type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*steps, (key, None)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*steps, (None, index)))


def assert_shape_admits(shape: Shape, value: JSONValue) -> None:
    for steps, kind in walk(value):
        found = lookup(shape, steps)
        assert found is not None, steps
        assert kind in json_types(found), (steps, kind, found)


# -- Avro -------------------------------------------------------------------------------------

ORDER_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "total", "type": "double"},
        {"name": "ok", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 2}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "skus", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "either", "type": ["int", "string"]},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "odd", "type": {"type": "long", "logicalType": "not-a-logical-type"}},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "name", "type": "string"},
                    {
                        "name": "billing",
                        "type": [
                            "null",
                            {
                                "type": "record",
                                "name": "Address",
                                "fields": [{"name": "city", "type": "string"}],
                            },
                        ],
                    },
                    {"name": "shipping", "type": "Address"},  # by short name, same namespace
                    {"name": "again", "type": ["null", "shop.Status"]},  # by full name
                ],
            },
        },
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}],
                },
            },
        },
        {"name": "next", "type": ["null", "Order"], "default": None},  # recursive
    ],
}


@pytest.fixture(scope="module")
def order() -> Shape:
    return avro_shape(ORDER_AVRO)


@pytest.mark.parametrize(
    ("path", "types"),
    [
        ("id", {"number"}),
        ("total", {"number", "string"}),  # "NaN", "Infinity", "-Infinity"
        ("ok", {"boolean"}),
        ("blob", {"string"}),
        ("tag", {"string"}),
        ("status", {"string"}),
        ("skus", {"array"}),
        ("skus.0", {"string", "null"}),  # an index past the end reads null
        ("attrs", {"object"}),
        ("attrs.anything", {"number", "null"}),  # a map: any key, maybe absent
        ("note", {"string", "null"}),
        ("either", {"number", "string"}),
        ("amount", {"number"}),
        ("day", {"string"}),
        ("at", {"string"}),
        ("clock", {"string"}),
        ("uid", {"string"}),
        ("odd", {"number"}),  # an unknown logical type reads as its base type
        ("customer.name", {"string"}),
        ("customer.billing", {"object", "null"}),
        ("customer.billing.city", {"string", "null"}),  # null when billing is null
        ("customer.shipping.city", {"string"}),
        ("customer.again", {"string", "null"}),
        ("lines.0.sku", {"string", "null"}),
        ("next.next.next.customer.name", {"string", "null"}),
    ],
)
def test_avro_paths_have_the_types_to_json_gives(order: Shape, path: str, types: set[str]) -> None:
    assert types_at(order, path) == types


@pytest.mark.parametrize(
    "path",
    ["nope", "customer.nmae", "customer.billing.zip", "total.amount", "skus.sku", "lines.sku"],
)
def test_avro_paths_the_schema_does_not_have(order: Shape, path: str) -> None:
    assert types_at(order, path) is None


def test_avro_labels_name_the_schema_types(order: Shape) -> None:
    def labels(path: str) -> list[str]:
        found = lookup(order, [(part, None) for part in path.split(".")])
        assert found is not None
        return shapes.labels(found)

    assert labels("total") == ["double"]
    assert labels("status") == ["enum Status"]
    assert labels("at") == ["timestamp-millis"]
    assert labels("customer") == ["record Customer"]


def test_a_recursive_avro_record_is_one_shape_not_an_endless_tree(order: Shape) -> None:
    again = lookup(order, [("next", None)])
    assert again is not None
    assert set(again.alternatives) == {*order.alternatives, shapes.Scalar("null", "null")}


def test_avro_schema_text_and_bare_names() -> None:
    assert avro_shape('"string"') == shapes.scalar("string", "string")
    assert avro_shape("long") == shapes.scalar("integer", "long")
    assert avro_shape('["null", "int"]').alternatives == (
        shapes.Scalar("null", "null"),
        shapes.Scalar("integer", "int"),
    )
    unknown = avro_shape({"type": "record", "name": "R", "fields": [{"name": "x", "type": "Else"}]})
    assert types_at(unknown, "x.anything.at.all") is not None  # a type defined elsewhere: any


def test_decoded_avro_records_fit_their_shape(order: Shape) -> None:
    record = {
        "id": 1,
        "total": math.nan,
        "ok": True,
        "blob": b"\x00",
        "tag": b"ab",
        "status": "PAID",
        "skus": ["a"],
        "attrs": {"x": 1},
        "note": None,
        "either": 5,
        "amount": Decimal("1.25"),
        "day": date(2026, 1, 2),
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "clock": time(1, 2, 3),
        "uid": UUID(int=5),
        "odd": 7,
        "customer": {
            "name": "n",
            "billing": {"city": "Paris"},
            "shipping": {"city": "Lyon"},
            "again": "NEW",
        },
        "lines": [{"sku": "s", "qty": 2}],
        "next": None,
    }
    record["next"] = dict(record, total=1.5)
    schema = fastavro.parse_schema(ORDER_AVRO)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    decoded = avro_to_json(fastavro.schemaless_reader(buffer, schema, None))
    assert isinstance(decoded, dict)
    assert decoded["total"] == "NaN"
    assert_shape_admits(order, decoded)


# -- Protobuf ---------------------------------------------------------------------------------

_WELL_KNOWN = (
    timestamp_pb2,
    duration_pb2,
    field_mask_pb2,
    wrappers_pb2,
    struct_pb2,
    any_pb2,
    empty_pb2,
)


def order_descriptor() -> Descriptor:
    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="order.proto", package="shop", syntax="proto3")
    f.dependency.extend(module.DESCRIPTOR.name for module in _WELL_KNOWN)
    status = f.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    address = f.message_type.add(name="Address")
    address.field.add(name="city", number=1, type=fd.TYPE_STRING, label=1)
    order = f.message_type.add(name="Order")
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=fd.TYPE_STRING, label=1)
    entry.field.add(name="value", number=2, type=fd.TYPE_MESSAGE, type_name=".shop.Address")
    add = order.field.add
    add(name="id", number=1, type=fd.TYPE_INT64, label=1)
    add(name="ratio", number=2, type=fd.TYPE_DOUBLE, label=1)
    add(name="ok", number=3, type=fd.TYPE_BOOL, label=1)
    add(name="name", number=4, type=fd.TYPE_STRING, label=1)
    add(name="blob", number=5, type=fd.TYPE_BYTES, label=1)
    add(name="status", number=6, type=fd.TYPE_ENUM, type_name=".shop.Status", label=1)
    add(name="skus", number=7, type=fd.TYPE_STRING, label=3)
    add(name="attrs", number=8, type=fd.TYPE_MESSAGE, type_name=".shop.Order.AttrsEntry", label=3)
    add(name="address", number=9, type=fd.TYPE_MESSAGE, type_name=".shop.Address", label=1)
    add(name="previous", number=10, type=fd.TYPE_MESSAGE, type_name=".shop.Order", label=1)
    add(name="opt", number=11, type=fd.TYPE_UINT32, label=1, proto3_optional=True, oneof_index=1)
    add(name="card", number=12, type=fd.TYPE_STRING, label=1, oneof_index=0)
    wkt = {
        "at": "Timestamp",
        "took": "Duration",
        "mask": "FieldMask",
        "maybe": "Int64Value",
        "label": "StringValue",
        "extra": "Struct",
        "value": "Value",
        "list": "ListValue",
        "any": "Any",
        "empty": "Empty",
    }
    for number, (name, kind) in enumerate(wkt.items(), start=20):
        add(name=name, number=number, type=fd.TYPE_MESSAGE, type_name=f".google.protobuf.{kind}")
    order.oneof_decl.add(name="payment")
    order.oneof_decl.add(name="_opt")
    pool = DescriptorPool()
    for module in _WELL_KNOWN:
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)
    pool.Add(f)
    return pool.FindMessageTypeByName("shop.Order")


@pytest.fixture(scope="module")
def proto() -> Shape:
    return protobuf_shape(order_descriptor())


@pytest.mark.parametrize(
    ("path", "types"),
    [
        ("id", {"number"}),
        ("ratio", {"number", "string"}),
        ("ok", {"boolean"}),
        ("name", {"string"}),  # proto3 scalars are always there (default "")
        ("blob", {"string"}),
        ("status", {"string"}),
        ("skus", {"array"}),
        ("skus.3", {"string", "null"}),
        ("attrs.any-key.city", {"string", "null"}),
        ("address", {"object", "null"}),  # a message field may be unset
        ("address.city", {"string", "null"}),
        ("previous.previous.address.city", {"string", "null"}),
        ("opt", {"number", "null"}),  # proto3 optional: presence
        ("card", {"string", "null"}),  # a oneof member
        ("at", {"string", "null"}),
        ("took", {"string", "null"}),
        ("mask", {"string", "null"}),
        ("maybe", {"number", "null"}),
        ("label", {"string", "null"}),
        ("extra", {"object", "null"}),
        ("extra.anything.deep", ALL),  # a Struct holds any JSON
        ("value.anything", ALL),
        ("list", {"array", "null"}),
        ("list.0.x", ALL),
        ("any", {"object", "null"}),
        ("any.@type", {"string", "null"}),
        ("any.field_of_the_packed_message", ALL),
        ("empty", {"object", "null"}),
    ],
)
def test_protobuf_paths_have_the_types_to_json_gives(
    proto: Shape, path: str, types: set[str]
) -> None:
    assert types_at(proto, path) == types


@pytest.mark.parametrize("path", ["nope", "address.town", "empty.x", "at.seconds", "maybe.value"])
def test_protobuf_paths_the_schema_does_not_have(proto: Shape, path: str) -> None:
    assert types_at(proto, path) is None


def test_decoded_protobuf_messages_fit_their_shape(proto: Shape) -> None:
    descriptor = order_descriptor()
    message_class: Any = GetMessageClass(descriptor)
    message = message_class(id=5, ratio=math.inf, status=1, skus=["a"], card="c", opt=3)
    message.attrs["k"].city = "Paris"
    message.previous.address.city = "Lyon"
    message.at.FromDatetime(datetime(2026, 1, 2))
    message.took.FromMilliseconds(1500)
    message.mask.paths.append("a.b")
    message.maybe.value = 7
    message.extra.update({"k": [1, {"x": None}]})
    message.value.string_value = "v"
    message.list.values.add().number_value = 1
    message.empty.SetInParent()
    message.any.Pack(wrappers_pb2.StringValue(value="packed"))
    decoded = proto_to_json(message_class.FromString(message.SerializeToString()))
    assert isinstance(decoded, dict)
    assert decoded["ratio"] == "Infinity"
    assert_shape_admits(proto, decoded)
    assert_shape_admits(proto, proto_to_json(message_class()))  # everything unset


# -- JSON Schema -------------------------------------------------------------------------------

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "data"],
    "properties": {
        "type": {"type": "string", "enum": ["signup", "order"]},
        "data": {"$ref": "#/definitions/Data"},
        "meta": {"type": "object"},  # open: any key
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "tree": {"$ref": "#/$defs/Node"},
        "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "free": {},
        "mixed": {"type": ["number", "null"]},
        "pair": {
            "type": "array",
            "items": [{"type": "string"}, {"type": "number"}],
            "additionalItems": False,
        },
        "status": {"enum": ["A", 1, None]},
        "external": {"$ref": "other.json#/x"},
    },
    "definitions": {
        "Data": {
            "type": "object",
            "additionalProperties": False,
            "required": ["total"],
            "properties": {
                "total": {"type": "number"},
                "items": {"type": "array", "items": {"$ref": "#/definitions/Item"}},
            },
        },
        "Item": {
            "type": "object",
            "properties": {"sku": {"type": "string"}},
            "additionalProperties": False,
        },
    },
    "$defs": {
        "Node": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
        }
    },
}


@pytest.fixture(scope="module")
def json_root() -> Shape:
    return json_schema_shape(JSON_SCHEMA)


@pytest.mark.parametrize(
    ("path", "types"),
    [
        ("type", {"string"}),
        ("data.total", {"number"}),
        ("data.items", {"array", "null"}),  # not required: may be absent
        ("data.items.0.sku", {"string", "null"}),
        ("meta", {"object", "null"}),
        ("meta.anything.at.all", ALL),  # open object
        ("counts.x", {"number", "null"}),
        ("tree.children.0.children.0.name", {"string", "null"}),
        ("either", {"string", "number", "null"}),
        ("free.x.y", ALL),
        ("mixed", {"number", "null"}),
        ("pair.1", {"string", "number", "null"}),
        ("status", {"string", "number", "null"}),
        ("external.x", ALL),  # another document: not followed
    ],
)
def test_json_schema_paths(json_root: Shape, path: str, types: set[str]) -> None:
    assert types_at(json_root, path) == types


@pytest.mark.parametrize(
    "path", ["nope", "data.totl", "data.items.0.skuu", "tree.children.0.nmae", "type.x"]
)
def test_json_schema_closed_objects_have_only_their_properties(json_root: Shape, path: str) -> None:
    assert types_at(json_root, path) is None


def test_an_object_without_additional_properties_false_is_open() -> None:
    shape = json_schema_shape('{"type": "object", "properties": {"a": {"type": "string"}}}')
    assert types_at(shape, "a") == {"string", "null"}
    assert types_at(shape, "b.c") == ALL


def test_json_schema_without_type_and_combinators() -> None:
    assert json_schema_shape({}) == ANY
    assert json_schema_shape(True) == ANY
    anything = {"anyOf": [{"type": "string"}, {}]}
    assert json_schema_shape(anything) == ANY  # one branch allows any value
    both = {"allOf": [{"required": ["a"]}, {"type": "object", "additionalProperties": False}]}
    assert types_at(json_schema_shape(both), "a") is None
    untyped = {"properties": {"a": {"type": "string"}}, "additionalProperties": False}
    assert types_at(json_schema_shape(untyped), "a") == {"string", "null"}
    assert types_at(json_schema_shape(untyped), "b") is None  # no type can have b


# -- reading shapes ------------------------------------------------------------------------------


def test_lookup_steps() -> None:
    record = shapes.obj({"a": shapes.arr(shapes.scalar("string"))})
    assert lookup(record, [("a", None), (None, 0)]) == shapes.union(
        shapes.scalar("string"), shapes.NULL
    )
    assert lookup(record, [("a", None), ("x", None)]) is None  # a list has no fields
    assert lookup(record, [("b", None)]) is None
    assert lookup(ANY, [("b", None), (None, 3)]) == ANY
    assert shapes.items(record) is None
    assert shapes.values(record) == shapes.arr(shapes.scalar("string"))


def test_nonfinite_float_texts_count_as_text_only_when_asked() -> None:
    double = avro_shape("double")
    assert json_types(double) == {"number", "string"}
    assert json_types(double, nonfinite_text=False) == {"number"}

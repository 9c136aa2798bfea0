"""`rules check --schema-registry` (consumer/rules/schema_check.py): rules read against schemas.

No registry here: schemas are given as shapes, or served by a stand-in for the registry client.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka.schema_registry import RegisteredSchema, Schema
from google.protobuf import descriptor_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor_pool import DescriptorPool

from consumer.cli import main
from consumer.rules import schema_check
from consumer.rules.schema_check import (
    SchemaCheckError,
    SubjectSchema,
    check_rules_against_schemas,
    rule_schema_issues,
    subject_shape,
)
from consumer.schemas import shapes
from consumer.schemas.registry import Registry, RegistryUnavailableError

ORDER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "type", "type": "string"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {
            "name": "data",
            "type": {
                "type": "record",
                "name": "Data",
                "fields": [
                    {"name": "customer_id", "type": "string"},
                    {"name": "total", "type": "double"},
                    {"name": "currency", "type": ["null", "string"]},
                    {
                        "name": "items",
                        "type": {
                            "type": "array",
                            "items": {
                                "type": "record",
                                "name": "Item",
                                "fields": [
                                    {"name": "sku", "type": "string"},
                                    {"name": "qty", "type": "int"},
                                ],
                            },
                        },
                    },
                    {"name": "attrs", "type": {"type": "map", "values": "string"}},
                    {
                        "name": "placed_at",
                        "type": {"type": "long", "logicalType": "timestamp-millis"},
                    },
                ],
            },
        },
    ],
}
SCHEMA = SubjectSchema("orders-value", "AVRO", 3, shapes.avro_shape(ORDER))
PREFIX = "schema orders-value (AVRO v3)"

RULES = """\
rules:
  - id: shipped
    topics: [orders]
    when:
      type: order.shipped
      status: {eq: PAID}
      data.totl: {gte: 50}
      data.total: {gt: "10"}
      data.customer_id: {eq: 5}
      data.currency: {matches: "^EU", exists: true}
      _kafka.headers.x-source: {ne: backfill}
    canvas: {id: c-1}
    recipient:
      external_user_id: "{{ data.custmer_id }}"
    properties:
      total: "{{ data.total }}"
      skus: "{{ data.items[].sku }}"
      bad_sku: "{{ data.items[].skuu }}"
      no_projection: "{{ data.items.sku }}"
      key: "{{ _kafka.key }}"
      dynamic: "{{ to_array(data)[0].nope }}"
      attr: "Hi {{ data.attrs.anything }}"
"""


def check(tmp_path: Path, text: str, *schemas: SubjectSchema) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    by_subject = {schema.subject: schema for schema in schemas}
    return [str(p) for p in check_rules_against_schemas([path], by_subject.get)]


def rule(when: str = "{}", properties: str = "{}", **extra: str) -> str:
    lines = [
        "rules:",
        "  - id: r",
        "    topics: [orders]",
        f"    when: {when}",
        "    canvas: {id: c-1}",
        '    recipient: {external_user_id: "u"}',
        f"    properties: {properties}",
        *(f"    {key}: {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def test_fields_the_schema_lacks_and_comparisons_that_cannot_hold(tmp_path: Path) -> None:
    file = tmp_path / "rules.yaml"
    assert check(tmp_path, RULES, SCHEMA) == [
        f"{file}:7: shipped: {PREFIX}: condition `data.totl`: `data` has no field `totl`"
        " (did you mean `total`?)",
        f'{file}:8: shipped: {PREFIX}: `data.total: {{gt: "10"}}` can never hold: it needs text,'
        " and `data.total` is a number (double)",
        f"{file}:9: shipped: {PREFIX}: `data.customer_id: {{eq: 5}}` can never hold: it needs a"
        " number, and `data.customer_id` is text (string)",
        f"{file}:14: shipped: {PREFIX}: `{{{{ data.custmer_id }}}}`: `data` has no field"
        " `custmer_id` (did you mean `customer_id`?)",
        f"{file}:18: shipped: {PREFIX}: `{{{{ data.items[].skuu }}}}`: `data.items[]` has no"
        " field `skuu` (did you mean `sku`?)",
        f"{file}:19: shipped: {PREFIX}: `{{{{ data.items.sku }}}}`: `data.items` is a list,"
        " which has no field `sku`; its items have one: `data.items[].sku`",
    ]


@pytest.mark.parametrize(
    "when",
    [
        "{status: {eq: NEW}}",  # an enum is its symbol
        "{status: {in: [NEW, PAID]}}",
        "{status: {matches: '^N'}}",
        "{data.total: {gte: 50, lt: 1000.5}}",
        "{data.total: {eq: NaN}}",  # a double that is not a number decodes to "NaN"
        "{data.total: {ne: '10'}}",  # ne and not_in hold for any other type
        "{data.currency: {eq: null}}",  # null is never held against a field
        "{data.customer_id: {exists: false}}",
        "{data.placed_at: {gte: '2026-01-01'}}",  # a timestamp is ISO 8601 text
        "{data.items.0.sku: {eq: x}}",
        "{data.attrs.any-key: {eq: x}}",  # a map has every key
        "{_kafka.topic: {eq: 5}}",  # `_kafka` is the consumer's: never checked
        "{_kafka.schema.type: AVRO, _kafka.key_schema.id: {gt: x}, _kafka.nope.nope: 1}",
    ],
)
def test_conditions_that_can_hold_are_not_reported(tmp_path: Path, when: str) -> None:
    assert check(tmp_path, rule(when=when), SCHEMA) == []


@pytest.mark.parametrize(
    "expression",
    [
        "data.customer_id",
        "data.items[*].sku",
        "data.items[0].qty",
        "data.items[?qty > `1`].sku",
        "data.items[-1].sku",
        "data.items[1:].sku",
        "data.attrs.*",
        "sort_by(data.items, &qty)[0].sku",
        "length(data.items)",
        "{c: data.customer_id, n: data.total}",
        "data.currency || 'EUR'",
        "@.type",
        '_kafka.headers.\\"x-source\\"',
        "_kafka.anything.at.all",
        "to_array(data)[0].nope",  # what a function gives is not followed
        "data | keys(@)[0].nope",
        '`{\\"a\\": 1}`.b',  # a literal: not the event
        "[data, type][0].nope",
        "data.items[]",
    ],
)
def test_expressions_that_can_read_something_are_not_reported(
    tmp_path: Path, expression: str
) -> None:
    properties = f'{{x: "{{{{ {expression} }}}}"}}'
    assert check(tmp_path, rule(properties=properties), SCHEMA) == []


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("data.items[?qtty > `1`].sku", "`data.items[?...]` has no field `qtty`"),
        ("data.items[*].skuu", "`data.items[*]` has no field `skuu`"),
        ("sort_by(data.items, &qtty)", "`data.items[]` has no field `qtty`"),
        ("length(data.itms)", "`data` has no field `itms`"),
        ("{c: dta.customer_id}", "the event has no field `dta`"),
        ("data.total.amount", "`data.total` is a number (double), which has no field `amount`"),
        ("status.name", "`status` is text (enum Status), which has no field `name`"),
        ('data."customer-id"', "`data` has no field `customer-id`"),
        ("@.tpye", "the event has no field `tpye` (did you mean `type`?)"),
    ],
)
def test_expressions_reading_missing_fields(tmp_path: Path, expression: str, problem: str) -> None:
    properties = f"{{x: '{{{{ {expression} }}}}'}}"
    found = check(tmp_path, rule(properties=properties), SCHEMA)
    assert len(found) == 1
    assert found[0].startswith(
        f"{tmp_path / 'rules.yaml'}:7: r: {PREFIX}: `{{{{ {expression} }}}}`: "
    )
    assert problem in found[0]


def test_every_template_section_and_event_time_are_read(tmp_path: Path) -> None:
    text = """\
rules:
  - id: r
    topics: [orders]
    campaign: {id: k-1}
    recipient:
      user_alias: {alias_name: "{{ data.nme }}", alias_label: shop}
    attributes:
      last: {add: ["{{ data.items[].sku }}", "{{ data.itemz }}"]}
    schedule:
      time: "{{ data.placed }}"
    event_time: data.placed
    max_event_age: 1h
"""
    lines = [
        problem.split(": ", 3)[0].rsplit(":", 1)[1] for problem in check(tmp_path, text, SCHEMA)
    ]
    assert lines == ["6", "8", "10", "11"]


def test_event_time_needs_text_or_a_number(tmp_path: Path) -> None:
    schema = SubjectSchema("orders-value", "JSON", 1, shapes.json_schema_shape({
        "type": "object",
        "properties": {"flag": {"type": "boolean"}, "at": {"type": "string"}},
    }))  # fmt: skip
    assert check(tmp_path, rule(event_time="at", max_event_age="1h"), schema) == []
    found = check(tmp_path, rule(event_time="flag", max_event_age="1h"), schema)
    assert found == [
        f"{tmp_path / 'rules.yaml'}:8: r: schema orders-value (JSON v1): event_time `flag` is"
        " true/false or null: it needs ISO 8601 text or a number of epoch milliseconds"
    ]


def test_a_topic_without_a_subject_is_not_checked(tmp_path: Path) -> None:
    text = rule(when="{data.nope: 1}").replace("[orders]", "[json-events]")
    assert check(tmp_path, text, SCHEMA) == []


def test_each_topic_is_checked_against_its_own_subject(tmp_path: Path) -> None:
    other = SubjectSchema("returns-value", "JSON", None, shapes.json_schema_shape({
        "type": "object", "properties": {"data": {"type": "object"}},
    }))  # fmt: skip
    text = rule(when="{data.nope: 1}").replace("[orders]", "[orders, returns, unknown]")
    assert check(tmp_path, text, SCHEMA, other) == [
        f"{tmp_path / 'rules.yaml'}:4: r: {PREFIX}: condition `data.nope`: `data` has no field"
        " `nope` (it has customer_id, total, currency, items, attrs, placed_at)"
    ]


def test_subjects_are_asked_once(tmp_path: Path) -> None:
    asked: list[str] = []

    def latest(subject: str) -> SubjectSchema | None:
        asked.append(subject)
        return None

    path = tmp_path / "rules.yaml"
    path.write_text(RULES + RULES.split("rules:\n", 1)[1].replace("id: shipped", "id: again"))
    assert check_rules_against_schemas([path], latest) == []
    assert asked == ["orders-value"]


def test_open_and_closed_json_schema_objects() -> None:
    closed = shapes.json_schema_shape({
        "type": "object",
        "additionalProperties": False,
        "properties": {"type": {"type": "string"}, "data": {"type": "object"}},
    })  # fmt: skip
    spec: dict[object, object] = {"when": {"data.anything": 1, "typo": 1, "type": {"gt": 1}}}
    assert rule_schema_issues(spec, closed) == [
        (
            ("when", "typo"),
            "condition `typo`: the event has no field `typo` (did you mean `type`?)",
        ),
        (
            ("when", "type", "gt"),
            "`type: {gt: 1}` can never hold: it needs a number, and `type` is text or null",
        ),
    ]
    open_root = shapes.json_schema_shape(
        {"type": "object", "properties": {"a": {"type": "string"}}}
    )
    assert rule_schema_issues({"when": {"typo.x": 1}}, open_root) == []


def proto_order() -> shapes.Shape:
    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="p.proto", package="shop", syntax="proto3")
    f.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
    status = f.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    order = f.message_type.add(name="Order")
    order.field.add(name="status", number=1, type=fd.TYPE_ENUM, type_name=".shop.Status")
    wkt = ".google.protobuf."
    order.field.add(name="at", number=2, type=fd.TYPE_MESSAGE, type_name=f"{wkt}Timestamp")
    order.field.add(name="qty", number=3, type=fd.TYPE_MESSAGE, type_name=f"{wkt}Int32Value")
    order.field.add(name="ratio", number=4, type=fd.TYPE_FLOAT)
    pool = DescriptorPool()
    for module in (timestamp_pb2, wrappers_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        pool.Add(file_proto)
    pool.Add(f)
    return shapes.protobuf_shape(pool.FindMessageTypeByName("shop.Order"))


def test_protobuf_shapes_are_checked_like_the_others() -> None:
    when = {
        "status": "NEW",
        "at": {"gte": "2026-01-01T00:00:00Z"},
        "qty": {"gt": 1},
        "ratio": {"in": ["NaN", 0.5]},
        "_kafka.schema.type": "PROTOBUF",
    }
    assert rule_schema_issues({"when": when}, proto_order()) == []
    wrong: dict[object, object] = {"when": {"at": {"gt": 5}, "qty.value": 1, "status": 0}}
    assert rule_schema_issues(wrong, proto_order()) == [
        (
            ("when", "at", "gt"),
            "`at: {gt: 5}` can never hold: it needs a number, and `at` is text or null (Timestamp)",
        ),
        (
            ("when", "qty.value"),
            "condition `qty.value`: `qty` is a number or null (Int32Value), which has no"
            " field `value`",
        ),
        (
            ("when", "status"),
            "`status: 0` can never hold: it needs a number, and `status` is text (enum Status)",
        ),
    ]


def test_a_root_that_is_not_a_record_still_has_kafka() -> None:
    root = shapes.protobuf_shape(wrappers_pb2.DoubleValue.DESCRIPTOR)
    spec: dict[object, object] = {
        "when": {"x": 1},
        "properties": {"k": "{{ _kafka.key }}", "t": "{{ @._kafka.topic }}"},
    }
    assert rule_schema_issues(spec, root) == [
        (
            ("when", "x"),
            "condition `x`: the event is a number (DoubleValue), which has no field `x`",
        )
    ]


# -- the registry's answer as a shape ------------------------------------------------------------


class FakeClient:
    def __init__(self, schemas: dict[int, Schema]) -> None:
        self.schemas = schemas

    def get_schema(
        self, schema_id: int, subject: str | None = None, fmt: str | None = None
    ) -> Schema:
        assert fmt == "serialized"
        return self.schemas[schema_id]


class FakeRegistry:
    def __init__(self, latest: dict[str, RegisteredSchema], by_id: dict[int, Schema]) -> None:
        self._latest = latest
        self.client = FakeClient(by_id)

    def latest(self, subject: str) -> RegisteredSchema | None:
        return self._latest.get(subject)

    def serialized(self, schema_id: int) -> Schema:
        return self.client.get_schema(schema_id, None, "serialized")


def registered(subject: str, text: str, kind: str, schema_id: int = 1) -> RegisteredSchema:
    return RegisteredSchema(subject, 2, schema_id, None, Schema(text, kind))


def proto_file_text() -> str:
    f = descriptor_pb2.FileDescriptorProto(name="o.proto", package="shop", syntax="proto3")
    first = f.message_type.add(name="Order")
    first.field.add(name="total", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE)
    f.message_type.add(name="Other").field.add(name="x", number=1, type=9)
    return base64.b64encode(f.SerializeToString()).decode()


def test_subject_shape_reads_each_schema_type() -> None:
    registry = FakeRegistry(
        {
            "a-value": registered("a-value", json.dumps(ORDER), "AVRO"),
            "j-value": registered("j-value", '{"type": "object"}', "JSON"),
            "p-value": registered("p-value", "syntax = 'proto3'; ...", "PROTOBUF", 7),
            "bad-value": registered("bad-value", '{"type": "object"', "JSON"),
            "x-value": registered("x-value", "?", "XML"),
        },
        {7: Schema(proto_file_text(), "PROTOBUF")},
    )
    fake = cast(Registry, registry)
    avro = subject_shape(fake, "a-value")
    assert avro is not None
    assert str(avro) == "schema a-value (AVRO v2)"
    assert rule_schema_issues({"when": {"data.totl": 1}}, avro.shape) != []
    json_schema = subject_shape(fake, "j-value")
    assert json_schema is not None
    assert shapes.json_types(json_schema.shape) == {"object"}
    assert shapes.lookup(json_schema.shape, [("any", None), ("thing", None)]) == shapes.ANY
    proto = subject_shape(fake, "p-value")  # the first message, from the serialized form
    assert proto is not None
    assert shapes.field_names(proto.shape) == ["total"]
    assert subject_shape(fake, "none-value") is None
    with pytest.raises(SchemaCheckError, match="bad-value: cannot read its JSON schema"):
        subject_shape(fake, "bad-value")
    with pytest.raises(SchemaCheckError, match="schema type XML is not supported"):
        subject_shape(fake, "x-value")


# -- the command -----------------------------------------------------------------------------

REGISTRY = "http://127.0.0.1:9/apis/ccompat/v7"  # never asked: subject_shape is replaced


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, SubjectSchema]:
    schemas = {SCHEMA.subject: SCHEMA}

    def fake(registry: Registry, subject: str) -> SubjectSchema | None:
        assert registry.url == REGISTRY
        if subject == "down-value":
            raise RegistryUnavailableError(f"subject {subject}: ConnectError: refused")
        return schemas.get(subject)

    monkeypatch.setattr(schema_check, "subject_shape", fake)
    return schemas


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["rules", "check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_reports_schema_problems_as_invalid_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, served: dict[str, SubjectSchema]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule(when="{data.totl: 1, data.total: {gt: 5}}"))
    code, out, err = run(capsys, "--schema-registry", REGISTRY, str(path))
    assert code == 1
    assert out == (
        f"{path}:4: r: {PREFIX}: condition `data.totl`: `data` has no field `totl`"
        " (did you mean `total`?)\n"
    )
    assert err == "1 problem(s) found\n"


def test_check_says_which_topics_have_no_subject(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, served: dict[str, SubjectSchema]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule(when="{data.total: {gt: 5}}").replace("[orders]", "[orders, clicks]"))
    code, out, err = run(capsys, "--schema-registry", REGISTRY, str(path))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "info: the schema registry has no subject clicks-value: events of topic clicks are"
        " taken as JSON, not checked against a schema",
        "ok: 1 rule in 1 file, 1 schema checked",
    ]


def test_an_unreachable_registry_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, served: dict[str, SubjectSchema]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule().replace("[orders]", "[down]"))
    assert run(capsys, "--schema-registry", REGISTRY, str(path)) == (
        2,
        "",
        f"error: schema registry {REGISTRY}: subject down-value: ConnectError: refused\n",
    )


def test_invalid_rules_are_reported_before_the_registry_is_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, served: dict[str, SubjectSchema]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule(when="{x: {above: 1}}").replace("[orders]", "[down]"))
    code, _, err = run(capsys, "--schema-registry", REGISTRY, str(path))
    assert (code, err) == (1, "1 problem(s) found\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--schema-registry", "ftp://x"], "error: --schema-registry: must start with https://"),
        (
            ["--schema-registry", REGISTRY, "--schema-registry-user", "u"],
            "error: --schema-registry: basic_auth_user and basic_auth_password_file go together",
        ),
        (
            ["--schema-registry", REGISTRY, "--schema-registry-user", "u",
             "--schema-registry-password-file", "/nonexistent/password"],
            "error: --schema-registry: kafka.schema_registry.basic_auth_password_file: cannot read",
        ),
    ],
)  # fmt: skip
def test_bad_registry_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    served: dict[str, SubjectSchema],
    options: list[str],
    message: str,
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule())
    code, out, err = run(capsys, *options, str(path))
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert err.count("\n") == 1

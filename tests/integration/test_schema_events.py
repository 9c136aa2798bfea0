"""Schema Registry events end to end: records written with confluent-kafka's serializers through a
real registry (Apicurio, scripts/schema-registry-local) go through `braze-consumer run` on the real
broker and reach the Braze emulator with their fields and types; the registry's failure holds,
the event's failure is an `invalid_payload` dead letter."""

from __future__ import annotations

import base64
import json
import signal
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, timestamp_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass

from consumer.schemas import wire
from tests.integration.conftest import SchemaRegistry
from tests.integration.kafka_helpers import (
    committed_offsets,
    consume_all,
    create_topic,
    produce,
    unique_name,
)
from tests.integration.service_helpers import (
    Scenario,
    free_port,
    header_map,
    run_cli,
    scrape_total,
    wait_until,
)

ORDER_V1: dict[str, Any] = {
    "type": "record",
    "name": "OrderPaid",
    "namespace": "shop",
    "fields": [
        {"name": "type", "type": "string"},
        {
            "name": "data",
            "type": {
                "type": "record",
                "name": "Order",
                "fields": [
                    {"name": "user_id", "type": "string"},
                    {"name": "total", "type": "double"},
                    {"name": "count", "type": "long"},
                    {"name": "paid", "type": "boolean"},
                    {
                        "name": "status",
                        "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]},
                    },
                    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                    {
                        "name": "at",
                        "type": {"type": "long", "logicalType": "timestamp-millis"},
                    },
                    {"name": "tags", "type": {"type": "array", "items": "string"}},
                    {"name": "note", "type": ["null", "string"], "default": None},
                ],
            },
        },
    ],
}


def order_v2() -> dict[str, Any]:
    """v1 with a field added with a default: a compatible evolution."""
    schema: dict[str, Any] = json.loads(json.dumps(ORDER_V1))
    schema["fields"][1]["type"]["fields"].append(
        {"name": "coupon", "type": "string", "default": "none"}
    )
    return schema


def order(user: str, coupon: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user_id": user,
        "total": 12.5,
        "count": 3,
        "paid": True,
        "status": "PAID",
        "day": date(2026, 11, 23),
        "at": datetime(2026, 11, 23, 16, 5, 9, 250_000, tzinfo=UTC),
        "tags": ["a", "b"],
        "note": None,
    }
    if coupon is not None:
        data["coupon"] = coupon
    return {"type": "order.paid", "data": data}


RULE = """\
  - id: {rule_id}
    topics: [{topic}]
    when:
      type: {kind}
    canvas: {{id: {canvas}}}
    recipient:
      external_user_id: "{{{{ {user} }}}}"
    properties:
{properties}
"""

AVRO_PROPERTIES = {
    "total": "data.total",
    "count": "data.count",
    "paid": "data.paid",
    "status": "data.status",
    "day": "data.day",
    "at": "data.at",
    "tags": "data.tags",
    "note": "data.note",
    "coupon": "data.coupon",
    "schema_type": "_kafka.schema.type",
    "schema_version": "_kafka.schema.version",
}


def rule_text(
    rule_id: str, topic: str, kind: str, canvas: str, user: str, props: dict[str, str]
) -> str:
    properties = "\n".join(f'      {k}: "{{{{ {v} }}}}"' for k, v in props.items())
    return RULE.format(
        rule_id=rule_id,
        topic=topic,
        kind=kind,
        canvas=canvas,
        user=user,
        properties=properties,
    )


def registry_config(registry: SchemaRegistry) -> dict[str, Any]:
    return {"url": registry.url, "timeout_s": 2, "retry_max_interval_s": 2}


def recipients_by_user(scenario: Scenario, canvas: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for body in scenario.accepted_bodies():
        if body.get("canvas_id") != canvas:
            continue
        for recipient in body["recipients"]:
            found[recipient["external_user_id"]] = recipient
    return found


def proto_order_class() -> Any:
    """A Protobuf message class made at run time (no protoc here), as a producer's build would."""
    pool = DescriptorPool()
    ts_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_file)
    pool.Add(ts_file)
    f = descriptor_pb2.FileDescriptorProto(name="refund.proto", package="shop", syntax="proto3")
    f.dependency.append("google/protobuf/timestamp.proto")
    kind = f.enum_type.add(name="Reason")
    kind.value.add(name="UNKNOWN", number=0)
    kind.value.add(name="DAMAGED", number=1)
    message = f.message_type.add(name="Refund")
    fd = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="type", number=1, type=fd.TYPE_STRING, label=1)
    message.field.add(name="user_id", number=2, type=fd.TYPE_STRING, label=1)
    message.field.add(name="amount_cents", number=3, type=fd.TYPE_INT64, label=1)
    message.field.add(name="reason", number=4, type=fd.TYPE_ENUM, type_name=".shop.Reason", label=1)
    ts = ".google.protobuf.Timestamp"
    message.field.add(name="at", number=5, type=fd.TYPE_MESSAGE, type_name=ts, label=1)
    message.field.add(name="items", number=6, type=fd.TYPE_STRING, label=3)
    pool.Add(f)
    return GetMessageClass(pool.FindMessageTypeByName("shop.Refund"))


def test_avro_protobuf_and_json_schema_records_reach_braze_with_their_types(
    scenario: Scenario, schema_registry: SchemaRegistry
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    avro_topic, proto_topic, json_topic = scenario.topic, unique_name("proto"), unique_name("js")
    for topic in (proto_topic, json_topic):
        create_topic(scenario.bootstrap, topic)
    rules = "rules:\n" + "".join(
        [
            rule_text("avro", avro_topic, "order.paid", "c-avro", "data.user_id", AVRO_PROPERTIES),
            rule_text(
                "proto",
                proto_topic,
                "refund",
                "c-proto",
                "user_id",
                {
                    "amount": "amount_cents",
                    "reason": "reason",
                    "at": "at",
                    "items": "items",
                    "schema_type": "_kafka.schema.type",
                },
            ),
            rule_text(
                "json",
                json_topic,
                "visit",
                "c-json",
                "user",
                {"pages": "pages", "schema_type": "_kafka.schema.type"},
            ),
        ]
    )
    scenario.rules_path.write_text(rules, encoding="utf-8")

    # Avro: v1 records, then v2 (a field added with a default) in the same topic.
    v1 = AvroSerializer(client, json.dumps(ORDER_V1))
    v2 = AvroSerializer(client, json.dumps(order_v2()))
    ctx = SerializationContext(avro_topic, MessageField.VALUE)
    produce(
        scenario.bootstrap,
        avro_topic,
        [v1(order(f"a-{i}"), ctx) for i in range(3)]
        + [v2(order(f"b-{i}", "SAVE"), ctx) for i in range(3)],
    )
    refund_class = proto_order_class()
    proto = ProtobufSerializer(refund_class, client, {"use.deprecated.format": False})
    refund = refund_class(type="refund", user_id="p-1", amount_cents=2**40, reason=1, items=["x"])
    refund.at.FromMilliseconds(1_795_450_000_250)
    produce(
        scenario.bootstrap,
        proto_topic,
        [proto(refund, SerializationContext(proto_topic, MessageField.VALUE))],
    )
    visit_schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "user": {"type": "string"},
            "pages": {"type": "integer"},
        },
        "required": ["type", "user"],
    }
    js = JSONSerializer(json.dumps(visit_schema), client)
    produce(
        scenario.bootstrap,
        json_topic,
        [
            js(
                {"type": "visit", "user": "j-1", "pages": 4},
                SerializationContext(json_topic, MessageField.VALUE),
            )
        ],
    )

    config = scenario.config(kafka__schema_registry=registry_config(schema_registry))
    service = scenario.start(config)
    assert service.wait(120) == 0, service.log()

    avro = recipients_by_user(scenario, "c-avro")
    assert sorted(avro) == ["a-0", "a-1", "a-2", "b-0", "b-1", "b-2"]
    expected = {
        "total": 12.5,
        "count": 3,
        "paid": True,
        "status": "PAID",
        "day": "2026-11-23",
        "at": "2026-11-23T16:05:09.250Z",
        "tags": ["a", "b"],
        "schema_type": "AVRO",
    }
    assert avro["a-0"]["context"] == {**expected, "schema_version": 1}
    assert avro["b-0"]["context"] == {
        **expected,
        "coupon": "SAVE",
        "schema_version": 2,
    }
    [proto_recipient] = recipients_by_user(scenario, "c-proto").values()
    assert proto_recipient["context"] == {
        "amount": 2**40,
        "reason": "DAMAGED",
        "at": "2026-11-23T16:06:40.250Z",
        "items": ["x"],
        "schema_type": "PROTOBUF",
    }
    [json_recipient] = recipients_by_user(scenario, "c-json").values()
    assert json_recipient["context"] == {"pages": 4, "schema_type": "JSON"}
    assert committed_offsets(scenario.bootstrap, scenario.group, avro_topic) == {0: 6}
    assert "rules checked against the schema registry: 0 problem(s)" in service.log()


def test_an_unknown_schema_id_and_undecodable_bytes_are_invalid_payload_dead_letters(
    scenario: Scenario, schema_registry: SchemaRegistry
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    ctx = SerializationContext(scenario.topic, MessageField.VALUE)
    good = AvroSerializer(client, json.dumps(ORDER_V1))(order("u-1"), ctx)
    unknown = wire.frame(2_000_000_000, good[wire.HEADER_BYTES :])
    undecodable = good[: wire.HEADER_BYTES] + b"\xff\xff\xff\xff"
    scenario.rules_path.write_text(
        "rules:\n"
        + rule_text(
            "avro", scenario.topic, "order.paid", "c-avro", "data.user_id", {"t": "data.total"}
        ),
        encoding="utf-8",
    )
    produce(scenario.bootstrap, scenario.topic, [unknown, good, undecodable])

    config = scenario.config(kafka__schema_registry=registry_config(schema_registry))
    service = scenario.start(config)
    assert service.wait(120) == 0, service.log()

    assert set(recipients_by_user(scenario, "c-avro")) == {"u-1"}
    letters = consume_all(scenario.bootstrap, scenario.dlq_topic, expected=2, timeout_s=20)
    assert [m.value for m in letters] == [unknown, undecodable]  # the original bytes
    headers = [header_map(m.meta.headers) for m in letters]
    assert [h["dlq.reason"] for h in headers] == ["invalid_payload", "invalid_payload"]
    assert "2000000000" in headers[0]["dlq.error"]
    assert "AVRO schema" in headers[1]["dlq.error"]
    assert committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 3}


def test_the_registry_stopped_for_30s_loses_and_dead_letters_nothing(
    scenario: Scenario, schema_registry: SchemaRegistry
) -> None:
    local = schema_registry.local
    if local is None:
        pytest.skip("SCHEMA_REGISTRY_URL points at a registry these tests did not start")
    client = SchemaRegistryClient({"url": schema_registry.url})
    ctx = SerializationContext(scenario.topic, MessageField.VALUE)
    scenario.rules_path.write_text(
        "rules:\n"
        + rule_text(
            "avro", scenario.topic, "order.paid", "c-avro", "data.user_id", {"t": "data.total"}
        )
        + rule_text(
            "plain", scenario.topic, "user.signed_up", "c-json", "data.user_id", {"s": "data.seq"}
        ),
        encoding="utf-8",
    )
    v1 = AvroSerializer(client, json.dumps(ORDER_V1))
    # A schema the service has not seen yet: registered now, its id cached by the serializer.
    v2 = AvroSerializer(client, json.dumps(order_v2()))
    first = [v1(order(f"a-{i}"), ctx) for i in range(20)]
    later = [v2(order(f"b-{i}", "SAVE"), ctx) for i in range(20)]
    port = free_port()
    config = scenario.config(
        kafka__schema_registry=registry_config(schema_registry), metrics__port=port
    )
    service = scenario.start(config, exit_when_idle_s=None)
    try:
        produce(scenario.bootstrap, scenario.topic, first)
        wait_until(lambda: len(recipients_by_user(scenario, "c-avro")) == 20, 60, "v1 records sent")
        local.stop(keep_data=True)
        stopped_at = time.monotonic()
        try:
            # New-schema records, then plain JSON events behind them in the same partition.
            produce(scenario.bootstrap, scenario.topic, later)
            scenario.produce_events([scenario.event(i) for i in range(10)])
            wait_until(
                lambda: scrape_total(port, "braze_consumer_schema_registry_waiting_events") == 30,
                30,
                "the new-schema records (and the events behind them) waiting",
            )
            time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
            assert len(recipients_by_user(scenario, "c-avro")) == 20
            assert recipients_by_user(scenario, "c-json") == {}
        finally:
            local.start(keep_data=True)
        wait_until(
            lambda: (
                len(recipients_by_user(scenario, "c-avro")) == 40
                and len(recipients_by_user(scenario, "c-json")) == 10
            ),
            60,
            "everything sent once the registry is back",
        )
        wait_until(
            lambda: (
                committed_offsets(scenario.bootstrap, scenario.group, scenario.topic) == {0: 50}
            ),
            30,
            "every offset committed",
        )
        service.signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.log()
    finally:
        service.ensure_stopped()
    assert consume_all(scenario.bootstrap, scenario.dlq_topic, expected=1, timeout_s=3) == []
    assert "waiting for the schema registry" in service.log()
    # Nobody was messaged twice.
    users = [r["external_user_id"] for b in scenario.accepted_bodies() for r in b["recipients"]]
    assert len(users) == len(set(users)) == 50


def test_rules_check_against_the_registry_names_a_misspelt_field_and_a_type_mismatch(
    tmp_path: Path, schema_registry: SchemaRegistry
) -> None:
    topic = unique_name("orders")
    client = SchemaRegistryClient({"url": schema_registry.url})
    client.register_schema(f"{topic}-value", Schema(json.dumps(ORDER_V1), "AVRO"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""\
rules:
  - id: paid
    topics: [{topic}, {unique_name("json-only")}]
    when:
      type: order.paid
      data.totl: {{gt: 10}}
      data.total: {{gt: "10"}}
      data.status: PAID
    canvas: {{id: c-1}}
    recipient:
      external_user_id: "{{{{ data.user_id }}}}"
    properties:
      coupon: "{{{{ data.cupon }}}}"
      when: "{{{{ _kafka.schema.version }}}}"
""",
        encoding="utf-8",
    )
    args = ["rules", "check", "--schema-registry", schema_registry.url, str(rules)]
    done = run_cli(args, 60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [
        line
        for line in done.stdout.splitlines()
        if line.startswith(str(rules)) and ": warning: " not in line
    ]
    assert len(lines) == 3, done.stdout
    misspelt, mismatch, template = lines
    assert misspelt.startswith(f"{rules}:6: paid: schema {topic}-value (AVRO v1): ")
    assert "`data` has no field `totl` (did you mean `total`?)" in misspelt
    assert mismatch.startswith(f"{rules}:7: paid: ")
    assert "`data.total` is a number (double)" in mismatch
    assert template.startswith(f"{rules}:13: paid: ")
    assert "`data` has no field `cupon`" in template

    unreachable = "http://127.0.0.1:1/apis/ccompat/v7"
    args = ["rules", "check", "--schema-registry", unreachable, str(rules)]
    stopped = run_cli(args, 60, check=False)
    assert stopped.returncode == 2
    assert stopped.stderr.startswith("error: schema registry http://127.0.0.1:1/apis/ccompat/v7")


def test_rules_preview_decodes_records_given_in_base64_or_encoded_from_json(
    tmp_path: Path, schema_registry: SchemaRegistry
) -> None:
    topic = unique_name("orders")
    client = SchemaRegistryClient({"url": schema_registry.url})
    record = AvroSerializer(client, json.dumps(ORDER_V1))(
        order("u-1"), SerializationContext(topic, MessageField.VALUE)
    )
    refund_class = proto_order_class()
    proto_topic = unique_name("refunds")
    ProtobufSerializer(refund_class, client, {"use.deprecated.format": False})(
        refund_class(type="refund"), SerializationContext(proto_topic, MessageField.VALUE)
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        + rule_text("avro", topic, "order.paid", "c-1", "data.user_id", {"t": "data.total"})
        + rule_text("proto", proto_topic, "refund", "c-2", "user_id", {"a": "amount_cents"}),
        encoding="utf-8",
    )
    base64_file = tmp_path / "records.txt"
    base64_file.write_text(base64.b64encode(record).decode() + "\n", encoding="utf-8")
    avro_json = tmp_path / "avro.jsonl"
    avro_json.write_text(
        json.dumps(
            {
                "type": "order.paid",
                "data": {
                    **order("u-2")["data"],
                    "day": "2026-11-23",
                    "at": "2026-11-23T16:05:09.250Z",
                },
            }
        )
        + "\n"
        + '{"type": "order.paid"}\n',
        encoding="utf-8",
    )
    proto_json = tmp_path / "proto.jsonl"
    proto_json.write_text(
        json.dumps({"type": "refund", "user_id": "p-1", "amount_cents": 2**40, "reason": "DAMAGED"})
        + "\n",
        encoding="utf-8",
    )

    def preview(topic_name: str, events: Path, *extra: str) -> list[dict[str, Any]]:
        args = ["rules", "preview", "--rules", str(rules), "--topic", topic_name]
        args += ["--event", str(events), "--schema-registry", schema_registry.url, *extra]
        done = run_cli(args, 60, check=False)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    [given] = preview(topic, base64_file)
    [request] = given["requests"]
    assert request["body"]["recipients"] == [{"external_user_id": "u-1", "context": {"t": 12.5}}]
    assert given["event"]["data"]["day"] == "2026-11-23"
    assert given["event"]["_kafka"]["schema"]["subject"] == f"{topic}-value"

    encoded, unfit = preview(topic, avro_json, "--event-avro")
    assert encoded["requests"][0]["body"]["recipients"][0]["external_user_id"] == "u-2"
    assert encoded["event"]["data"]["at"] == "2026-11-23T16:05:09.250Z"
    assert "cannot encode this event with the schema" in unfit["errors"][0]["message"]

    [proto] = preview(proto_topic, proto_json, "--event-proto")
    assert proto["requests"][0]["body"]["recipients"] == [
        {"external_user_id": "p-1", "context": {"a": 1099511627776}}
    ]
    assert proto["event"]["reason"] == "DAMAGED"
    assert proto["event"]["_kafka"]["schema"]["type"] == "PROTOBUF"

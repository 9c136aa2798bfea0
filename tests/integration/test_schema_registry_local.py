"""Proves the `schema_registry` fixture serves a working Confluent-compatible Schema Registry."""

from __future__ import annotations

import json
import uuid

import httpx
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.integration.conftest import SchemaRegistry

AVRO_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Trigger",
        "namespace": "test.schema_registry_local",
        "fields": [
            {"name": "user_id", "type": "string"},
            {"name": "count", "type": "long"},
        ],
    }
)


def test_registry_answers_and_an_avro_record_round_trips(schema_registry: SchemaRegistry) -> None:
    response = httpx.get(f"{schema_registry.url}/subjects", timeout=10.0)
    assert response.status_code == 200
    assert isinstance(response.json(), list)

    client = SchemaRegistryClient({"url": schema_registry.url})
    topic = f"sr-local-{uuid.uuid4().hex[:12]}"
    context = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, AVRO_SCHEMA, conf={"auto.register.schemas": True})
    record = {"user_id": "user-1", "count": 42}

    payload = serializer(record, context)

    # The Confluent wire format: magic byte 0, then the 4-byte id the registry gave the schema.
    assert payload[0] == 0
    schema_id = int.from_bytes(payload[1:5], "big")
    assert f"{topic}-value" in client.get_subjects()
    assert client.get_schema(schema_id).schema_type == "AVRO"
    assert AvroDeserializer(client)(payload, context) == record

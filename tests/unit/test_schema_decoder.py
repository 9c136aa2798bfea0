"""What a registry-served Protobuf schema the decoder cannot read means: the registry's limit."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common.schema_registry_client import SchemaVersion

from consumer.schemas.decoder import protobuf_messages
from consumer.schemas.errors import RegistryUnavailableError
from consumer.schemas.registry import Registry


def test_a_protobuf_schema_served_as_proto_text_makes_the_events_wait() -> None:
    text = Schema('syntax = "proto3";\nmessage Ev { string user_id = 1; }\n', "PROTOBUF")
    with pytest.raises(RegistryUnavailableError, match=r"as \.proto text"):
        protobuf_messages(cast(SchemaRegistryClient, None), text)


class _EmptyAnswers:
    """A client whose answers came back empty (a 200 with no body: the client's from_dict(None))."""

    def get_schema(self, schema_id: int, subject: str | None = None, fmt: str | None = None) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'get'")


def test_an_empty_answer_from_the_registry_makes_the_events_wait() -> None:
    registry = Registry(cast(SchemaRegistryClient, _EmptyAnswers()), "http://registry")
    with pytest.raises(RegistryUnavailableError, match="unreadable answer"):
        registry.info(7, "t-value")


class _SharedId:
    """Schema 7, registered under two subjects (two topics with the same record type)."""

    def get_schema(self, schema_id: int, subject: str | None = None, fmt: str | None = None) -> Any:
        return Schema('"string"', "AVRO")

    def get_schema_versions(self, schema_id: int) -> list[SchemaVersion]:
        return [SchemaVersion("a-value", 1), SchemaVersion("b-value", 3)]


def test_a_schema_id_shared_by_two_topics_names_each_ones_subject() -> None:
    registry = Registry(cast(SchemaRegistryClient, _SharedId()), "http://registry")
    first, second = registry.info(7, "a-value"), registry.info(7, "b-value")
    assert (first.subject, first.version) == ("a-value", 1)
    assert (second.subject, second.version) == ("b-value", 3)

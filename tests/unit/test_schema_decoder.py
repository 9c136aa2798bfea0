"""What a registry-served Protobuf schema the decoder cannot read means: the registry's limit."""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from consumer.schemas.decoder import protobuf_messages
from consumer.schemas.errors import RegistryUnavailableError


def test_a_protobuf_schema_served_as_proto_text_makes_the_events_wait() -> None:
    text = Schema('syntax = "proto3";\nmessage Ev { string user_id = 1; }\n', "PROTOBUF")
    with pytest.raises(RegistryUnavailableError, match=r"as \.proto text"):
        protobuf_messages(cast(SchemaRegistryClient, None), text)

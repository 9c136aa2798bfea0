"""A wire-format value (or key) to the JSON value the rules read, and its schema's identity.

Avro and JSON Schema go through confluent-kafka's own `AvroDeserializer` and `JSONDeserializer`
(JSON Schema validation on). Its `ProtobufDeserializer` needs the message class generated for
the topic at build time, which a generic consumer cannot have; so the Protobuf path uses the same
pieces of confluent-kafka that deserializer is made of (the framing with its message indexes,
the schema fetched by id in the serialized form, the descriptor pool with its references) and
builds the message class from the writer's schema at run time.

Failures: `RegistryUnavailableError` (the registry's or the deployment's fault: the event waits) or
`UndecodableError` (the event's: a dead letter `invalid_payload` with the registry's or decoder's
message).
"""

from __future__ import annotations

import io

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry._sync.protobuf import _resolve_named_schema
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.common.protobuf import _init_pool, _str_to_proto
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from consumer.json_types import JSONValue
from consumer.schemas import wire
from consumer.schemas.errors import RegistryUnavailableError, UndecodableError, UnknownSchemaError
from consumer.schemas.registry import (
    SCHEMA_NOT_FOUND,
    SUBJECT_NOT_FOUND,
    Registry,
    SchemaInfo,
    translate,
)

__all__ = ["UndecodableError", "WireDecoder", "protobuf_messages", "subject_of"]
from consumer.schemas.to_json import avro_to_json, proto_to_json


def subject_of(topic: str, is_key: bool) -> str:
    """TopicNameStrategy: `<topic>-value` (or `-key`)."""
    return f"{topic}-{'key' if is_key else 'value'}"


class WireDecoder:
    """Decodes wire-format values through one registry; schemas are fetched once per id."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        client = registry.client
        self._avro = AvroDeserializer(client)
        self._json = JSONDeserializer(None, schema_registry_client=client)
        self._protobuf = _ProtobufReader(registry)

    def decode(self, data: bytes, topic: str, is_key: bool = False) -> tuple[JSONValue, SchemaInfo]:
        """The decoded value as JSON and its schema's identity. Raises `RegistryUnavailableError`
        or `UndecodableError`; never anything else."""
        schema_id = wire.schema_id(data)
        if schema_id is None:
            raise UndecodableError(
                f"{len(data)} bytes: too short for the wire format (0x00 and a 4-byte schema id)"
            )
        subject = subject_of(topic, is_key)
        try:
            info = self.registry.info(schema_id, subject)
        except UnknownSchemaError as exc:
            raise UndecodableError(str(exc)) from None
        ctx = SerializationContext(topic, MessageField.KEY if is_key else MessageField.VALUE)
        try:
            return self._decode(info, data, ctx), info
        except (RegistryUnavailableError, UndecodableError):
            raise
        except (SchemaRegistryError, httpx.HTTPError) as exc:
            # A fetch the deserializer made itself (a reference, the schema in another format).
            failure = translate(exc, f"schema {schema_id}", SCHEMA_NOT_FOUND | SUBJECT_NOT_FOUND)
            if isinstance(failure, UnknownSchemaError):
                raise UndecodableError(str(failure)) from None
            raise failure from None
        except Exception as exc:  # the decoders raise anything on hostile bytes
            text = str(exc) or type(exc).__name__
            raise UndecodableError(f"{info.type} schema {schema_id}: {text[:300]}") from None

    def _decode(self, info: SchemaInfo, data: bytes, ctx: SerializationContext) -> JSONValue:
        if info.type == "AVRO":
            return avro_to_json(self._avro(data, ctx))
        if info.type == "JSON":
            value: JSONValue = self._json(data, ctx)
            return value
        if info.type == "PROTOBUF":
            return proto_to_json(self._protobuf.read(data))
        raise UndecodableError(f"schema {info.id} is of type {info.type}, which is not supported")


class _ProtobufReader:
    """A Protobuf message of the writer's schema, its class built from the registry's schema."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._classes: dict[tuple[int, tuple[int, ...]], type[Message]] = {}
        self._pools: dict[int, list[Descriptor]] = {}

    def read(self, data: bytes) -> Message:
        schema_id = SchemaId("PROTOBUF")
        payload = schema_id.from_bytes(io.BytesIO(data))
        if schema_id.id is None:
            raise UndecodableError("no schema id in the framing")
        indexes = tuple(schema_id.message_indexes or [0])
        key = (schema_id.id, indexes)
        message_class = self._classes.get(key)
        if message_class is None:
            message_class = self._message_class(schema_id.id, indexes)
            self._classes[key] = message_class
        message = message_class()
        message.ParseFromString(payload.read())
        return message

    def _message_class(self, schema_id: int, indexes: tuple[int, ...]) -> type[Message]:
        top = self._pools.get(schema_id)
        if top is None:
            top = protobuf_messages(self._registry.client, self._registry.serialized(schema_id))
            self._pools[schema_id] = top
        message_class: type[Message] = GetMessageClass(_message_descriptor(top, indexes))
        return message_class


def protobuf_messages(client: SchemaRegistryClient, schema: Schema) -> list[Descriptor]:
    """The top-level message descriptors (in declaration order) of a Protobuf schema the
    registry served in the serialized form (`fmt="serialized"`), its references resolved."""
    if schema.schema_str is None:
        raise RegistryUnavailableError("the registry's Protobuf schema has no text")
    pool = DescriptorPool()
    _init_pool(pool)
    _resolve_named_schema(schema, client, pool)
    try:
        file_proto = _str_to_proto("default", schema.schema_str)
    except Exception as exc:  # a SerializationError, or binascii's on text
        # The registry's limit, not the event's fault: the same bytes decode where the registry
        # serves the serialized form. So the events wait (and the alert says why).
        raise RegistryUnavailableError(
            "the registry served this Protobuf schema as .proto text, not in the serialized form "
            "(a base64 FileDescriptorProto) that can be read without protoc; Confluent Schema "
            f"Registry serves every schema so, Apicurio only those registered so ({exc})"
        ) from None
    pool.Add(file_proto)
    prefix = f"{file_proto.package}." if file_proto.package else ""
    return [pool.FindMessageTypeByName(prefix + m.name) for m in file_proto.message_type]


def _message_descriptor(top: list[Descriptor], indexes: tuple[int, ...]) -> Descriptor:
    """The message the framing's indexes name: the first index among the file's top-level
    messages (in declaration order), each next one among the nested messages of the last."""
    messages = top
    descriptor: Descriptor | None = None
    for index in indexes:
        if index < 0 or index >= len(messages):
            raise UndecodableError(f"message index {index} out of range ({len(messages)} messages)")
        descriptor = messages[index]
        messages = list(descriptor.nested_types)
    if descriptor is None:
        raise UndecodableError("no message index")
    return descriptor

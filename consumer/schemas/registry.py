"""The Schema Registry, by schema id, with its failures sorted the way the delivery guarantees
sort them (README "What the service does when something fails"):

- the registry unreachable, timing out, answering 5xx, 429 or refusing our credentials (401/403):
  the deployment's fault. `RegistryUnavailableError`: the event waits, nothing is dead-lettered;
- a schema id the registry does not know (404), or a schema that cannot be parsed: the event's
  fault. `UnknownSchemaError`: the event is dead-lettered (`invalid_payload`).

confluent-kafka's `SchemaRegistryClient` does the HTTP and caches schemas by id (fetched once per
id); its own retries are off, because a wait here blocks the consumer loop: the pipeline retries
with a back-off instead (`consumer.pipeline`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import RegisteredSchema, Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError

from consumer.schemas.errors import RegistryUnavailableError, UnknownSchemaError
from consumer.settings import SchemaRegistrySettings

__all__ = ["Registry", "RegistryUnavailableError", "SchemaInfo", "UnknownSchemaError"]

log = logging.getLogger(__name__)

# The registry's own "not found" error codes. A 404 without one (a proxy's page, a URL missing
# /apis/ccompat/v7) says nothing about the schema: the deployment is wrong, so the event waits.
SCHEMA_NOT_FOUND = frozenset({40403})
SUBJECT_NOT_FOUND = frozenset({40401, 40402})


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What `_kafka.schema` says about a decoded value."""

    id: int
    type: str  # AVRO, PROTOBUF or JSON
    subject: str | None
    version: int | None

    def as_document(self) -> dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "version": self.version, "type": self.type}


def client_config(settings: SchemaRegistrySettings) -> dict[str, Any]:
    """confluent-kafka's registry client settings; the password is read from its file here."""
    if settings.url is None:
        raise ValueError("kafka.schema_registry.url is not set")
    config: dict[str, Any] = {
        "url": settings.url,
        "timeout": settings.timeout_s,
        "max.retries": 0,
        "cache.capacity": 10_000,
    }
    if settings.basic_auth_user is not None and settings.basic_auth_password_file is not None:
        try:
            password = settings.basic_auth_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"kafka.schema_registry.basic_auth_password_file: cannot read: {exc.strerror}"
            ) from None
        config["basic.auth.user.info"] = f"{settings.basic_auth_user}:{password}"
    if settings.ssl_ca_location is not None:
        config["ssl.ca.location"] = str(settings.ssl_ca_location)
    if settings.ssl_certificate_location is not None:
        config["ssl.certificate.location"] = str(settings.ssl_certificate_location)
    if settings.ssl_key_location is not None:
        config["ssl.key.location"] = str(settings.ssl_key_location)
    return config


class Registry:
    """Schemas by id and latest by subject, cached; every failure sorted (module doc)."""

    def __init__(self, client: SchemaRegistryClient, url: str) -> None:
        self.client = client
        self.url = url
        # Per (id, subject): two topics (or a key and a value) may share a schema id.
        self._infos: dict[tuple[int, str], SchemaInfo] = {}

    @classmethod
    def from_settings(cls, settings: SchemaRegistrySettings) -> Registry:
        config = client_config(settings)
        return cls(SchemaRegistryClient(config), config["url"])

    def schema(self, schema_id: int, subject: str | None = None, fmt: str | None = None) -> Schema:
        """The writer's schema of `schema_id` (cached by the client, per subject, after the first
        fetch); `fmt="serialized"` asks for Protobuf's base64 FileDescriptorProto."""
        schema: Schema = _call(
            lambda: self.client.get_schema(schema_id, subject, fmt),
            f"schema id {schema_id}",
            SCHEMA_NOT_FOUND,
        )
        return schema

    def serialized(self, schema_id: int) -> Schema:
        """The schema in Protobuf's serialized form (a base64 FileDescriptorProto). Asked without
        a subject on purpose: the client caches per (subject, id) whatever the format, and the
        other fetches (`info`, the deserializers) go with the subject, in the plain form."""
        return self.schema(schema_id, None, "serialized")

    def info(self, schema_id: int, topic_subject: str) -> SchemaInfo:
        """Type, subject and version of `schema_id`: the subject `topic_subject` when the schema
        is registered under it (TopicNameStrategy), else the first the registry lists."""
        found = self._infos.get((schema_id, topic_subject))
        if found is not None:
            return found
        # With the subject, as the deserializers ask: the client's cache is per (subject, id),
        # so their own fetch of this schema is then answered from it.
        schema = self.schema(schema_id, topic_subject)
        versions = _call(
            lambda: self.client.get_schema_versions(schema_id),
            f"versions of schema {schema_id}",
            SCHEMA_NOT_FOUND,
        )
        chosen = next((v for v in versions if v.subject == topic_subject), None)
        if chosen is None and versions:
            chosen = versions[0]
        info = SchemaInfo(
            id=schema_id,
            type=(schema.schema_type or "AVRO").upper(),
            subject=None if chosen is None else chosen.subject,
            version=None if chosen is None else chosen.version,
        )
        self._infos[(schema_id, topic_subject)] = info
        return info

    def latest(self, subject: str) -> RegisteredSchema | None:
        """The latest version registered under `subject`; None when there is no such subject."""
        try:
            latest: RegisteredSchema = _call(
                lambda: self.client.get_latest_version(subject),
                f"subject {subject}",
                SUBJECT_NOT_FOUND,
            )
        except UnknownSchemaError:
            return None
        return latest


def _call(fetch: Any, what: str, not_found: frozenset[int]) -> Any:
    try:
        return fetch()
    except (SchemaRegistryError, httpx.HTTPError) as exc:
        raise translate(exc, what, not_found) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # An answer that is not the registry's JSON (a proxy's page, a truncated body, an empty
        # 200 the client turns into None).
        raise RegistryUnavailableError(f"{what}: unreadable answer: {exc}") from None


def translate(
    exc: SchemaRegistryError | httpx.HTTPError, what: str, not_found: frozenset[int]
) -> RegistryUnavailableError | UnknownSchemaError:
    """A failed registry request as one of the two kinds: the registry's own "not found" (a 404
    with one of the `not_found` codes) is the event's; anything else is the registry's or the
    deployment's (HTTP errors, 5xx, 401/403, a proxy's 404, no connection)."""
    if isinstance(exc, SchemaRegistryError):
        if exc.http_status_code == 404 and exc.error_code in not_found:
            return UnknownSchemaError(f"{what}: the registry has none ({exc.error_message})")
        return RegistryUnavailableError(f"{what}: {describe(exc)}")
    return RegistryUnavailableError(f"{what}: {type(exc).__name__}: {exc}")


def describe(exc: SchemaRegistryError) -> str:
    return f"HTTP {exc.http_status_code}: {exc.error_message}"

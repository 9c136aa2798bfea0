"""How decoding a Schema Registry record can fail, in the two kinds the delivery guarantees keep
apart. Light on purpose (no registry client imported), so `consumer.events` can name them."""

from __future__ import annotations


class RegistryUnavailableError(Exception):
    """The registry could not give the schema (a system failure: hold, retry, dead-letter
    nothing)."""


class UnknownSchemaError(Exception):
    """The registry answered that it has no such schema (the event's failure)."""


class UndecodableError(Exception):
    """The bytes do not decode with their schema, or name a schema the registry does not have."""

"""The Confluent wire format: byte 0x00, a 4-byte big-endian schema id, then the payload.

Pure. No JSON text starts with byte 0 (JSON is UTF-8 text; a BOM starts with 0xEF), so a value
that does is the wire format, and anything else is JSON as before: no per-topic switch.
"""

from __future__ import annotations

MAGIC_BYTE = 0
HEADER_BYTES = 5


def is_wire_format(data: bytes | None) -> bool:
    return data is not None and len(data) > 0 and data[0] == MAGIC_BYTE


def schema_id(data: bytes) -> int | None:
    """The schema id of a wire-format value; None when it is too short to hold one."""
    if len(data) < HEADER_BYTES or data[0] != MAGIC_BYTE:
        return None
    return int.from_bytes(data[1:HEADER_BYTES], "big")


def frame(schema: int, payload: bytes) -> bytes:
    """A wire-format value (tests, `rules preview --event-avro`)."""
    return bytes([MAGIC_BYTE]) + schema.to_bytes(4, "big") + payload

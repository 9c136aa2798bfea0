"""Dead letters: the record written for an event that cannot be sent (pure; `kafka_io` produces it).

The original key, value and headers travel unchanged; `dlq.*` headers say why (product.md). A
source header that could be mistaken for ours (a name starting `dlq.`) is written as `orig.` +
its name, and so is one already starting `orig.`, so the escaping is reversible: `dlq replay`
strips one `orig.` and restores the message exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from consumer.events import RawMessage
from consumer.reasons import Reason

__all__ = [
    "MAX_ERROR_BYTES",
    "DeadLetter",
    "Reason",
    "cut",
    "escape_header",
    "iso_utc",
    "unescape_header",
]

MAX_ERROR_BYTES = 2_000  # Braze bodies can be large or hostile; a header stays small
OURS = "dlq."
ESCAPE = "orig."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    raw: RawMessage
    reason: str
    error: str
    rule_id: str = "-"
    http_status: int | None = None
    attempts: int = 0
    first_failed_at: datetime | None = None
    failed_at: datetime | None = None
    rules_version: str = ""  # of the rules table that handled the event (`consumer.reload`)

    def headers(self, now: datetime | None = None) -> list[tuple[str, bytes | None]]:
        """Original headers first, exactly as consumed, then the `dlq.*` headers (UTF-8)."""
        failed_at = self.failed_at or now or datetime.now(UTC)
        first = self.first_failed_at or failed_at
        meta = self.raw.meta
        ours = {
            "dlq.reason": self.reason,
            "dlq.error": cut(self.error),
            "dlq.rule_id": self.rule_id,
            "dlq.rules_version": self.rules_version,
            "dlq.attempts": str(self.attempts),
            "dlq.source.topic": meta.topic,
            "dlq.source.partition": str(meta.partition),
            "dlq.source.offset": str(meta.offset),
            "dlq.source.timestamp": "" if meta.timestamp_ms is None else str(meta.timestamp_ms),
            "dlq.first_failed_at": iso_utc(first),
            "dlq.failed_at": iso_utc(failed_at),
        }
        if self.http_status is not None:
            ours["dlq.http_status"] = str(self.http_status)
        # A null header value stays null: replay reads `_kafka.headers.x` as null, not "".
        original = [(escape_header(name), value) for name, value in meta.headers]
        return original + [(name, value.encode("utf-8")) for name, value in ours.items()]


def escape_header(name: str) -> str:
    """A source header name that cannot be mistaken for one of our `dlq.*` headers."""
    return ESCAPE + name if name.startswith((OURS, ESCAPE)) else name


def unescape_header(name: str) -> str:
    """The source header name `escape_header` was given."""
    return name[len(ESCAPE) :] if name.startswith(ESCAPE) else name


def cut(text: str, limit_bytes: int = MAX_ERROR_BYTES) -> str:
    """At most `limit_bytes` of UTF-8, cut on a character boundary, marked when cut.

    A lone surrogate (an event's `"\\ud800"`, quoted in an error) comes out as its `\\ud800`
    escape: UTF-8 cannot carry it, and the header must encode whatever the event held.
    """
    data = text.encode("utf-8", errors="backslashreplace")
    if len(data) <= limit_bytes:
        return data.decode("utf-8")
    return data[: limit_bytes - 3].decode("utf-8", errors="ignore") + "..."


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, millisecond precision."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""ISO 8601 times in rules: Braze schedule times and event times for `max_event_age`."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso8601(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time; raises ValueError. May return a naive datetime."""
    try:
        return datetime.fromisoformat(text)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not an ISO 8601 time: {text[:64]!r}") from exc


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; a time without an offset is taken as UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def braze_schedule_time(text: str, local: bool) -> str:
    """The `schedule.time` Braze expects. Raises ValueError.

    UTC with a `Z` normally (no offset = already UTC); for in-local-time and optimal-time sends
    Braze wants the wall-clock time without an offset, so the offset written is dropped.
    """
    moment = parse_iso8601(text)
    if local:
        return moment.replace(tzinfo=None).isoformat(timespec="seconds")
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError(f"time out of range: {text[:64]!r}") from exc
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"

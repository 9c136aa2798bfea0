"""One clock for the pipeline, the service and replay: monotonic time for waits and deadlines,
wall time for event ages, dead-letter stamps and Braze's rate-limit resets.

Production code takes a `Clock` instead of calling `time` or `datetime` directly, so tests drive
every deadline with a `ManualClock`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes back (deadlines, backoffs)."""
        ...

    def wall_s(self) -> float:
        """Epoch seconds (event ages, timestamps written out)."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wall_s(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, monotonic_s: float = 1_000.0, wall_s: float = 1_767_225_600.0) -> None:
        self._monotonic_s = monotonic_s
        self._wall_s = wall_s

    def monotonic_s(self) -> float:
        return self._monotonic_s

    def wall_s(self) -> float:
        return self._wall_s

    def advance(self, seconds: float) -> None:
        self._monotonic_s += seconds
        self._wall_s += seconds


def to_ms(seconds: float) -> int:
    return int(seconds * 1000)


def utc(wall_s: float) -> datetime:
    return datetime.fromtimestamp(wall_s, UTC)

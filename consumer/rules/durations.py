"""Rule durations (`max_event_age: 1h`): parsed once when the rules table is loaded."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# One or more <integer><unit> parts, largest first by convention: "90s", "1h30m", "2d".
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")


def parse_duration_ms(text: str) -> int:
    """`"1h30m"` -> 5400000. Raises ValueError for anything else, including zero."""
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        hint = "use an integer and a unit (ms, s, m, h, d), e.g. 30s, 15m, 1h, 2d"
        raise ValueError(f"invalid duration {text!r}: {hint}")
    total_ms = sum(int(count) * _UNIT_MS[unit] for count, unit in _PART.findall(compact))
    if total_ms <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return total_ms

"""Emulator: the misbehaviour a test asks for (latency, injected statuses, dropped connections).

Pure apart from a seedable RNG, so a test with a seed sees the same faults every run. Settings are
a frozen value; the parts that are used up (a status sequence, a count of drops) are replaced by
a shorter value as requests consume them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

DEFAULT_ERROR_STATUSES = (500, 502, 503, 504)
CANVAS_PAUSED = (
    "The Canvas is paused. Resume the Canvas to ensure trigger requests will take effect."
)
CANVAS_ARCHIVED = (
    "The Canvas is archived. Unarchive the Canvas to ensure trigger requests will take effect."
)


@dataclass(frozen=True, slots=True)
class FaultSettings:
    latency_ms: tuple[int, int] = (0, 0)  # drawn uniformly from [low, high] for each request
    status_sequence: tuple[int, ...] = ()  # one per processed request; 2xx means "process normally"
    error_share: float = 0.0  # probability of answering one of `error_statuses`
    error_statuses: tuple[int, ...] = DEFAULT_ERROR_STATUSES
    drop_next: int = 0  # close the connection without answering, for this many requests
    drop_share: float = 0.0  # ... or with this probability
    reject_external_user_ids: frozenset[str] = field(default_factory=frozenset)
    paused_canvas_ids: frozenset[str] = field(default_factory=frozenset)
    archived_canvas_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        low, high = self.latency_ms
        if not 0 <= low <= high:
            raise ValueError("latency_ms must be a range 0 <= low <= high")
        if not (0.0 <= self.error_share <= 1.0 and 0.0 <= self.drop_share <= 1.0):
            raise ValueError("error_share and drop_share must be probabilities in [0, 1]")
        if self.drop_next < 0:
            raise ValueError("drop_next must not be negative")
        if not all(100 <= status <= 599 for status in self.status_sequence + self.error_statuses):
            raise ValueError("statuses must be HTTP status codes (100-599)")
        if not self.error_statuses:
            raise ValueError("error_statuses must not be empty")


class FaultPlan:
    """The current settings and the RNG that draws from them. Not thread-safe: the caller locks."""

    def __init__(self, settings: FaultSettings | None = None, seed: int | None = None) -> None:
        self.settings = settings or FaultSettings()
        # Not for secrets: a seeded, repeatable stream of faults is the point.
        self._rng = random.Random(seed)  # noqa: S311

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311

    def delay_s(self) -> float:
        low, high = self.settings.latency_ms
        return (low if low == high else self._rng.uniform(low, high)) / 1000

    def take_drop(self) -> bool:
        """Whether to close this request's connection without an answer."""
        if self.settings.drop_next > 0:
            self.settings = replace(self.settings, drop_next=self.settings.drop_next - 1)
            return True
        return self._chance(self.settings.drop_share)

    def take_status(self) -> int | None:
        """A status to answer instead of processing the request, or None to process it."""
        sequence = self.settings.status_sequence
        if sequence:
            self.settings = replace(self.settings, status_sequence=sequence[1:])
            if not 200 <= sequence[0] <= 299:
                return sequence[0]
            return None
        if self._chance(self.settings.error_share):
            return self._rng.choice(self.settings.error_statuses)
        return None

    def rejected(self, external_user_ids: list[str]) -> list[str]:
        """The ids in this request that the test configured to be refused."""
        return [uid for uid in external_user_ids if uid in self.settings.reject_external_user_ids]

    def canvas_notice(self, canvas_id: str) -> str | None:
        """Braze's `notice` for a paused or archived Canvas (S2), which then sends nothing."""
        if canvas_id in self.settings.archived_canvas_ids:
            return CANVAS_ARCHIVED
        if canvas_id in self.settings.paused_canvas_ids:
            return CANVAS_PAUSED
        return None

    def _chance(self, share: float) -> bool:
        # No draw at 0 keeps the RNG stream unchanged when a fault is off.
        return share > 0.0 and self._rng.random() < share

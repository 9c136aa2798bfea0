"""Emulator: the misbehaviour a test asks for (latency, injected statuses, dropped connections,
refused targets and recipients, and a foreign answer such as a proxy's login page).

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
INVALID_CANVAS_ID = "Invalid Canvas ID"
INVALID_CAMPAIGN_ID = "Invalid Campaign ID"  # braze-api.md §3
MAX_OVERRIDE_BODY_BYTES = 64 * 1024
DEFAULT_OVERRIDE_CONTENT_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class AnswerOverride:
    """An answer given to every Braze request as is, before anything else is checked.

    It stands for whatever may sit between a client and Braze (an HTTP proxy, a captive portal),
    so it carries no `X-RateLimit-*` headers and spends no budget.
    """

    status: int
    body: str = ""  # sent UTF-8 encoded, exactly as given
    content_type: str = DEFAULT_OVERRIDE_CONTENT_TYPE

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError("answer_override.status must be an HTTP status code (100-599)")
        size = len(self.body.encode())  # a lone surrogate fails here too (a ValueError)
        if size > MAX_OVERRIDE_BODY_BYTES:
            raise ValueError(
                f"answer_override.body has {size} bytes; the limit is {MAX_OVERRIDE_BODY_BYTES}"
            )
        # It becomes a header line: printable ASCII only, so no CR/LF can split the answer.
        if not (self.content_type.isascii() and self.content_type.isprintable()):
            raise ValueError("answer_override.content_type must be printable ASCII")
        if not self.content_type.strip():
            raise ValueError("answer_override.content_type must not be empty")


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
    # canvas_id / campaign_id values that are not API-triggered: a send refers to them with 400
    invalid_target_ids: frozenset[str] = field(default_factory=frozenset)
    answer_override: AnswerOverride | None = None  # answer every Braze request with this

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

    def invalid_target(self, target_id: str, *, canvas: bool) -> tuple[str, str] | None:
        """Braze's message and error for a Canvas or campaign that is not API-triggered."""
        if target_id not in self.settings.invalid_target_ids:
            return None
        if canvas:
            return INVALID_CANVAS_ID, f"canvas_id {target_id} is not an API-triggered Canvas"
        return INVALID_CAMPAIGN_ID, f"campaign_id {target_id} is not an API-triggered campaign"

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

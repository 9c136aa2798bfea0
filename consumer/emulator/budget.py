"""Emulator: the request budget behind `X-RateLimit-*` and 429 (braze-api.md §5); pure, clock in.

Braze counts requests per workspace in a window that resets on the clock hour (not rolling). Tests
can add a per-second window to reach 429 quickly; the headers then describe whichever window is
tighter.
"""

from __future__ import annotations

from dataclasses import dataclass

BRAZE_REQUESTS_PER_HOUR = 250_000
HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    per_hour: int = BRAZE_REQUESTS_PER_HOUR
    per_second: int | None = None

    def __post_init__(self) -> None:
        if self.per_hour < 1 or (self.per_second is not None and self.per_second < 1):
            raise ValueError("budgets must be at least 1 request")


@dataclass(frozen=True, slots=True)
class RateStatus:
    """What the `X-RateLimit-*` headers say."""

    limit: int
    remaining: int
    reset_epoch_s: int

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(self.reset_epoch_s)),
        )


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    allowed: bool
    status: RateStatus


class _Window:
    """A fixed window aligned to multiples of its length since the epoch (hours, seconds)."""

    def __init__(self, length_s: int, limit: int) -> None:
        self.length_s = length_s
        self.limit = limit
        self.start_s = 0
        self.used = 0

    def roll(self, now_s: float) -> None:
        start_s = int(now_s // self.length_s) * self.length_s
        if start_s != self.start_s:
            self.start_s, self.used = start_s, 0

    def status(self) -> RateStatus:
        return RateStatus(
            limit=self.limit,
            remaining=max(self.limit - self.used, 0),
            reset_epoch_s=self.start_s + self.length_s,
        )


class RateBudget:
    """The hourly budget and the optional per-second one. Not thread-safe: the caller locks."""

    def __init__(self, limits: BudgetLimits | None = None) -> None:
        self._hour = _Window(HOUR_S, BRAZE_REQUESTS_PER_HOUR)
        self._second: _Window | None = None
        self._limits = BudgetLimits()
        self.set_limits(limits or BudgetLimits())

    @property
    def limits(self) -> BudgetLimits:
        return self._limits

    def set_limits(self, limits: BudgetLimits) -> None:
        """New limits; what was already used in the current windows stays used."""
        self._limits = limits
        self._hour.limit = limits.per_hour
        if limits.per_second is None:
            self._second = None
        elif self._second is None:
            self._second = _Window(1, limits.per_second)
        else:
            self._second.limit = limits.per_second

    def peek(self, now_s: float) -> RateStatus:
        """The headers for a response that does not count (before auth, or past the budget)."""
        windows = self._rolled(now_s)
        return _tightest(windows)

    def take(self, now_s: float) -> BudgetDecision:
        """Count one request if every window has room; a refused request counts nowhere."""
        windows = self._rolled(now_s)
        if any(window.used >= window.limit for window in windows):
            return BudgetDecision(allowed=False, status=_tightest(windows))
        for window in windows:
            window.used += 1
        return BudgetDecision(allowed=True, status=_tightest(windows))

    def reset(self) -> None:
        """Forget what was used (the control API's reset); the limits stay."""
        for window in (self._hour, self._second):
            if window is not None:
                window.start_s, window.used = 0, 0

    def _rolled(self, now_s: float) -> list[_Window]:
        windows = [self._hour] if self._second is None else [self._hour, self._second]
        for window in windows:
            window.roll(now_s)
        return windows


def _tightest(windows: list[_Window]) -> RateStatus:
    # Fewest remaining wins; on a tie the later reset, since that is how long a client must wait.
    statuses = [window.status() for window in windows]
    return min(statuses, key=lambda status: (status.remaining, -status.reset_epoch_s))

"""Stage 4 (send): when the next Braze request may start, pure and thread-safe, clock passed in.

Two limits combine and the stricter wins:
- this process's budget (`requests_per_hour`) as a token bucket with a small burst;
- what Braze reports on every response (`X-RateLimit-Remaining`, `X-RateLimit-Reset` in epoch
  seconds, braze-api.md section 5): at zero (or after a 429) nothing starts before the reset, and
  when what is left would run out before the reset at our budget, requests are spread so that it
  lasts until the reset.
The headers describe the whole workspace, which several processes share: `set_rate` gives this
one its part of the budget (`share`, e.g. the consumer group's partitions it holds), and it plans
on that share of what Braze says is left. A hold (Remaining 0, or a 429) stops it whatever its
share. The limiter never sleeps: `acquire` grants a slot (returns 0) or says how long to wait
first.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

REMAINING_HEADER = "x-ratelimit-remaining"
RESET_HEADER = "x-ratelimit-reset"
# Plain ASCII digits only, bounded length: anything else (nan, inf, 1e9, unicode digits, lists of
# values from repeated headers, megabyte strings) is ignored rather than trusted.
_INTEGER = re.compile(r"[0-9]{1,15}")
_EPOCH = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
# Waits shorter than this are rounding noise; granting avoids a caller spinning on 1e-15 s sleeps.
_EPSILON_S = 1e-9
# A clock reading further back than this is a wall-clock step, not threads racing to the lock.
_CLOCK_STEP_S = 1.0
# A token wait is at most this long, so that a rate raised meanwhile (or a share of zero raised
# by a rebalance) takes effect within it: the caller simply asks again.
_MAX_TOKEN_WAIT_S = 1.0
# After a spent window resets, one request probes the new one and the others wait for its answer
# (without that, every waiting thread starts at the reset and most get 429 again); if no answer
# comes within this long, another request may probe.
_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ServerQuota:
    """What one response said about the workspace's rate limit (None when absent or malformed)."""

    remaining: int | None
    reset_epoch_s: float | None


def parse_quota(headers: Mapping[str, str]) -> ServerQuota:
    """Read the rate-limit headers, case-insensitively; malformed values become None."""
    lowered = {name.lower(): value for name, value in headers.items()}
    remaining = _match(_INTEGER, lowered.get(REMAINING_HEADER))
    reset = _match(_EPOCH, lowered.get(RESET_HEADER))
    return ServerQuota(
        remaining=None if remaining is None else int(remaining),
        reset_epoch_s=None if reset is None else float(reset),
    )


def _match(pattern: re.Pattern[str], raw: str | None) -> str | None:
    if raw is None or len(raw) > 40:
        return None
    text = raw.strip()
    return text if pattern.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class _Window:
    """The server's view of the current rate-limit window, as last reported (minus our grants)."""

    remaining: int  # what Braze said is left, minus our requests it had not counted yet
    reported_reset_s: float  # as Braze sent it; identifies the window
    until_s: float  # the reset, capped by max_server_wait_s: when we stop obeying this window
    # Of those uncounted requests, how many were already on their way when it answered: spent,
    # but not needing time of their own, so the pace is planned without them.
    on_the_way: int = 0
    spent: bool = False  # Braze itself said nothing is left (a 429, or Remaining 0)


class RateLimiter:
    """Decides when requests may start; shared by every sending thread."""

    def __init__(
        self, requests_per_hour: int, max_server_wait_s: float, burst: float | None = None
    ) -> None:
        if requests_per_hour < 1:
            raise ValueError("requests_per_hour must be at least 1")
        self._burst = burst
        self._rate_per_s = requests_per_hour / 3600.0
        self._capacity = self._capacity_at(self._rate_per_s)
        self._share = 1.0  # of the workspace's reported remainder that this process plans on
        self._max_server_wait_s = max_server_wait_s
        self._lock = threading.Lock()
        self._tokens = self._capacity
        # Tickets of the requests granted and not answered yet, in grant order. Those granted
        # after a request reached Braze after it: what its answer says is left is less by them.
        # The ticket of a thread's request is kept per thread, between acquire and finished.
        self._unanswered: set[int] = set()
        self._next_ticket = 0
        self._local = threading.local()
        self._refilled_at_s: float | None = None
        self._window: _Window | None = None
        self._last_grant_s: float | None = None
        self._probe_pending = False  # a spent window has reset: the next grant is a probe
        self._probe_hold_until_s: float | None = None  # others wait for the probe's answer

    def set_rate(self, requests_per_hour: float, now_s: float, *, share: float = 1.0) -> None:
        """From now on allow `requests_per_hour` (0: nothing starts) and plan on `share` (0..1)
        of the workspace's reported remainder. Tokens saved at the old rate are kept only up to
        the new burst, so a shrinking share cannot spend an old burst."""
        if not (math.isfinite(requests_per_hour) and requests_per_hour >= 0):
            raise ValueError(f"requests_per_hour must be >= 0, not {requests_per_hour!r}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be within 0..1, not {share!r}")
        with self._lock:
            self._refill(now_s)  # what accrued until now, at the old rate
            self._rate_per_s = requests_per_hour / 3600.0
            self._capacity = self._capacity_at(self._rate_per_s)
            self._tokens = min(self._tokens, self._capacity)
            self._share = share

    @property
    def requests_per_hour(self) -> float:
        """The rate in force."""
        with self._lock:
            return self._rate_per_s * 3600.0

    def _capacity_at(self, rate_per_s: float) -> float:
        # A burst of about two seconds' worth lets a few threads start together without ever
        # spending more than the hourly budget over any long stretch; no rate, no burst.
        if rate_per_s <= 0:
            return 0.0
        return self._burst if self._burst is not None else max(1.0, rate_per_s * 2)

    def acquire(self, now_s: float) -> float:
        """Take a slot and return 0.0, or return the seconds to wait before asking again."""
        with self._lock:
            self._refill(now_s)
            self._expire_window(now_s)
            wait_s = max(
                self._token_wait_s(), self._server_wait_s(now_s), self._probe_wait_s(now_s)
            )
            if wait_s > _EPSILON_S:
                return wait_s
            if self._probe_pending:
                self._probe_hold_until_s = now_s + _PROBE_TIMEOUT_S
            self._tokens -= 1.0
            self._unanswered.add(self._next_ticket)
            self._local.ticket = self._next_ticket
            self._next_ticket += 1
            self._last_grant_s = (
                now_s if self._last_grant_s is None else max(self._last_grant_s, now_s)
            )
            if self._window is not None:
                # Count our own request at once: other threads must not spend the same remainder.
                self._window = replace(self._window, remaining=self._window.remaining - 1)
            return 0.0

    def finished(self) -> None:
        """The request this thread was granted is over (answered, failed or abandoned): it no
        longer counts as unanswered. Call it after `observe` for an answered one."""
        ticket = getattr(self._local, "ticket", None)
        self._local.ticket = None
        with self._lock:
            self._unanswered.discard(ticket)

    def observe(self, now_s: float, status: int | None, headers: Mapping[str, str]) -> None:
        """Learn from a response's status and headers (a 429 means nothing is left).

        The requests granted after this thread's and not answered yet reached Braze after it:
        what it says is left is planned on without them (else, near the end of a window, the
        requests in flight would all overspend it and come back 429)."""
        with self._lock:
            self._probe_pending = False  # any answer ends a probe: the headers say what is left
            self._probe_hold_until_s = None
            ticket = getattr(self._local, "ticket", None)
            in_flight = 0
            if ticket is not None:
                in_flight = sum(1 for other in self._unanswered if other > ticket)
        quota = parse_quota(headers)
        reset_s = quota.reset_epoch_s
        if reset_s is None or reset_s <= now_s:
            return  # without a future reset we cannot pace; retries back off instead
        remaining = 0 if status == 429 else quota.remaining
        if remaining is None:
            return
        spent = remaining <= 0
        on_the_way = min(in_flight, remaining)
        remaining -= on_the_way
        until_s = min(reset_s, now_s + self._max_server_wait_s)
        with self._lock:
            self._expire_window(now_s)
            current = self._window
            if current is not None and current.remaining <= 0 and until_s < current.until_s:
                return  # never shorten a hold: a late answer must not release requests early
            if current is not None and reset_s == current.reported_reset_s:
                # Same window: answers arrive out of order, the smallest remainder is the newest.
                if current.remaining < remaining:
                    remaining, on_the_way = current.remaining, current.on_the_way
                spent = spent or current.spent
            # Otherwise the newest answer wins. An answer from a past window has a past reset
            # and was dropped above; an earlier future reset is a tighter window (a per-second
            # limit, say) and must be obeyed.
            self._window = _Window(remaining, reset_s, until_s, on_the_way, spent)

    def server_wait_s(self, now_s: float) -> float:
        """Seconds until Braze allows the next request (0 when it has not said to wait)."""
        with self._lock:
            self._expire_window(now_s)
            return self._server_wait_s(now_s)

    def _refill(self, now_s: float) -> None:
        last_s = self._refilled_at_s
        if last_s is None or now_s < last_s - _CLOCK_STEP_S:
            self._refilled_at_s = now_s  # first use, or the wall clock was set back: start over
            return
        # Threads read the clock before taking the lock, so `now_s` may trail a little: such a
        # reading adds nothing and must not move the mark back (that would refill twice).
        elapsed_s = max(0.0, now_s - last_s)
        self._tokens = min(self._capacity, self._tokens + elapsed_s * self._rate_per_s)
        self._refilled_at_s = max(last_s, now_s)

    def _expire_window(self, now_s: float) -> None:
        if self._window is not None and now_s >= self._window.until_s:
            # Only a window Braze said was spent: then every waiting request would start at the
            # reset. One our own count used up ends with requests it has not refused.
            self._probe_pending = self._window.spent
            self._window = None

    def _probe_wait_s(self, now_s: float) -> float:
        hold_s = self._probe_hold_until_s
        if not self._probe_pending or hold_s is None:
            return 0.0
        return max(0.0, hold_s - now_s)

    def _token_wait_s(self) -> float:
        missing = 1.0 - self._tokens
        if missing <= 0:
            return 0.0
        if self._rate_per_s <= 0:
            return _MAX_TOKEN_WAIT_S  # no budget (no partitions): ask again later
        return min(missing / self._rate_per_s, _MAX_TOKEN_WAIT_S)

    def _server_wait_s(self, now_s: float) -> float:
        window = self._window
        if window is None:
            return 0.0
        if window.remaining <= 0:
            return window.until_s - now_s
        left_s = window.until_s - now_s
        # The remainder is the whole workspace's: plan on our share of it, as the others do.
        mine = (window.remaining + window.on_the_way) * self._share
        if mine / left_s >= self._rate_per_s or self._last_grant_s is None:
            return 0.0  # plenty left: our own budget is the stricter limit
        if mine <= 0:
            return left_s
        interval_s = left_s / mine
        # Never past the window's end: then the next window's figures apply.
        return min(left_s, max(0.0, self._last_grant_s + interval_s - now_s))

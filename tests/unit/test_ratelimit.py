"""The rate limiter: hourly budget, server headers, hostile values, threads (clock injected)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pytest

from consumer.braze.ratelimit import RateLimiter, ServerQuota, parse_quota

T = TypeVar("T")

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "1700000100"},
            ServerQuota(10, 1_700_000_100.0),
            id="as Braze sends them",
        ),
        pytest.param(
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000100.5"},
            ServerQuota(0, 1_700_000_100.5),
            id="lower case (HTTP/2), fractional reset",
        ),
        pytest.param(
            {"X-RATELIMIT-REMAINING": " 7 ", "x-RateLimit-reset": "5"},
            ServerQuota(7, 5.0),
            id="any case, surrounding spaces",
        ),
        pytest.param({}, ServerQuota(None, None), id="absent"),
        pytest.param(
            {"Content-Type": "application/json"}, ServerQuota(None, None), id="others only"
        ),
    ],
)
def test_parse_quota_reads_headers(headers: dict[str, str], expected: ServerQuota) -> None:
    assert parse_quota(headers) == expected


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="text"),
        pytest.param("-1", id="negative"),
        pytest.param("nan", id="nan"),
        pytest.param("inf", id="inf"),
        pytest.param("1e9", id="exponent"),
        pytest.param("0x10", id="hex"),
        pytest.param("\uff19", id="fullwidth digit"),
        pytest.param("1_000", id="underscore"),
        pytest.param("5, 6", id="repeated header joined"),
        pytest.param("9" * 100, id="huge number"),
        pytest.param("1" * 100_000, id="megabyte-ish string"),
        pytest.param("12\x00", id="nul byte"),
    ],
)
def test_parse_quota_ignores_hostile_values(hostile: str) -> None:
    headers = {"X-RateLimit-Remaining": hostile, "X-RateLimit-Reset": hostile}
    assert parse_quota(headers) == ServerQuota(None, None)


def test_remaining_must_be_an_integer() -> None:
    quota = parse_quota({"X-RateLimit-Remaining": "1.5", "X-RateLimit-Reset": "100"})
    assert quota == ServerQuota(None, 100.0)


@dataclass(frozen=True)
class Acquire:
    at_s: float  # seconds after T0
    wait_s: float  # expected answer (0.0 = granted)


@dataclass(frozen=True)
class Observe:
    at_s: float
    status: int
    remaining: str | None
    reset_after_s: float | None  # reset header = T0 + this


Step = Acquire | Observe


def _headers(step: Observe) -> dict[str, str]:
    headers = {}
    if step.remaining is not None:
        headers["X-RateLimit-Remaining"] = step.remaining
    if step.reset_after_s is not None:
        headers["X-RateLimit-Reset"] = repr(T0 + step.reset_after_s)
    return headers


@pytest.mark.parametrize(
    ("per_hour", "steps"),
    [
        pytest.param(
            3600,
            [Acquire(0, 0), Acquire(0, 0), Acquire(0, 1.0), Acquire(0.5, 0.5), Acquire(1, 0)],
            id="budget: burst of two then one per second",
        ),
        pytest.param(
            3600,
            [Acquire(0, 0), Acquire(0, 0), Acquire(10, 0), Acquire(10, 0), Acquire(10, 1.0)],
            id="budget: an idle bucket refills only up to its burst",
        ),
        pytest.param(
            360_000,
            [Observe(0, 201, "0", 50), Acquire(0, 50), Acquire(49, 1), Acquire(50, 0)],
            id="remaining 0 on a 2xx holds everything until the reset",
        ),
        pytest.param(
            360_000,
            [Observe(0, 429, "5", 30), Acquire(0, 30), Acquire(30, 0)],
            id="a 429 holds until the reset whatever remaining says",
        ),
        pytest.param(
            360_000,
            [Observe(0, 429, None, None), Acquire(0, 0)],
            id="a 429 without headers is left to the retry backoff",
        ),
        pytest.param(
            360_000,
            [Observe(0, 429, "0", 1e9), Acquire(0, 3600), Acquire(3600, 0)],
            id="a far reset is capped by the maximum wait",
        ),
        pytest.param(
            360_000,
            [Observe(10, 200, "0", 5), Acquire(10, 0)],
            id="a reset in the past is ignored",
        ),
        pytest.param(
            36_000,
            [Observe(0, 200, "10", 100), Acquire(0, 0), Acquire(0, 100 / 9)],
            id="low remaining is spread until the reset",
        ),
        pytest.param(
            3600,
            [Observe(0, 200, "10000", 100), Acquire(0, 0), Acquire(0, 0), Acquire(0, 1.0)],
            id="plenty remaining: the configured budget is stricter",
        ),
        pytest.param(
            360_000,
            [Observe(0, 200, "2", 60), Acquire(0, 0), Acquire(30, 0), Acquire(31, 29)],
            id="our own grants count down remaining before Braze answers",
        ),
        pytest.param(
            360_000,
            [Observe(0, 200, "1", 60), Observe(1, 200, "8", 60), Acquire(1, 0), Acquire(2, 58)],
            id="same window out of order: the smaller remaining wins",
        ),
        pytest.param(
            360_000,
            [Observe(0, 200, "0", 100), Observe(1, 200, "500", 50), Acquire(1, 99)],
            id="a late answer never shortens a hold",
        ),
        pytest.param(
            360_000,
            [Observe(0, 200, "1000", 3000), Observe(1, 429, "0", 2), Acquire(1, 1)],
            id="an earlier reset from a tighter window is obeyed",
        ),
        pytest.param(
            360_000,
            [Observe(0, 200, "5", 3000), Observe(3001, 200, "3", 3000), Acquire(3001, 0)],
            id="an answer about a window that has ended is ignored",
        ),
        pytest.param(
            3600,
            [Observe(0, 200, "0", 10), Observe(5, 200, "5000", 3605), Acquire(5, 0)],
            id="a new window replaces the old one",
        ),
        pytest.param(
            3600,
            [Acquire(0, 0), Acquire(0, 0), Acquire(-100, 1.0)],
            id="a clock stepping back neither crashes nor refills",
        ),
        pytest.param(
            3600,
            [Acquire(0, 0), Acquire(0, 0), Acquire(1, 0), Acquire(0.5, 1.0), Acquire(1, 1.0)],
            id="a reading that trails another thread's does not refill twice",
        ),
    ],
)
def test_limiter_steps(per_hour: int, steps: list[Step]) -> None:
    limiter = RateLimiter(per_hour, max_server_wait_s=3600)
    for number, step in enumerate(steps):
        if isinstance(step, Observe):
            limiter.observe(T0 + step.at_s, step.status, _headers(step))
        else:
            wait_s = limiter.acquire(T0 + step.at_s)
            assert wait_s == pytest.approx(step.wait_s, abs=1e-6), f"step {number}: {step}"


def test_hostile_headers_leave_the_limiter_unchanged() -> None:
    limiter = RateLimiter(3600, max_server_wait_s=3600)
    for value in ["-5", "nan", "inf", "1e99", "0x0", "", "0, 0"]:
        limiter.observe(T0, 200, {"X-RateLimit-Remaining": value, "X-RateLimit-Reset": value})
        limiter.observe(T0, 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": value})
    assert limiter.server_wait_s(T0) == 0.0
    assert limiter.acquire(T0) == 0.0


def test_server_wait_reports_the_hold_without_taking_a_slot() -> None:
    limiter = RateLimiter(3600, max_server_wait_s=3600)
    limiter.observe(T0, 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(T0 + 20)})
    assert limiter.server_wait_s(T0 + 5) == pytest.approx(15)
    assert limiter.server_wait_s(T0 + 20) == 0.0
    # The spent window has reset: one request probes it, the others wait for its answer.
    assert [limiter.acquire(T0 + 20) for _ in range(3)] == [0.0, 5.0, 5.0]


def test_the_probe_answer_releases_the_waiting_requests() -> None:
    limiter = RateLimiter(3600, max_server_wait_s=3600)
    limiter.observe(T0, 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(T0 + 20)})
    assert limiter.acquire(T0 + 20) == 0.0
    assert limiter.acquire(T0 + 20.1) == pytest.approx(4.9)
    limiter.observe(
        T0 + 20.2, 201, {"X-RateLimit-Remaining": "500", "X-RateLimit-Reset": str(T0 + 80)}
    )
    assert limiter.acquire(T0 + 20.2) == 0.0


def test_an_unanswered_probe_lets_another_request_probe_after_the_timeout() -> None:
    limiter = RateLimiter(3600, max_server_wait_s=3600)
    limiter.observe(T0, 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(T0 + 20)})
    assert limiter.acquire(T0 + 20) == 0.0
    assert limiter.acquire(T0 + 25) == 0.0


def test_rejects_a_zero_budget() -> None:
    with pytest.raises(ValueError, match="requests_per_hour"):
        RateLimiter(0, max_server_wait_s=1)


def test_threads_sharing_the_limiter_never_exceed_its_slots() -> None:
    limiter = RateLimiter(36_000, max_server_wait_s=3600)  # 10/s, burst 20
    limiter.observe(T0, 200, {"X-RateLimit-Remaining": "1000", "X-RateLimit-Reset": str(T0 + 50)})
    ticks = itertools.count()  # a shared clock: 1 ms per reading, 4 s over all readings
    granted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(500):
            # Read outside the limiter's lock, as the client does: readings reach it out of order.
            now_s = T0 + next(ticks) * 0.001
            if limiter.acquire(now_s) == 0.0:
                with lock:
                    granted.append(now_s)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Burst of 20 plus 10/s over 4 s: never more, however the threads interleave.
    assert 20 + 10 * 3 <= len(granted) <= 20 + 10 * 4 + 1


def _in_thread(action: Callable[[], T]) -> T:
    """Run `action` on a thread of its own (the limiter keeps each request's ticket per thread)."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(action()))
    thread.start()
    thread.join()
    return out[0]


def test_requests_granted_after_an_answered_one_are_planned_as_spent() -> None:
    """Ten requests are on their way when the first is answered: Braze counted it but not them,
    so of the 12 it says are left only 2 more may start before the reset (a per-second window
    overspent by the requests in flight comes back 429)."""
    limiter = RateLimiter(3_600_000, max_server_wait_s=3600, burst=100)
    reset = {"X-RateLimit-Reset": str(T0 + 1)}
    first = threading.Event()
    answered = threading.Event()

    def first_request() -> None:
        assert limiter.acquire(T0) == 0.0
        first.set()
        answered.wait(5)
        limiter.observe(T0 + 0.15, 201, {"X-RateLimit-Remaining": "12", **reset})
        limiter.finished()

    thread = threading.Thread(target=first_request)
    thread.start()
    first.wait(5)
    for _ in range(10):  # granted after it, still on their way (never answered here)
        assert _in_thread(lambda: limiter.acquire(T0 + 0.1)) == 0.0
    answered.set()
    thread.join()
    grants = [_in_thread(partial(limiter.acquire, t)) for t in (T0 + 0.2, T0 + 0.9, T0 + 0.95)]
    assert grants[:2] == [0.0, 0.0]
    assert grants[2] == pytest.approx(0.05)  # held until the reset


def test_a_window_our_own_count_used_up_is_not_probed_after_the_reset() -> None:
    """Only a window Braze said was spent makes the requests after its reset wait for a probe."""
    limiter = RateLimiter(3_600_000, max_server_wait_s=3600, burst=100)
    limiter.observe(T0, 201, {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": str(T0 + 1)})
    assert limiter.acquire(T0) == 0.0
    assert limiter.acquire(T0 + 0.5) == pytest.approx(0.5)  # our count: nothing left
    assert [limiter.acquire(T0 + 1) for _ in range(3)] == [0.0, 0.0, 0.0]

"""The emulator's request budget: clock-hour windows, a per-second window, what headers show."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.emulator.budget import BudgetLimits, RateBudget, RateStatus


def at(hh: int, mm: int, ss: float) -> float:
    """Epoch seconds on a fixed day, so windows line up with a readable clock."""
    return datetime(2030, 1, 2, hh, mm, 0, tzinfo=UTC).timestamp() + ss


TOP_OF_11 = int(at(11, 0, 0))


def spend(budget: RateBudget, now_s: float, count: int) -> list[bool]:
    return [budget.take(now_s).allowed for _ in range(count)]


def test_hourly_budget_resets_at_the_top_of_the_clock_hour() -> None:
    budget = RateBudget(BudgetLimits(per_hour=2))
    assert spend(budget, at(10, 15, 0), 3) == [True, True, False]
    refused = budget.take(at(10, 59, 59.9))
    assert refused == budget.take(at(10, 59, 59.9))  # a refused request counts nowhere
    assert refused.status == RateStatus(limit=2, remaining=0, reset_epoch_s=TOP_OF_11)
    # Not rolling: one second later the whole budget is back, although the spend was minutes ago.
    assert budget.take(at(11, 0, 0)).status == RateStatus(2, 1, TOP_OF_11 + 3600)


@pytest.mark.parametrize(
    ("limits", "taken", "expected"),
    [
        pytest.param(BudgetLimits(per_hour=10), 3, RateStatus(10, 7, TOP_OF_11), id="hourly only"),
        pytest.param(
            BudgetLimits(per_hour=10, per_second=5),
            3,
            RateStatus(5, 2, int(at(10, 30, 1))),
            id="per-second budget is tighter",
        ),
        pytest.param(
            BudgetLimits(per_hour=4, per_second=5),
            3,
            RateStatus(4, 1, TOP_OF_11),
            id="hourly budget is tighter",
        ),
        pytest.param(
            BudgetLimits(per_hour=5, per_second=5),
            5,
            RateStatus(5, 0, TOP_OF_11),
            id="both spent: the later reset, the real wait",
        ),
    ],
)
def test_headers_describe_the_tighter_budget(
    limits: BudgetLimits, taken: int, expected: RateStatus
) -> None:
    budget = RateBudget(limits)
    assert all(spend(budget, at(10, 30, 0.5), taken))
    assert budget.peek(at(10, 30, 0.5)) == expected


def test_per_second_budget_refuses_then_recovers_next_second() -> None:
    budget = RateBudget(BudgetLimits(per_hour=100, per_second=2))
    assert spend(budget, at(10, 0, 7.2), 3) == [True, True, False]
    assert budget.peek(at(10, 0, 7.9)).reset_epoch_s == int(at(10, 0, 8))
    assert spend(budget, at(10, 0, 8.0), 2) == [True, True]
    # The refused request did not spend the hourly budget: 4 of 100 are used.
    budget.set_limits(BudgetLimits(per_hour=100))
    assert budget.peek(at(10, 0, 8.0)).remaining == 96


def test_new_limits_keep_what_was_used() -> None:
    budget = RateBudget(BudgetLimits(per_hour=10))
    spend(budget, at(10, 0, 0), 4)
    budget.set_limits(BudgetLimits(per_hour=5))
    assert spend(budget, at(10, 0, 1), 2) == [True, False]


def test_reset_forgets_usage_but_keeps_limits() -> None:
    budget = RateBudget(BudgetLimits(per_hour=3, per_second=2))
    spend(budget, at(10, 0, 0), 2)
    budget.reset()
    assert budget.peek(at(10, 0, 0)) == RateStatus(2, 2, int(at(10, 0, 1)))
    assert budget.limits == BudgetLimits(per_hour=3, per_second=2)


def test_headers_are_the_three_braze_names() -> None:
    assert RateStatus(10, 7, 1234).headers() == (
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "7"),
        ("X-RateLimit-Reset", "1234"),
    )


@pytest.mark.parametrize(
    ("per_hour", "per_second"),
    [pytest.param(0, None, id="zero per hour"), pytest.param(10, 0, id="zero per second")],
)
def test_limits_must_allow_a_request(per_hour: int, per_second: int | None) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BudgetLimits(per_hour=per_hour, per_second=per_second)

"""One Braze budget for the whole consumer group: each member's share follows its partitions.

The share computation (pure), the limiter's `set_rate` (tokens clamp, never above the rate over
any stretch across rate changes, the workspace's remainder planned by share), and the service's
rebalance callbacks (a member lowers its share before giving partitions up, so the shares of the
members never add up to more than 1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.braze.ratelimit import RateLimiter
from consumer.budget_share import BudgetShare, BudgetSplit, budget_share
from consumer.clock import Clock
from consumer.kafka_io import KafkaSource
from consumer.metrics import Metrics
from consumer.offsets import Commit, TopicPartition
from consumer.pipeline import Pipeline
from consumer.service import ConsumerService, LoopSettings

T0 = 1_700_000_000.0

# --- the share ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assigned", "counts", "expected"),
    [
        pytest.param([("t", 0), ("t", 1), ("t", 2)], {"t": 7}, BudgetShare(3, 7), id="3 of 7"),
        pytest.param([], {"t": 7}, BudgetShare(0, 7), id="nothing held"),
        pytest.param([], {}, BudgetShare(0, 0), id="nothing known"),
        pytest.param(
            [("a", 0), ("b", 3)], {"a": 2, "b": 6}, BudgetShare(2, 8), id="over every topic"
        ),
        pytest.param([("t", 5)], {}, BudgetShare(1, 6), id="unknown count: at least what is held"),
        pytest.param([("t", 9)], {"t": 4}, BudgetShare(1, 10), id="stale count: partitions added"),
        pytest.param([("t", 0), ("t", 0)], {"t": 2}, BudgetShare(1, 2), id="duplicates count once"),
    ],
)
def test_share_is_partitions_held_over_partitions_subscribed(
    assigned: list[TopicPartition], counts: dict[str, int], expected: BudgetShare
) -> None:
    assert budget_share(assigned, counts) == expected


def test_fraction_of_nothing_is_zero() -> None:
    assert BudgetShare(0, 0).fraction == 0.0
    assert BudgetShare(2, 8).fraction == 0.25


@st.composite
def group_assignments(draw: st.DrawFn) -> tuple[dict[str, int], list[list[TopicPartition]]]:
    """Topics with partition counts, and a disjoint assignment of some of them to members."""
    counts = draw(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 64), min_size=1))
    members = draw(st.integers(1, 8))
    owned: list[list[TopicPartition]] = [[] for _ in range(members)]
    for topic, count in counts.items():
        for partition in range(count):
            owner = draw(st.integers(-1, members - 1))  # -1: not assigned (mid-rebalance)
            if owner >= 0:
                owned[owner].append((topic, partition))
    return counts, owned


@settings(max_examples=300, deadline=None)
@given(group_assignments())
def test_members_shares_add_up_to_at_most_one(
    case: tuple[dict[str, int], list[list[TopicPartition]]],
) -> None:
    counts, owned = case
    shares = [budget_share(tps, counts).fraction for tps in owned]
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert sum(shares) <= 1.0 + 1e-9
    if sum(len(tps) for tps in owned) == sum(counts.values()):
        assert sum(shares) == pytest.approx(1.0)


@dataclass
class FakeClient:
    budget: int
    shares: list[float] = field(default_factory=list)

    def set_budget_share(self, share: float) -> float:
        self.shares.append(share)
        return self.budget * share


def test_split_sets_the_client_and_the_gauges_and_logs_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, metrics = FakeClient(250_000), Metrics()
    split = BudgetSplit(client, metrics, 250_000)
    with caplog.at_level(logging.INFO, logger="consumer.budget_share"):
        split(BudgetShare(2, 8))
        split(BudgetShare(2, 8))
        split(BudgetShare(0, 8))
    assert client.shares == [0.25, 0.25, 0.0]
    assert [r.getMessage() for r in caplog.records] == [
        "budget share: 2 of 8 partitions (25.0%), 62500 of the 250000 requests/hour "
        "of braze.requests_per_hour",
        "budget share: 0 of 8 partitions (0.0%), 0 of the 250000 requests/hour "
        "of braze.requests_per_hour",
    ]
    text = metrics.render().decode()
    assert "braze_consumer_budget_share 0.0" in text
    split(BudgetShare(3, 4))
    text = metrics.render().decode()
    assert "braze_consumer_budget_share 0.75" in text
    assert "braze_consumer_budget_requests_per_hour 187500.0" in text


# --- the limiter's set_rate ----------------------------------------------------------------------


def _drain(limiter: RateLimiter, now_s: float) -> int:
    granted = 0
    while limiter.acquire(now_s) == 0.0:
        granted += 1
    return granted


def test_a_lower_rate_clamps_the_saved_burst() -> None:
    limiter = RateLimiter(36_000, max_server_wait_s=3600)  # 10/s, burst 20
    limiter.acquire(T0)  # starts the clock; 19 tokens left, refilled to 20 by T0 + 10
    limiter.set_rate(3_600, T0 + 10)  # 1/s: a burst of 2 at most
    assert _drain(limiter, T0 + 10) == 2
    assert limiter.acquire(T0 + 10) == pytest.approx(1.0)


def test_a_higher_rate_adds_no_tokens_at_once() -> None:
    limiter = RateLimiter(3_600, max_server_wait_s=3600)  # 1/s, burst 2
    assert _drain(limiter, T0) == 2
    limiter.set_rate(36_000, T0)  # 10/s from now on: tokens accrue, none are given
    assert limiter.acquire(T0) == pytest.approx(0.1)
    assert _drain(limiter, T0 + 1) == 10


def test_tokens_accrued_before_a_change_count_at_the_old_rate() -> None:
    limiter = RateLimiter(3_600, max_server_wait_s=3600)  # 1/s, burst 2
    assert _drain(limiter, T0) == 2
    limiter.set_rate(36_000, T0 + 0.5)  # half a token at 1/s, then 10/s
    assert _drain(limiter, T0 + 0.6) == 1  # 0.5 + 0.1 x 10 = 1.5 tokens: one request


def test_a_zero_rate_grants_nothing_and_asks_again_soon() -> None:
    limiter = RateLimiter(36_000, max_server_wait_s=3600)
    limiter.set_rate(0, T0, share=0.0)
    assert limiter.acquire(T0) == pytest.approx(1.0)
    assert limiter.acquire(T0 + 3600) == pytest.approx(1.0)
    assert limiter.requests_per_hour == 0.0
    limiter.set_rate(3_600, T0 + 3600, share=0.5)
    assert limiter.acquire(T0 + 3600) == pytest.approx(1.0)  # starts with no saved burst
    assert limiter.acquire(T0 + 3601) == 0.0


def test_token_waits_are_bounded_so_a_raised_rate_takes_effect() -> None:
    limiter = RateLimiter(1, max_server_wait_s=3600)  # one request an hour
    assert limiter.acquire(T0) == 0.0
    assert limiter.acquire(T0) == pytest.approx(1.0)  # not 3600: ask again in a second
    limiter.set_rate(3_600, T0 + 1)
    assert limiter.acquire(T0 + 2) == 0.0


@pytest.mark.parametrize(
    ("per_hour", "share"),
    [(-1, 1.0), (float("nan"), 1.0), (float("inf"), 1.0), (10, -0.1), (10, 1.5)],
)
def test_set_rate_rejects_nonsense(per_hour: float, share: float) -> None:
    limiter = RateLimiter(3_600, max_server_wait_s=3600)
    with pytest.raises(ValueError, match=r"requests_per_hour|share"):
        limiter.set_rate(per_hour, T0, share=share)


def test_the_workspace_remainder_is_planned_by_share() -> None:
    remainder = {"X-RateLimit-Remaining": "10", "X-RateLimit-Reset": str(T0 + 100)}
    whole = RateLimiter(36_000, max_server_wait_s=3600)
    whole.observe(T0, 200, remainder)
    half = RateLimiter(36_000, max_server_wait_s=3600)
    half.set_rate(18_000, T0, share=0.5)
    half.observe(T0, 200, remainder)
    assert whole.acquire(T0) == 0.0
    assert half.acquire(T0) == 0.0
    # 9 left of the workspace's 10 over 100 s: all of it for one process, half for a half share.
    assert whole.acquire(T0) == pytest.approx(100 / 9)
    assert half.acquire(T0) == pytest.approx(100 / 4.5)


def test_a_hold_stops_every_share() -> None:
    limiter = RateLimiter(36_000, max_server_wait_s=3600)
    limiter.set_rate(360, T0, share=0.01)
    limiter.observe(T0, 429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(T0 + 30)})
    assert limiter.acquire(T0) == pytest.approx(30)


def test_pacing_never_waits_past_the_window() -> None:
    limiter = RateLimiter(36_000, max_server_wait_s=3600)
    limiter.set_rate(3_600, T0, share=0.1)
    limiter.observe(T0, 200, {"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": str(T0 + 10)})
    assert limiter.acquire(T0) == 0.0
    # 1 left x 0.1 would mean one request per 100 s: wait for the next window instead.
    assert limiter.acquire(T0) == pytest.approx(10.0)


@dataclass(frozen=True)
class Rate:
    per_hour: int


@dataclass(frozen=True)
class Idle:
    seconds: float


@dataclass(frozen=True)
class Burst:
    requests: int  # taken one after another, each as soon as the limiter allows


Op = Rate | Idle | Burst

OPS = st.lists(
    st.one_of(
        st.builds(Rate, st.sampled_from([0, 1, 360, 3_600, 36_000, 250_000, 900_000])),
        st.builds(Idle, st.floats(0.0, 30.0)),
        st.builds(Burst, st.integers(1, 120)),
    ),
    max_size=40,
)


def _capacity(per_hour: float) -> float:
    return 0.0 if per_hour <= 0 else max(1.0, per_hour / 3600 * 2)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 3_600, 36_000, 250_000]), OPS)
def test_never_more_than_the_rate_over_any_stretch_across_changes(
    first: int, ops: list[Op]
) -> None:
    """Grants i..j <= the burst in force at grant i + the integral of the rate between them."""
    limiter = RateLimiter(first, max_server_wait_s=3600)
    now_s, per_hour, integral = T0, float(first), 0.0
    grants: list[tuple[float, float]] = []  # (the integral of the rate so far, burst in force)

    def advance(seconds: float) -> None:
        nonlocal now_s, integral
        now_s += seconds
        integral += seconds * per_hour / 3600

    for op in [Burst(1), *ops]:
        if isinstance(op, Rate):
            per_hour = float(op.per_hour)
            limiter.set_rate(per_hour, now_s, share=min(1.0, per_hour / 900_000))
        elif isinstance(op, Idle):
            advance(op.seconds)
        else:
            taken = 0
            for _ in range(op.requests * 4):
                if taken == op.requests:
                    break
                wait_s = limiter.acquire(now_s)
                if wait_s == 0.0:
                    grants.append((integral, _capacity(per_hour)))
                    taken += 1
                else:
                    advance(wait_s)
    # For each i: max over j >= i of (j - i + 1) - (F_j - F_i) must stay within burst_i.
    best_after = -math.inf  # max over j >= i of (j - F_j)
    for i in range(len(grants) - 1, -1, -1):
        f_i, burst_i = grants[i]
        best_after = max(best_after, i - f_i)
        assert best_after - (i - 1 - f_i) <= burst_i + 1e-3, i  # epoch-second floats


# --- the service's rebalance callbacks -----------------------------------------------------------


class FakeSource:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def subscribe(self, topics: Iterable[str]) -> None:
        pass

    def committed(self, tps: Sequence[TopicPartition], timeout_s: float) -> dict[Any, Commit]:
        return {}

    def commit(self, commits: dict[TopicPartition, Commit], *, asynchronous: bool) -> bool:
        return True

    def pause(self, tps: Sequence[TopicPartition]) -> None:
        pass

    def partition_counts(self, topics: Iterable[str], timeout_s: float) -> dict[str, int]:
        return {t: self.counts[t] for t in topics if t in self.counts}


class FakePipeline:
    def __init__(self, fail_revoke: bool = False) -> None:
        self.fail_revoke = fail_revoke

    def assign(self, tps: list[TopicPartition], inherited: object = None) -> None:
        pass

    def revoke(self, tps: list[TopicPartition], timeout_s: float) -> dict[TopicPartition, Commit]:
        if self.fail_revoke:
            raise RuntimeError("revoke failed")
        return {}

    def lose(self, tps: list[TopicPartition]) -> None:
        pass


class FakeClock:
    def monotonic_s(self) -> float:
        return 0.0


@dataclass
class Group:
    """Members' services and every share any of them took, in order."""

    counts: dict[str, int]
    shares: dict[str, float] = field(default_factory=dict)
    sums: list[float] = field(default_factory=list)

    def member(self, name: str, pipeline: FakePipeline | None = None) -> ConsumerService:
        def take(share: BudgetShare) -> None:
            self.shares[name] = share.fraction
            self.sums.append(sum(self.shares.values()))

        loop = LoopSettings(100, 1 << 20, 0.0, 1.0, 1.0)
        return ConsumerService(
            cast(Pipeline, pipeline or FakePipeline()),
            lambda _svc: cast(KafkaSource, FakeSource(self.counts)),
            Metrics(),
            None,
            loop,
            clock=cast(Clock, FakeClock()),
            budget=take,
        )


def _parts(topic: str, *partitions: int) -> list[TopicPartition]:
    return [(topic, p) for p in partitions]


def test_cooperative_moves_keep_the_shares_within_the_budget() -> None:
    group = Group({"t": 7})
    a, b, c = group.member("a"), group.member("b"), group.member("c")
    a.on_assign(_parts("t", 0, 1, 2, 3, 4, 5, 6))
    assert group.shares == {"a": 1.0}
    # b joins: a revokes 3 partitions in the first round, b is assigned them in the second.
    a.on_revoke(_parts("t", 4, 5, 6))
    b.on_assign(_parts("t", 4, 5, 6))
    # c joins: a gives one, b gives one.
    a.on_revoke(_parts("t", 3))
    b.on_revoke(_parts("t", 6))
    c.on_assign(_parts("t", 3, 6))
    assert group.shares == pytest.approx({"a": 3 / 7, "b": 2 / 7, "c": 2 / 7})
    # c is lost (session timeout); a and b take its partitions.
    c.on_lost(_parts("t", 3, 6))
    a.on_assign(_parts("t", 3))
    b.on_assign(_parts("t", 6))
    assert group.shares == pytest.approx({"a": 4 / 7, "b": 3 / 7, "c": 0.0})
    assert max(group.sums) <= 1.0 + 1e-9


def test_eager_revoke_all_then_assign_keeps_the_shares_within_the_budget() -> None:
    group = Group({"t": 6})
    a, b = group.member("a"), group.member("b")
    a.on_assign(_parts("t", 0, 1, 2, 3, 4, 5))
    a.on_revoke(_parts("t", 0, 1, 2, 3, 4, 5))
    assert group.shares["a"] == 0.0
    a.on_assign(_parts("t", 0, 1, 2))
    b.on_assign(_parts("t", 3, 4, 5))
    assert group.shares == {"a": 0.5, "b": 0.5}
    assert max(group.sums) <= 1.0


def test_a_failed_revoke_still_lowers_the_share_before_the_callback_ends() -> None:
    group = Group({"t": 2})
    a = group.member("a", FakePipeline(fail_revoke=True))
    a.on_assign(_parts("t", 0, 1))
    with pytest.raises(RuntimeError):
        a.on_revoke(_parts("t", 1))
    assert group.shares["a"] == 0.5

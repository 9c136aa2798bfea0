"""The dead-letter guard: `record_sent(n)` answers as n calls of `record(dead_lettered=False)`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.guard import DeadLetterGuard, GuardPolicy

# A history: runs of outcomes, each (dead-lettered, how many).
RUNS = st.lists(st.tuples(st.booleans(), st.integers(1, 30)), max_size=40)
POLICIES = st.builds(
    GuardPolicy,
    window=st.integers(1, 60),
    max_share=st.floats(0.05, 1.0),
    min_events=st.integers(0, 80),
)


@settings(max_examples=400, deadline=None)
@given(policy=POLICIES, runs=RUNS)
def test_record_sent_is_record_repeated(policy: GuardPolicy, runs: list[tuple[bool, int]]) -> None:
    bulk, single = DeadLetterGuard(policy), DeadLetterGuard(policy)
    for dead, count in runs:
        if dead:
            answers = [bulk.record(dead_lettered=True) for _ in range(count)]
            expected = [single.record(dead_lettered=True) for _ in range(count)]
            assert answers == expected
        else:
            one_by_one = [single.record(dead_lettered=False) for _ in range(count)]
            first_stop = next((stop for stop in one_by_one if stop is not None), None)
            assert bulk.record_sent(count) == first_stop
            if first_stop is not None:
                return  # the pipeline stops at the first trip
        assert (bulk.share, bulk.tripped()) == (single.share, single.tripped())


def test_a_send_can_trip_the_guard_when_it_brings_the_window_to_judgement() -> None:
    guard = DeadLetterGuard(GuardPolicy(window=10, max_share=0.5, min_events=4))
    assert [guard.record(dead_lettered=True) for _ in range(3)] == [None] * 3
    assert guard.record_sent(1) is not None  # 3 of 4 dead-lettered, judged now

"""OffsetTracker: tables of track/settle steps and the commits they must release."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.offsets import OffsetTracker, TopicPartition

TP: TopicPartition = ("orders", 0)
TP1: TopicPartition = ("orders", 1)


@dataclass(frozen=True)
class Track:
    offset: int
    pending: int
    tp: TopicPartition = TP


@dataclass(frozen=True)
class Settle:
    offset: int
    count: int = 1
    tp: TopicPartition = TP


@dataclass(frozen=True)
class Take:
    pass


@dataclass(frozen=True)
class Forget:
    tps: tuple[TopicPartition, ...]


Step = Track | Settle | Take | Forget


def run(tracker: OffsetTracker, steps: list[Step]) -> list[dict[TopicPartition, int]]:
    """Applies the steps; returns what each Take() got from take_commits()."""
    taken: list[dict[TopicPartition, int]] = []
    for step in steps:
        match step:
            case Track():
                tracker.track(step.tp, step.offset, step.pending)
            case Settle():
                tracker.settle(step.tp, step.offset, step.count)
            case Take():
                taken.append(tracker.take_commits())
            case Forget():
                tracker.forget(step.tps)
    return taken


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [Track(0, 1), Track(1, 1), Take(), Settle(0), Take(), Settle(1), Take()],
            [{}, {TP: 1}, {TP: 2}],
            id="in-order settling advances one by one",
        ),
        pytest.param(
            [
                Track(0, 1),
                Track(1, 1),
                Track(2, 1),
                Settle(2),
                Settle(1),
                Take(),
                Settle(0),
                Take(),
            ],
            [{}, {TP: 3}],
            id="out-of-order settling waits for the earliest offset",
        ),
        pytest.param(
            [Track(0, 1), Track(1, 1), Track(2, 1), Settle(1), Settle(0), Take()],
            [{TP: 2}],
            id="position stops at the first unsettled offset",
        ),
        pytest.param(
            [Track(10, 1), Track(15, 1), Track(40, 1), Settle(15), Settle(10), Take()],
            [{TP: 16}],
            id="gaps in offsets: last settled + 1",
        ),
        pytest.param(
            [Track(0, 3), Settle(0), Settle(0), Take(), Settle(0), Take()],
            [{}, {TP: 1}],
            id="multiple intents per offset all must settle",
        ),
        pytest.param(
            [Track(0, 3), Settle(0, count=2), Take(), Settle(0), Take()],
            [{}, {TP: 1}],
            id="settle with a count",
        ),
        pytest.param(
            [Track(5, 0), Take(), Track(6, 0), Track(9, 0), Take()],
            [{TP: 6}, {TP: 10}],
            id="zero-pending messages are committable at once",
        ),
        pytest.param(
            [
                Track(0, 1),
                Track(1, 0),
                Track(2, 1),
                Track(3, 0),
                Settle(0),
                Take(),
                Settle(2),
                Take(),
            ],
            [{TP: 2}, {TP: 4}],
            id="zero-pending messages behind an unsettled one wait for it",
        ),
        pytest.param(
            [Track(0, 1), Settle(0), Take(), Take()],
            [{TP: 1}, {}],
            id="take_commits only reports advances",
        ),
        pytest.param(
            [Track(0, 1), Track(0, 1, TP1), Settle(0, tp=TP1), Take(), Settle(0), Take()],
            [{TP1: 1}, {TP: 1}],
            id="partitions are independent",
        ),
        pytest.param(
            [Track(0, 1), Track(0, 0, TP1), Forget((TP1,)), Take(), Settle(0), Take()],
            [{}, {TP: 1}],
            id="forget drops the pending report of that partition",
        ),
        pytest.param(
            [Track(0, 1), Forget((TP,)), Settle(0), Settle(0), Take()],
            [{}],
            id="settling a forgotten partition is a no-op",
        ),
        pytest.param(
            [Track(7, 1), Forget((TP,)), Track(3, 1), Settle(3), Take()],
            [{TP: 4}],
            id="a partition tracked again after forget starts afresh",
        ),
    ],
)
def test_commits(steps: list[Step], expected: list[dict[TopicPartition, int]]) -> None:
    assert run(OffsetTracker(), steps) == expected


@pytest.mark.parametrize(
    ("steps", "committable", "unsettled", "oldest"),
    [
        pytest.param([], None, 0, None, id="untracked partition"),
        pytest.param([Track(4, 2)], None, 1, 4, id="nothing settled yet"),
        pytest.param(
            [Track(4, 2), Track(5, 1), Track(6, 0), Settle(5)],
            None,
            1,
            4,
            id="settled later message does not count as unsettled",
        ),
        pytest.param(
            [Track(4, 1), Track(5, 1), Track(6, 0), Settle(4), Take()],
            5,
            1,
            5,
            id="committable survives take_commits",
        ),
        pytest.param(
            [Track(4, 1), Track(0, 1, TP1), Forget((TP1,)), Settle(4)],
            5,
            0,
            None,
            id="forget removes its unsettled messages from the count",
        ),
    ],
)
def test_queries(
    steps: list[Step], committable: int | None, unsettled: int, oldest: int | None
) -> None:
    tracker = OffsetTracker()
    run(tracker, steps)
    assert tracker.committable(TP) == committable
    assert tracker.unsettled(TP) == unsettled
    assert tracker.unsettled() == unsettled  # TP is the only partition left in every case
    assert tracker.oldest_unsettled(TP) == oldest


def test_unsettled_sums_partitions() -> None:
    tracker = OffsetTracker()
    run(tracker, [Track(0, 1), Track(1, 2), Track(0, 1, TP1), Settle(1)])
    assert (tracker.unsettled(TP), tracker.unsettled(TP1), tracker.unsettled()) == (2, 1, 3)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([Track(0, 1), Settle(0), Settle(0)], id="settling a released offset"),
        pytest.param([Track(0, 2), Settle(0, count=3)], id="settling more than pending"),
        pytest.param([Track(0, 1), Track(1, 1), Settle(1), Settle(1)], id="settling twice"),
        pytest.param([Track(0, 1), Settle(5)], id="settling an untracked offset"),
        pytest.param([Track(0, 0), Settle(0)], id="settling a zero-pending message"),
        pytest.param([Track(0, 1), Settle(0, count=0)], id="settling zero intents"),
        pytest.param([Track(3, 1), Track(3, 1)], id="tracking the same offset twice"),
        pytest.param([Track(3, 1), Track(2, 1)], id="tracking an earlier offset"),
        pytest.param([Track(3, -1)], id="negative pending"),
    ],
)
def test_misuse_raises(steps: list[Step]) -> None:
    with pytest.raises(ValueError, match=r"pending|offset|count"):
        run(OffsetTracker(), steps)


def expected_position(tracked: list[tuple[int, int]], remaining: dict[int, int]) -> int | None:
    """Model: last offset of the prefix whose every message has nothing remaining, + 1."""
    position = None
    for offset, _ in tracked:
        if remaining[offset]:
            break
        position = offset + 1
    return position


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=30),
    data=st.data(),
)
def test_position_never_passes_an_unsettled_offset(
    messages: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Tracks and settles interleave in any order; the position follows the model exactly."""
    tracker = OffsetTracker()
    tracked: list[tuple[int, int]] = []
    remaining: dict[int, int] = {}
    offset = -1
    committed: int | None = None
    to_track = list(messages)
    while to_track or any(remaining.values()):
        open_offsets = [o for o, left in remaining.items() if left]
        if to_track and (not open_offsets or data.draw(st.booleans())):
            gap, pending = to_track.pop(0)
            offset += gap
            tracker.track(TP, offset, pending)
            tracked.append((offset, pending))
            remaining[offset] = pending
        else:
            settled = data.draw(st.sampled_from(open_offsets))
            tracker.settle(TP, settled)
            remaining[settled] -= 1
        position = tracker.committable(TP)
        assert position == expected_position(tracked, remaining)
        if open_offsets := [o for o, left in remaining.items() if left]:
            assert position is None or position <= min(open_offsets)
        committed = tracker.take_commits().get(TP, committed)
        assert committed == position
    assert tracker.committable(TP) == tracked[-1][0] + 1
    assert tracker.unsettled() == 0

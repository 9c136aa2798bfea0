"""OffsetTracker: tables of track/settle steps and the commits (with metadata) they must release."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.offsets import Commit, OffsetTracker, TopicPartition, _tracked_ranges
from consumer.progress import SettledRanges, contains, decode, encode

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


@dataclass(frozen=True)
class Assign:
    inherited: SettledRanges = ()
    tp: TopicPartition = TP


Step = Track | Settle | Take | Forget | Assign
# A commit as (offset, settled ranges decoded from its metadata), for readable tables.
Seen = dict[TopicPartition, tuple[int, SettledRanges]]


def readable(commits: dict[TopicPartition, Commit]) -> Seen:
    seen: Seen = {}
    for tp, commit in commits.items():
        ranges = decode(commit.metadata, commit.offset)
        assert commit.metadata == encode(commit.offset, ranges)  # nothing lost in the tables
        seen[tp] = (commit.offset, ranges)
    return seen


def run(tracker: OffsetTracker, steps: list[Step]) -> list[Seen]:
    """Applies the steps; returns what each Take() got from take_commits()."""
    taken: list[Seen] = []
    for step in steps:
        match step:
            case Track():
                # As the pipeline does: an offset an earlier owner settled is tracked as such.
                before = step.pending == 0 and tracker.already_settled(step.tp, step.offset)
                tracker.track(step.tp, step.offset, step.pending, settled_before=before)
            case Settle():
                tracker.settle(step.tp, step.offset, step.count)
            case Take():
                taken.append(readable(tracker.take_commits()))
            case Forget():
                tracker.forget(step.tps)
            case Assign():
                tracker.assign(step.tp, step.inherited)
    return taken


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [Track(0, 1), Track(1, 1), Take(), Settle(0), Take(), Settle(1), Take()],
            [{}, {TP: (1, ())}, {TP: (2, ())}],
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
            [{TP: (0, ((1, 3),))}, {TP: (3, ())}],
            id="out-of-order settling: position waits, metadata says what settled beyond it",
        ),
        pytest.param(
            [Track(0, 1), Track(1, 1), Track(2, 1), Settle(1), Settle(0), Take()],
            [{TP: (2, ())}],
            id="position stops at the first unsettled offset",
        ),
        pytest.param(
            [Track(10, 1), Track(15, 1), Track(40, 1), Settle(15), Settle(10), Take()],
            [{TP: (16, ())}],
            id="gaps in offsets: last settled + 1",
        ),
        pytest.param(
            [Track(0, 3), Settle(0), Settle(0), Take(), Settle(0), Take()],
            [{}, {TP: (1, ())}],
            id="multiple intents per offset all must settle",
        ),
        pytest.param(
            [Track(0, 3), Settle(0, count=2), Take(), Settle(0), Take()],
            [{}, {TP: (1, ())}],
            id="settle with a count",
        ),
        pytest.param(
            [Track(5, 0), Take(), Track(6, 0), Track(9, 0), Take()],
            [{TP: (6, ())}, {TP: (10, ())}],
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
            [{TP: (2, ())}, {TP: (4, ())}],
            id="zero-pending messages behind an unsettled one wait for it, not reported beyond it",
        ),
        pytest.param(
            [Track(0, 1), Track(1, 1), Settle(1), Take()],
            [{TP: (0, ((1, 2),))}],
            id="re-commits the first offset with metadata while it is unsettled",
        ),
        pytest.param(
            [
                Track(0, 1),
                Track(1, 1),
                Track(2, 1),
                Take(),
                Settle(2),
                Take(),
                Settle(1),
                Take(),
                Take(),
            ],
            [{}, {TP: (0, ((2, 3),))}, {TP: (0, ((1, 3),))}, {}],
            id="a change of the settled-beyond set alone is a commit",
        ),
        pytest.param(
            [Track(0, 1), Track(2, 1), Track(5, 1), Track(9, 1), Settle(2), Settle(5), Take()],
            [{TP: (0, ((2, 6),))}],
            id="untracked offsets between settled ones are folded into the range",
        ),
        pytest.param(
            [
                Track(0, 1),
                Track(2, 1),
                Track(3, 0),
                Track(9, 1),
                Track(12, 1),
                Settle(2),
                Settle(12),
                Take(),
            ],
            [{TP: (0, ((2, 3), (12, 13)))}],
            id="an unsettled offset splits the ranges",
        ),
        pytest.param(
            [Track(0, 1), Settle(0), Take(), Take()],
            [{TP: (1, ())}, {}],
            id="take_commits only reports changes",
        ),
        pytest.param(
            [Track(0, 1), Track(0, 1, TP1), Settle(0, tp=TP1), Take(), Settle(0), Take()],
            [{TP1: (1, ())}, {TP: (1, ())}],
            id="partitions are independent",
        ),
        pytest.param(
            [Track(0, 1), Track(0, 0, TP1), Forget((TP1,)), Take(), Settle(0), Take()],
            [{}, {TP: (1, ())}],
            id="forget drops the pending report of that partition",
        ),
        pytest.param(
            [Track(0, 1), Forget((TP,)), Settle(0), Settle(0), Take()],
            [{}],
            id="settling a forgotten partition is a no-op",
        ),
        pytest.param(
            [Track(7, 1), Forget((TP,)), Track(3, 1), Settle(3), Take()],
            [{TP: (4, ())}],
            id="a partition tracked again after forget starts afresh",
        ),
        pytest.param(
            [Track(7, 1), Assign(), Track(3, 1), Settle(3), Take()],
            [{TP: (4, ())}],
            id="a partition assigned again starts afresh",
        ),
        pytest.param(
            [Assign(((3, 5), (8, 10))), Track(0, 1), Take()],
            [{}],
            id="the inherited state as found is not committed again",
        ),
        pytest.param(
            [
                *[Assign(((3, 5), (8, 10))), Track(0, 1), Track(1, 0), Take()],
                *[Track(3, 0), Track(4, 0), Take(), Settle(0), Take()],
                *[Track(5, 0), Track(6, 0), Track(7, 0), Take()],
                *[Track(8, 0), Track(9, 0), Take()],
            ],
            [
                {},  # what it found on assignment: nothing new to say
                {TP: (0, ((1, 5), (8, 10)))},
                {TP: (5, ((8, 10),))},
                {TP: (10, ())},
                {},
            ],
            id="inherited ranges are reported above the last tracked offset until read again",
        ),
        pytest.param(
            [Assign(((2, 4),)), Track(0, 1), Track(1, 0), Take()],
            [{}],
            id="an offset with nothing to do next to an inherited range is left out",
        ),
        pytest.param(
            [Assign(((1, 10),)), Track(0, 1), Track(1, 0), Track(2, 0), Take(), Settle(0), Take()],
            [{}, {TP: (10, ())}],
            id="an inherited range partly read again still counts whole",
        ),
        pytest.param(
            [Assign(((1, 3),)), Track(0, 1), Take(), Settle(0), Take()],
            [{}, {TP: (3, ())}],
            id="an inherited range at the position moves the commit past it",
        ),
        pytest.param(
            [Assign(((3, 5),)), Forget((TP,)), Track(0, 0), Take()],
            [{TP: (1, ())}],
            id="forget drops the inherited ranges",
        ),
    ],
)
def test_commits(steps: list[Step], expected: list[Seen]) -> None:
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
        pytest.param(
            [Track(4, 1), Track(5, 1), Assign(((9, 12),))],
            None,
            0,
            None,
            id="assign drops the earlier assignment's messages",
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


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([], (), id="untracked partition"),
        pytest.param([Assign(((3, 5),))], ((3, 5),), id="assigned, nothing read: all inherited"),
        pytest.param([Track(0, 1), Track(1, 1)], (), id="nothing settled"),
        pytest.param(
            [Track(0, 1), Track(1, 0), Track(2, 1), Track(3, 0), Track(4, 0), Settle(2)],
            ((2, 3),),
            id="a settled message without the nothing-to-do tail behind it",
        ),
        pytest.param(
            [Assign(((3, 5), (8, 10))), Track(0, 1), Track(1, 0), Track(3, 0), Track(4, 0)],
            ((1, 5), (8, 10)),
            id="inherited below the last tracked offset are not added again",
        ),
        pytest.param(
            [Assign(((3, 5),)), Track(0, 0), Track(1, 0), Track(2, 0)],
            ((3, 5),),
            id="may start at the position: take_commits folds it",
        ),
    ],
)
def test_settled_beyond(steps: list[Step], expected: SettledRanges) -> None:
    tracker = OffsetTracker()
    run(tracker, steps)
    assert tracker.settled_beyond(TP) == expected


def test_already_settled_is_what_the_assignment_inherited() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP, ((3, 5), (8, 10)))
    tracker.assign(TP1)
    assert [o for o in range(12) if tracker.already_settled(TP, o)] == [3, 4, 8, 9]
    assert not any(tracker.already_settled(TP1, o) for o in range(12))
    tracker.track(TP, 3, 0)  # reading it again does not change the answer
    assert tracker.already_settled(TP, 3)
    tracker.assign(TP)
    assert not tracker.already_settled(TP, 3)
    tracker.assign(TP, ((3, 5),))
    tracker.forget([TP])
    assert not tracker.already_settled(TP, 3)


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
        commit = tracker.take_commits().get(TP)
        committed = committed if commit is None else commit.offset
        if position is None:  # the first offset is re-committed when later ones settle
            assert committed in (None, tracked[0][0])
        else:
            assert committed == position
    assert tracker.committable(TP) == tracked[-1][0] + 1
    assert tracker.unsettled() == 0


@st.composite
def ranges_above(draw: st.DrawFn, committed: int) -> SettledRanges:
    """What an earlier owner may have left in the metadata of a commit of `committed`."""
    ranges: list[tuple[int, int]] = []
    end = committed
    for gap, length in draw(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), max_size=8)):
        start = end + gap
        end = start + length
        ranges.append((start, end))
    return tuple(ranges)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), min_size=1, max_size=30),
    data=st.data(),
)
def test_commits_never_claim_an_unsettled_offset(
    messages: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Like the pipeline: inherited offsets are tracked settled, the rest settle in any order.

    After every step, the latest commit says nothing is settled that is not: every message below
    its offset, and every one in the ranges of its metadata, is settled now or was by the earlier
    owner. At the end it is past the last message and keeps the inherited ranges not read again.
    """
    offsets = [sum(gap for gap, _ in messages[: i + 1]) for i in range(len(messages))]
    inherited = data.draw(ranges_above(offsets[0]))
    tracker = OffsetTracker()
    tracker.assign(TP, inherited)
    remaining: dict[int, int] = {}  # tracked offset -> intents not settled yet
    commit = Commit(offset=offsets[0], metadata=encode(offsets[0], inherited))
    to_track = list(zip(offsets, (pending for _, pending in messages), strict=True))
    while to_track or any(remaining.values()):
        open_offsets = [o for o, left in remaining.items() if left]
        if to_track and (not open_offsets or data.draw(st.booleans())):
            offset, pending = to_track.pop(0)
            remaining[offset] = 0 if tracker.already_settled(TP, offset) else pending
            tracker.track(TP, offset, remaining[offset])
        else:
            settled = data.draw(st.sampled_from(open_offsets))
            tracker.settle(TP, settled)
            remaining[settled] -= 1
        commit = tracker.take_commits().get(TP, commit)
        claimed = decode(commit.metadata, commit.offset)
        assert claimed or not commit.metadata  # never metadata the next owner cannot read
        for offset in offsets:
            if offset < commit.offset or contains(claimed, offset):
                assert contains(inherited, offset) or remaining.get(offset) == 0, offset
    assert commit.offset > offsets[-1]
    for start, end in inherited:
        for offset in range(max(start, offsets[-1] + 1), end):
            assert offset < commit.offset or contains(claimed, offset)


@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.integers(1, 3), st.integers(0, 3), st.booleans()), min_size=1, max_size=40
    ),
    data=st.data(),
)
def test_settled_ranges_cover_every_done_offset_and_no_unsettled_one(
    messages: list[tuple[int, int, bool]], data: st.DataObject
) -> None:
    """Messages with work (settled in any order), with nothing to do, or settled by an earlier
    owner: after every step the ranges cover each offset whose work is done (here or before) and
    none whose work is not; an offset with nothing to do may go either way."""
    tracker = OffsetTracker()
    remaining: dict[int, int] = {}  # offsets with work -> intents not settled yet
    done_before: set[int] = set()
    offset = 0
    to_track = list(messages)
    while to_track or any(remaining.values()):
        open_offsets = [o for o, left in remaining.items() if left]
        if to_track and (not open_offsets or data.draw(st.booleans())):
            gap, pending, before = to_track.pop(0)
            offset += gap
            if pending:
                remaining[offset] = pending
                tracker.track(TP, offset, pending)
            else:
                if before:
                    done_before.add(offset)
                tracker.track(TP, offset, 0, settled_before=before)
        else:
            settled = data.draw(st.sampled_from(open_offsets))
            tracker.settle(TP, settled)
            remaining[settled] -= 1
        part = tracker._parts[TP]
        ranges = _tracked_ranges(part)
        assert sorted(part.notable) == part.notable_seqs
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # sorted, not adjacent
        first_open = min((o for o, left in remaining.items() if left), default=None)
        for each in range(part.position, offset + 1):
            claimed = any(start <= each < end for start, end in ranges)
            done = each in done_before or each in remaining  # done: must not be redone
            if remaining.get(each):
                assert not claimed, (each, ranges)
            elif first_open is not None and each > first_open and done:
                assert claimed, (each, ranges)


def test_a_refused_commit_is_made_again_though_nothing_settled_since() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 0, 1)
    tracker.settle(TP, 0)
    assert {tp: c.offset for tp, c in tracker.take_commits().items()} == {TP: 1}
    assert tracker.take_commits() == {}  # nothing changed: nothing to commit
    tracker.recommit([TP, TP1])  # TP1 is not tracked: a no-op
    assert tracker.changed
    assert {tp: c.offset for tp, c in tracker.take_commits().items()} == {TP: 1}
    assert tracker.take_commits() == {}
    tracker.forget([TP])
    tracker.recommit([TP])  # revoked since: nothing to commit
    assert tracker.take_commits() == {}


def test_retrack_gives_a_waiting_message_its_real_units() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 0, 1)  # waits for its schema
    tracker.track(TP, 1, 1)
    tracker.retrack(TP, 0, 2)  # decoded: two intents
    tracker.settle(TP, 0)
    assert tracker.committable(TP) is None
    tracker.settle(TP, 0)
    assert tracker.committable(TP) == 1
    tracker.retrack(TP, 1, 0)  # decoded: nothing to do
    assert tracker.committable(TP) == 2
    with pytest.raises(ValueError, match="not waiting"):
        tracker.retrack(TP, 1, 1)
    tracker.forget([TP])
    tracker.retrack(TP, 5, 1)  # revoked since: a no-op

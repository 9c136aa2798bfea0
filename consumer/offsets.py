"""Stage 5: which offsets are safe to commit, given which events' send intents have settled.

Pure: no Kafka client, no clock, no threads. An offset is committable only when it and every earlier
tracked offset of its partition are settled (sent, skipped, or dead-lettered and acknowledged), so a
crash never commits past an event whose side effect is not confirmed. Each commit also carries, in
its metadata (`consumer.progress`), the offsets beyond it that settled out of order, plus those an
earlier owner reported settled that were not read again yet, so the next owner skips them.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.progress import SettledRanges, contains, encode

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    """One partition's offset commit: where the group resumes, and what is settled beyond it."""

    offset: int  # the next offset to read
    metadata: str  # `progress.encode(offset, settled ranges above it)`; "" when there are none


@dataclass(slots=True, eq=False)
class _Message:
    """A tracked message that had unsettled intents, plus the zero-pending run tracked after it.

    Messages tracked with nothing pending behind an unsettled one only move `tail_offset`, so a
    stuck send followed by a flood of unmatched events costs O(1) memory, not one entry each.
    """

    offset: int
    pending: int
    tail_offset: int  # highest offset tracked before the next message with pending intents
    seq: int  # its place in its partition's `waiting` order: neighbours differ by one
    size_bytes: int = 0  # of the message, while it is unsettled (memory accounting)
    timestamp_ms: int | None = None  # its Kafka timestamp: how old the oldest unsettled event is
    # Whether its tail holds offsets an earlier owner settled (they must not be processed again);
    # otherwise the tail is events that had nothing to do, which may be processed again or not.
    tail_matters: bool = False

    @property
    def notable(self) -> bool:
        """Whether it adds to the settled ranges: settled itself, or followed by offsets an
        earlier owner settled."""
        return self.pending == 0 or (self.tail_matters and self.tail_offset > self.offset)


# What a commit says: the offset, and the settled ranges above it.
_State = tuple[int, SettledRanges]
_UNREPORTED: _State = (-1, ())  # differs from every state: the next take_commits commits it


@dataclass(slots=True)
class _Partition:
    first_offset: int  # first offset tracked in this assignment
    last_offset: int  # highest offset tracked: offsets must increase
    position: int  # next offset to commit: first_offset until some prefix is settled
    waiting: deque[_Message] = field(default_factory=deque)  # front always has pending > 0
    by_offset: dict[int, _Message] = field(default_factory=dict)
    # The waiting messages that are `notable`, by `seq` (ascending in `notable_seqs`): what the
    # settled ranges are made of, so a commit need not walk every message still in flight.
    notable: dict[int, _Message] = field(default_factory=dict)
    notable_seqs: list[int] = field(default_factory=list)
    next_seq: int = 0
    unsettled: int = 0
    unsettled_bytes: int = 0
    reported: _State = (0, ())  # the last commit returned, or the state found on the first track


class OffsetTracker:
    """Per partition, the committable position (last offset of the fully-settled prefix + 1) and
    the settled ranges beyond it.

    Memory is O(messages with intents in flight + inherited ranges); `track` and `settle` are O(1)
    amortised, `take_commits` O(waiting messages + inherited ranges) per partition that changed,
    `forget` O(forgotten messages).
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._inherited: dict[TopicPartition, SettledRanges] = {}
        self._changed: dict[TopicPartition, None] = {}  # ordered set: touched since take_commits()
        self._unsettled_total = 0
        self._unsettled_bytes = 0

    def assign(self, tp: TopicPartition, inherited: SettledRanges = ()) -> None:
        """Starts a new assignment of `tp`, dropping any state of an earlier one.

        `inherited`: ranges decoded from the committed metadata, settled by an earlier owner. They
        stay in every commit until their offsets are read (and tracked) again.
        """
        self.forget([tp])
        if inherited:
            self._inherited[tp] = inherited

    def already_settled(self, tp: TopicPartition, offset: int) -> bool:
        """Whether an earlier owner settled `offset`: track it with pending=0, do not process it."""
        inherited = self._inherited.get(tp)
        return inherited is not None and contains(inherited, offset)

    def track(
        self,
        tp: TopicPartition,
        offset: int,
        pending: int,
        size_bytes: int = 0,
        timestamp_ms: int | None = None,
        *,
        settled_before: bool = False,
    ) -> None:
        """Records a consumed message with `pending` unsettled intents (0: nothing to do, or
        `settled_before` by an earlier owner); `size_bytes` counts in `unsettled_bytes()` until
        it settles.

        The commit's settled ranges must cover every offset whose work is done (sent or dead-
        lettered, here or by an earlier owner); an offset that had nothing to do may be covered
        or not, whichever makes fewer ranges: processing it again does nothing.

        Offsets must increase per partition but need not be contiguous (compaction, transaction
        markers). Raises ValueError otherwise, or for a negative `pending`.
        """
        if pending < 0:
            raise ValueError(f"pending must be >= 0: {pending}")
        part = self._parts.get(tp)
        if part is None:
            part = self._start(tp, offset)
        elif offset <= part.last_offset:
            raise ValueError(f"{tp}: offset {offset} not after {part.last_offset}")
        part.last_offset = offset
        self._changed[tp] = None
        if pending == 0:
            if part.waiting:
                last = part.waiting[-1]
                last.tail_offset = offset
                if settled_before:
                    last.tail_matters = True
                    _note(part, last)
            else:
                part.position = offset + 1
            return
        message = _Message(offset, pending, offset, part.next_seq, size_bytes, timestamp_ms)
        part.next_seq += 1
        part.waiting.append(message)
        part.by_offset[offset] = message
        part.unsettled += 1
        part.unsettled_bytes += size_bytes
        self._unsettled_total += 1
        self._unsettled_bytes += size_bytes

    def settle(self, tp: TopicPartition, offset: int, count: int = 1) -> None:
        """Marks `count` intents of the message at `offset` done.

        A partition that is not tracked (forgotten on revoke) is a no-op: its late results do not
        matter any more. Settling more than is pending, or an untracked offset of a tracked
        partition, is a bug in the caller and raises ValueError.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1: {count}")
        part = self._parts.get(tp)
        if part is None:
            return
        message = part.by_offset.get(offset)
        if message is None or count > message.pending:
            pending = 0 if message is None else message.pending
            raise ValueError(f"{tp}: settling {count} at offset {offset} with {pending} pending")
        message.pending -= count
        if message.pending:
            return
        part.unsettled -= 1
        part.unsettled_bytes -= message.size_bytes
        self._unsettled_total -= 1
        self._unsettled_bytes -= message.size_bytes
        self._changed[tp] = None
        _note(part, message)
        _release_prefix(part)

    def retrack(self, tp: TopicPartition, offset: int, pending: int) -> None:
        """A message tracked with one pending unit while it waited (for its schema) now has
        `pending` units; 0 settles it. A partition no longer tracked is a no-op."""
        if pending < 0:
            raise ValueError(f"pending must be >= 0: {pending}")
        part = self._parts.get(tp)
        if part is None:
            return
        message = part.by_offset.get(offset)
        if message is None or message.pending != 1:
            raise ValueError(f"{tp}: offset {offset} is not waiting with one pending unit")
        if pending == 0:
            self.settle(tp, offset)
        else:
            message.pending = pending

    def take_commits(self) -> dict[TopicPartition, Commit]:
        """For each partition whose position or settled-beyond set changed since the last call:
        what to commit."""
        commits: dict[TopicPartition, Commit] = {}
        for tp in self._changed:
            part = self._parts[tp]
            state = self._state(tp, part)
            if state != part.reported:
                part.reported = state
                offset, ranges = state
                commits[tp] = Commit(offset=offset, metadata=encode(offset, ranges))
        self._changed.clear()
        return commits

    def recommit(self, tps: Iterable[TopicPartition]) -> None:
        """The broker refused the last commit of `tps`: the next `take_commits` makes it again,
        even if nothing settled since (a partition that has gone quiet would otherwise keep its
        old committed offset until it is re-read)."""
        for tp in tps:
            part = self._parts.get(tp)
            if part is not None:
                part.reported = _UNREPORTED
                self._changed[tp] = None

    @property
    def changed(self) -> bool:
        """Whether any partition was touched since the last `take_commits`."""
        return bool(self._changed)

    def settled_beyond(self, tp: TopicPartition) -> SettledRanges:
        """Settled offsets at or above the position: tracked ones that settled out of order, and
        the inherited ranges above the last tracked offset (all of them before the first track).

        Untracked offsets between two tracked settled ones (compacted away: they do not exist)
        are folded into one range, so a compacted topic does not fragment the metadata.
        """
        inherited = self._inherited.get(tp, ())
        part = self._parts.get(tp)
        if part is None:
            return inherited
        ranges = _tracked_ranges(part)
        # Offsets from last_offset + 1 on were not read again in this assignment.
        _add_unread(ranges, inherited, part.last_offset + 1)
        return tuple(ranges)

    def committable(self, tp: TopicPartition) -> int | None:
        """The current position (next offset to commit), without consuming the change; None until
        some prefix of the partition is settled."""
        part = self._parts.get(tp)
        if part is None or part.position == part.first_offset:
            return None
        return part.position

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drops partitions (on revoke, after their final commit); later settles are no-ops."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            self._inherited.pop(tp, None)
            self._changed.pop(tp, None)
            if part is not None:
                self._unsettled_total -= part.unsettled
                self._unsettled_bytes -= part.unsettled_bytes

    def unsettled_bytes(self) -> int:
        """Bytes of the messages with unsettled intents, in all partitions."""
        return self._unsettled_bytes

    def unsettled(self, tp: TopicPartition | None = None) -> int:
        """Messages with unsettled intents, in `tp` or in all partitions."""
        if tp is None:
            return self._unsettled_total
        part = self._parts.get(tp)
        return 0 if part is None else part.unsettled

    def oldest_unsettled_timestamp_ms(self, tp: TopicPartition) -> int | None:
        """Kafka timestamp of the oldest message of `tp` with unsettled intents, if known."""
        part = self._parts.get(tp)
        if part is None or not part.waiting:
            return None
        return part.waiting[0].timestamp_ms

    def oldest_unsettled(self, tp: TopicPartition) -> int | None:
        """Offset of the oldest message of `tp` with unsettled intents (what blocks the commit)."""
        part = self._parts.get(tp)
        if part is None or not part.waiting:
            return None
        return part.waiting[0].offset

    def _start(self, tp: TopicPartition, offset: int) -> _Partition:
        """The partition as first read at `offset`: nothing tracked yet, positioned there.

        Its state then is what the group has committed (or nothing at all was, and nothing is lost
        by waiting for progress), so it is not worth a commit of its own.
        """
        part = _Partition(first_offset=offset, last_offset=offset - 1, position=offset)
        part.reported = self._state(tp, part)
        self._parts[tp] = part
        return part

    def _state(self, tp: TopicPartition, part: _Partition) -> _State:
        """What to commit now. An inherited range starting right at the position (everything read
        is released) is folded into it: the offset must lie below every range of its metadata."""
        ranges = self.settled_beyond(tp)
        if ranges and ranges[0][0] == part.position:
            return ranges[0][1], ranges[1:]
        return part.position, ranges


def _note(part: _Partition, message: _Message) -> None:
    """Keep `message` among the notable ones once it is (settled, or followed by a settled run)."""
    if message.seq not in part.notable and message.notable:
        part.notable[message.seq] = message
        insort(part.notable_seqs, message.seq)  # mostly at the end: messages settle about in order


def _release_prefix(part: _Partition) -> None:
    """Drops the settled messages at the front; the position follows the last one's tail."""
    released = 0
    while part.waiting and part.waiting[0].pending == 0:
        message = part.waiting.popleft()
        del part.by_offset[message.offset]
        del part.notable[message.seq]  # settled, so notable; and the lowest seq of them all
        released += 1
        part.position = message.tail_offset + 1
    if released:
        del part.notable_seqs[:released]


def _tracked_ranges(part: _Partition) -> list[tuple[int, int]]:
    """Offsets behind the first unsettled one whose work is done, as merged half-open ranges.

    Only notable messages add offsets. Between two that are not neighbours in `waiting` lies an
    unsettled message, which splits the ranges. An unsettled message followed by offsets an
    earlier owner settled starts a range after itself; a settled message starts one or extends
    its settled (or tail-settled) neighbour's, over whatever lies between (all of it settled).
    A tail of events that had nothing to do is left out unless it joins two ranges: so a busy
    topic whose few matching events are in flight commits few ranges, not one per event.
    """
    ranges: list[tuple[int, int]] = []
    previous = -2
    notable = part.notable
    for seq in part.notable_seqs:
        message = notable[seq]
        end = message.tail_offset + 1 if message.tail_matters else message.offset + 1
        if message.pending:
            ranges.append((message.offset + 1, end))  # notable: its tail matters
        elif seq == previous + 1 and ranges:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((message.offset, end))
        previous = seq
    return ranges


def _add_unread(ranges: list[tuple[int, int]], inherited: SettledRanges, floor: int) -> None:
    """Appends the parts of `inherited` at or above `floor` (nothing in `ranges` reaches past it).

    Only a range starting exactly where the last one ends is merged: the offsets between the last
    tracked one and the next inherited range were not read yet, so they may well exist.
    """
    for start, end in inherited[bisect_right(inherited, floor, key=lambda r: r[1]) :]:
        clipped = max(start, floor)
        if ranges and ranges[-1][1] == clipped:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((clipped, end))

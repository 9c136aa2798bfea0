"""Stage 5: which offsets are safe to commit, given which events' send intents have settled.

Pure: no Kafka client, no clock, no threads. An offset is committable only when it and every earlier
tracked offset of its partition are settled (sent, skipped, or dead-lettered and acknowledged), so a
crash never commits past an event whose side effect is not confirmed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(slots=True, eq=False)
class _Message:
    """A tracked message that had unsettled intents, plus the zero-pending run tracked after it.

    Messages tracked with nothing pending behind an unsettled one only move `tail_offset`, so a
    stuck send followed by a flood of unmatched events costs O(1) memory, not one entry each.
    """

    offset: int
    pending: int
    tail_offset: int  # highest offset tracked before the next message with pending intents


@dataclass(slots=True)
class _Partition:
    last_offset: int  # highest offset tracked: offsets must increase
    waiting: deque[_Message] = field(default_factory=deque)  # front always has pending > 0
    by_offset: dict[int, _Message] = field(default_factory=dict)
    position: int | None = None  # next offset to commit; None until some prefix is settled
    unsettled: int = 0


class OffsetTracker:
    """Per partition, the committable position: last offset of the fully-settled prefix + 1.

    Memory is O(messages with intents in flight); every operation is O(1) amortised except
    `forget` (O(forgotten messages)).
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._advanced: dict[TopicPartition, int] = {}  # positions moved since take_commits()
        self._unsettled_total = 0

    def track(self, tp: TopicPartition, offset: int, pending: int) -> None:
        """Records a consumed message with `pending` unsettled intents (0: already settled).

        Offsets must increase per partition but need not be contiguous (compaction, transaction
        markers). Raises ValueError otherwise, or for a negative `pending`.
        """
        if pending < 0:
            raise ValueError(f"pending must be >= 0: {pending}")
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(last_offset=offset)
        elif offset <= part.last_offset:
            raise ValueError(f"{tp}: offset {offset} not after {part.last_offset}")
        part.last_offset = offset
        if pending == 0:
            if part.waiting:
                part.waiting[-1].tail_offset = offset
            else:
                self._advance(tp, part, offset + 1)
            return
        message = _Message(offset=offset, pending=pending, tail_offset=offset)
        part.waiting.append(message)
        part.by_offset[offset] = message
        part.unsettled += 1
        self._unsettled_total += 1

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
        self._unsettled_total -= 1
        self._release_prefix(tp, part)

    def take_commits(self) -> dict[TopicPartition, int]:
        """For each partition whose position advanced since the last call: the offset to commit."""
        commits, self._advanced = self._advanced, {}
        return commits

    def committable(self, tp: TopicPartition) -> int | None:
        """The current position (next offset to commit), without consuming the change."""
        part = self._parts.get(tp)
        return None if part is None else part.position

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drops partitions (on revoke, after their final commit); later settles are no-ops."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            self._advanced.pop(tp, None)
            if part is not None:
                self._unsettled_total -= part.unsettled

    def unsettled(self, tp: TopicPartition | None = None) -> int:
        """Messages with unsettled intents, in `tp` or in all partitions."""
        if tp is None:
            return self._unsettled_total
        part = self._parts.get(tp)
        return 0 if part is None else part.unsettled

    def oldest_unsettled(self, tp: TopicPartition) -> int | None:
        """Offset of the oldest message of `tp` with unsettled intents (what blocks the commit)."""
        part = self._parts.get(tp)
        if part is None or not part.waiting:
            return None
        return part.waiting[0].offset

    def _release_prefix(self, tp: TopicPartition, part: _Partition) -> None:
        """Drops the settled messages at the front; the position follows the last one's tail."""
        tail_offset: int | None = None
        while part.waiting and part.waiting[0].pending == 0:
            message = part.waiting.popleft()
            del part.by_offset[message.offset]
            tail_offset = message.tail_offset
        if tail_offset is not None:
            self._advance(tp, part, tail_offset + 1)

    def _advance(self, tp: TopicPartition, part: _Partition, position: int) -> None:
        part.position = position
        self._advanced[tp] = position

"""Events waiting for the Schema Registry: when a record's schema cannot be fetched (the registry
unreachable, timing out or failing), the event is neither dropped nor dead-lettered. It waits
here, and every later event of its partition waits behind it (order per partition is kept), until
a retry finds the registry answering.

Pure: no registry client, no clock (the caller passes the time). Memory stays bounded by the
loop's flow control: a waiting event is unsettled (`OffsetTracker`), so the partitions are paused
once `batching.max_buffered_events` (or bytes) are unsettled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from consumer.events import RawMessage
from consumer.offsets import TopicPartition


@dataclass(slots=True)
class WaitingEvent:
    raw: RawMessage
    offset: int  # the tracked position its settlement releases
    only_rule: str | None


class SchemaWaits:
    """Per-partition queues of waiting events, and the back-off between retries."""

    def __init__(self, initial_interval_s: float = 1.0, max_interval_s: float = 30.0) -> None:
        self._queues: dict[TopicPartition, deque[WaitingEvent]] = {}
        self._initial_s = initial_interval_s
        self._max_s = max(max_interval_s, initial_interval_s)
        self._interval_s = initial_interval_s
        self._retry_at_s = 0.0
        self.count = 0

    def holds(self, tp: TopicPartition) -> bool:
        """Whether `tp` has events waiting (a new event of it must queue behind them)."""
        return tp in self._queues

    def add(self, tp: TopicPartition, event: WaitingEvent) -> None:
        self._queues.setdefault(tp, deque()).append(event)
        self.count += 1

    def failed(self, now_s: float) -> None:
        """The registry failed (again): the next retry after the current interval, which then
        doubles up to the maximum."""
        self._retry_at_s = now_s + self._interval_s
        self._interval_s = min(self._interval_s * 2, self._max_s)

    def due(self, now_s: float) -> bool:
        return self.count > 0 and now_s >= self._retry_at_s

    def head(self, tp: TopicPartition) -> WaitingEvent | None:
        queue = self._queues.get(tp)
        return queue[0] if queue else None

    def pop(self, tp: TopicPartition) -> None:
        """The head of `tp` decoded (or failed for good): drop it from the wait."""
        queue = self._queues[tp]
        queue.popleft()
        self.count -= 1
        if not queue:
            del self._queues[tp]
        if not self._queues:
            self._interval_s = self._initial_s  # the registry answers again: a fresh back-off

    def drop(self, tps: Collection[TopicPartition]) -> int:
        """Forget the waiting events of revoked or lost partitions (the next owner re-reads them);
        returns how many were dropped."""
        dropped = 0
        for tp in tps:
            queue = self._queues.pop(tp, None)
            if queue is not None:
                dropped += len(queue)
        self.count -= dropped
        if not self._queues:
            self._interval_s = self._initial_s
        return dropped

    def waiting(self, tps: Collection[TopicPartition] | None = None) -> int:
        """How many events wait, in `tps` (or in all partitions)."""
        if tps is None:
            return self.count
        return sum(len(self._queues.get(tp, ())) for tp in tps)

    def __iter__(self) -> Iterator[TopicPartition]:
        return iter(list(self._queues))

"""Stage 4 (send): where batches go once they are ready: worker threads, or parked while held.

The `Dispatcher` runs each request on a thread pool of `max_in_flight` and hands finished ones back
to the consumer thread. While the pipeline holds (`consumer.hold`), batches are parked instead, in
arrival order, with their offsets uncommitted; the pipeline takes one out at a time as a probe and
releases the rest when Braze answers again. Nothing here decides what a result means.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from consumer.batching import Batch
from consumer.braze.answers import HoldCause
from consumer.braze.client import ClientClosedError, RecipientResult
from consumer.intents import BatchKey
from consumer.json_types import JSONObject

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchSender(Protocol):
    def send_batch(self, key: BatchKey, recipients: Sequence[JSONObject]) -> list[RecipientResult]:
        """Blocking and thread-safe; one result per recipient, never raises for HTTP outcomes."""
        ...

    def prepare_probe(self, cause: HoldCause) -> None:
        """Called before a probe: e.g. re-read a rotated API key after an auth failure."""
        ...


@dataclass(frozen=True, slots=True)
class Finished(Generic[T]):
    """A request that came back: its batch, one result per recipient ([] if abandoned)."""

    batch: Batch[T]
    results: list[RecipientResult]
    probe: bool


class Dispatcher(Generic[T]):
    """Sends batches on worker threads, or parks them; owned by the consumer thread."""

    def __init__(self, sender: BatchSender, max_in_flight: int) -> None:
        self._sender = sender
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="braze-send")
        self._done: queue.SimpleQueue[Future[Finished[T]]] = queue.SimpleQueue()
        self._parked: deque[Batch[T]] = deque()
        self.in_flight = 0
        self.requests = 0

    def send(self, batch: Batch[T], *, probe: bool = False) -> None:
        future = self._executor.submit(self._send, batch, probe)
        future.add_done_callback(self._done.put)
        self.in_flight += 1
        self.requests += 1

    def park(self, batch: Batch[T], *, front: bool = False) -> None:
        if front:
            self._parked.appendleft(batch)
        else:
            self._parked.append(batch)

    def unpark(self) -> Batch[T] | None:
        """The oldest parked batch (for a probe), or None."""
        return self._parked.popleft() if self._parked else None

    def unpark_all(self) -> list[Batch[T]]:
        batches = list(self._parked)
        self._parked.clear()
        return batches

    @property
    def parked(self) -> int:
        return len(self._parked)

    def drop_where(self, predicate: Callable[[T], bool]) -> int:
        """Removes parked items whose token matches (revoked partitions); how many."""
        kept: deque[Batch[T]] = deque()
        dropped = 0
        for batch in self._parked:
            items = tuple(item for item in batch.items if not predicate(item.token))
            dropped += len(batch.items) - len(items)
            if items:
                kept.append(replace(batch, items=items))
        self._parked = kept
        return dropped

    def collect(self, timeout_s: float = 0.0) -> list[Finished[T]]:
        """Finished requests; waits up to `timeout_s` for the first one."""
        finished: list[Finished[T]] = []
        block = timeout_s > 0
        while True:
            try:
                future = self._done.get(block=block, timeout=timeout_s if block else None)
            except queue.Empty:
                return finished
            block = False
            self.in_flight -= 1
            finished.append(future.result())

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _send(self, batch: Batch[T], probe: bool) -> Finished[T]:
        try:
            results = self._sender.send_batch(batch.key, batch.recipients)
        except ClientClosedError:
            results = []  # shutting down mid-wait: leave unsettled, re-read after restart
        except Exception:  # a bug in the client must neither lose the batch nor dead-letter it
            log.exception("send_batch failed unexpectedly for %s; holding", batch.key.label)
            results = [_internal_failure(i) for i in range(len(batch.items))]
        return Finished(batch, results, probe)


def _internal_failure(index: int) -> RecipientResult:
    return RecipientResult(
        index=index,
        outcome="held",
        http_status=None,
        error="internal error in the Braze client (see the log)",
        attempts=0,
        first_failed_at=None,
        cause=HoldCause.UNEXPECTED_RESPONSE,
    )

"""Stage 4 (send): where batches go once they are ready: a queue, then worker threads.

The `Dispatcher` queues ready batches and starts them on a thread pool, at most `max_in_flight` at
a time, handing finished ones back to the consumer thread. While the pipeline holds
(`consumer.hold`) nothing is started: the queue keeps the batches, in arrival order, with their
offsets uncommitted; the pipeline takes one out at a time as a probe and pumps the rest when Braze
answers again. Nothing here decides what a result means.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from consumer.batching import Batch
from consumer.braze.answers import HoldCause
from consumer.braze.client import ClientClosedError, RecipientResult
from consumer.intents import BatchKey

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often an idle worker looks whether the main thread has ended (then it ends too).
_WORKER_WAKE_S = 1.0


class BatchSender(Protocol):
    def send_encoded(self, key: BatchKey, encoded: Sequence[bytes]) -> list[RecipientResult]:
        """Blocking and thread-safe; one result per recipient (each one's JSON, as the request
        carries it), in order; never raises for HTTP outcomes."""
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
    """Starts queued batches on worker threads, at most `max_in_flight` at a time; owned by the
    consumer thread.

    Batches wait in one queue until a worker is free, so a hold stops everything not yet on the
    wire (the queue is what a hold keeps). A target (Canvas or campaign) no send has succeeded to
    yet is tried with one batch at a time: if Braze rejects it as a whole, the rest of its batches
    are still queued and cost no request.
    """

    def __init__(self, sender: BatchSender, max_in_flight: int) -> None:
        self._sender = sender
        self._max_in_flight = max_in_flight
        # Worker threads, started as requests need them (at most max_in_flight), each taking
        # one job at a time: a bare queue costs a fraction of an executor's futures and
        # callbacks, paid once per request on the consumer thread.
        self._jobs: queue.SimpleQueue[tuple[Batch[T], bool] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._done: queue.SimpleQueue[Finished[T]] = queue.SimpleQueue()
        self._queue: deque[Batch[T]] = deque()
        self._trying: set[tuple[str, str]] = set()  # unproven targets with a batch on the wire
        self.proven: set[tuple[str, str]] = set()  # targets Braze has taken a send for
        self.in_flight = 0
        self.requests = 0

    def send(self, batch: Batch[T], *, probe: bool = False) -> None:
        """Start `batch` now (a probe), bypassing the queue."""
        self._jobs.put((batch, probe))
        self.in_flight += 1
        if len(self._workers) < min(self.in_flight, self._max_in_flight):
            worker = threading.Thread(
                target=self._work, name=f"braze-send-{len(self._workers)}", daemon=False
            )
            self._workers.append(worker)
            worker.start()
        self.requests += 1
        target = _target(batch)
        if target not in self.proven:
            self._trying.add(target)

    def park(self, batch: Batch[T], *, front: bool = False) -> None:
        """Queue `batch`; `front` for work that was already tried (it is the oldest)."""
        if front:
            self._queue.appendleft(batch)
        else:
            self._queue.append(batch)

    def pump(self, screen: Callable[[Batch[T]], Batch[T] | None]) -> None:
        """Start queued batches while workers are free; `screen` drops what must not be sent."""
        if not self._queue or self.in_flight >= self._max_in_flight:
            return
        waiting: deque[Batch[T]] = deque()
        while self._queue and self.in_flight < self._max_in_flight:
            batch = self._queue.popleft()
            if _target(batch) in self._trying:
                waiting.append(batch)  # its target is being tried: wait for the answer
                continue
            screened = screen(batch)
            if screened is not None:
                self.send(screened)
        waiting.extend(self._queue)
        self._queue = waiting

    def unpark(self) -> Batch[T] | None:
        """The oldest queued batch (for a probe), or None."""
        return self._queue.popleft() if self._queue else None

    @property
    def parked(self) -> int:
        return len(self._queue)

    @property
    def saturated(self) -> bool:
        """Every worker busy and batches queued behind them: a batch started now would wait."""
        return bool(self._queue) and self.in_flight >= self._max_in_flight

    def drop_where(self, predicate: Callable[[T], bool]) -> int:
        """Removes queued items whose token matches (revoked partitions); how many."""
        kept: deque[Batch[T]] = deque()
        dropped = 0
        for batch in self._queue:
            items = tuple(item for item in batch.items if not predicate(item.token))
            dropped += len(batch.items) - len(items)
            if items:
                kept.append(replace(batch, items=items))
        self._queue = kept
        return dropped

    def collect(self, timeout_s: float = 0.0) -> list[Finished[T]]:
        """Finished requests; waits up to `timeout_s` for the first one."""
        finished: list[Finished[T]] = []
        block = timeout_s > 0
        while True:
            try:
                done = self._done.get(block=block, timeout=timeout_s if block else None)
            except queue.Empty:
                return finished
            block = False
            self.in_flight -= 1
            self._trying.discard(_target(done.batch))
            finished.append(done)

    def close(self) -> None:
        """Requests not yet started are dropped (left unsettled: read again after a restart);
        each worker ends after the request it is making."""
        try:
            while True:
                self._jobs.get_nowait()
        except queue.Empty:
            pass
        for _ in self._workers:
            self._jobs.put(None)

    def _work(self) -> None:
        """One worker: jobs until `close()`, or until the main thread has ended without it (as
        an executor's workers do at exit: the request under way is finished first)."""
        while True:
            try:
                job = self._jobs.get(timeout=_WORKER_WAKE_S)
            except queue.Empty:
                if threading.main_thread().is_alive():
                    continue
                return
            if job is None:
                return
            self._done.put(self._send(*job))

    def _send(self, batch: Batch[T], probe: bool) -> Finished[T]:
        try:
            results = self._sender.send_encoded(batch.key, batch.encoded)
        except ClientClosedError:
            results = []  # shutting down mid-wait: leave unsettled, re-read after restart
        except Exception:  # a bug in the client must neither lose the batch nor dead-letter it
            log.exception("send_batch failed unexpectedly for %s; holding", batch.key.label)
            results = [_internal_failure(i) for i in range(len(batch.items))]
        return Finished(batch, results, probe)


def _target(batch: Batch[T]) -> tuple[str, str]:
    return (batch.key.endpoint.value, batch.key.target_id)


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

"""The consumer loop: poll Kafka, feed the pipeline, pause on backpressure, commit, drain on stop.

Order of one loop turn (at-least-once reads top to bottom):
  1. settle finished requests and acknowledged dead letters;
  2. send partial batches that are due;
  3. pause or resume partitions by how many events are unsettled (bounded memory);
  4. consume a chunk of messages and hand each to the pipeline;
  5. commit the positions whose every earlier event is settled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.kafka_io import KafkaSource
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import TopicPartition
from consumer.pipeline import Pipeline

log = logging.getLogger(__name__)

_CONSUME_BATCH = 500
_LAG_INTERVAL_S = 5.0


@dataclass(frozen=True)
class LoopSettings:
    max_buffered_events: int
    commit_interval_s: float
    drain_timeout_s: float
    revoke_timeout_s: float
    exit_when_idle_s: float | None = None  # demo/replay: stop once caught up and idle this long


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class ConsumerService:
    """One consumer-group member. `run()` returns the process exit code."""

    def __init__(
        self,
        pipeline: Pipeline,
        source_factory: Callable[[ConsumerService], KafkaSource],
        metrics: Metrics,
        server: MetricsServer | None,
        settings: LoopSettings,
    ) -> None:
        self.pipeline = pipeline
        self._metrics = metrics
        self._server = server
        self._settings = settings
        self._stop = threading.Event()
        self._assigned: set[TopicPartition] = set()
        self._paused = False
        self._closing = False
        self._source = source_factory(self)

    def stop(self) -> None:
        """Ask the loop to drain and exit (signal handlers call this)."""
        self._stop.set()

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def on_assign(self, tps: list[TopicPartition]) -> None:
        log.info("assigned %s", _fmt(tps))
        self._assigned.update(tps)
        self.pipeline.assigned(tps)
        if self._paused:
            self._source.pause(tps)

    def on_revoke(self, tps: list[TopicPartition]) -> None:
        log.info("revoking %s", _fmt(tps))
        if not self._closing:
            self.pipeline.submit(self.pipeline.batcher.flush())
            self._settle_until(set(tps), self._settings.revoke_timeout_s)
        self._commit(asynchronous=False)
        self._forget(tps)

    def on_lost(self, tps: list[TopicPartition]) -> None:
        log.warning("partitions lost (no commit possible): %s", _fmt(tps))
        self._forget(tps)

    def _forget(self, tps: list[TopicPartition]) -> None:
        self.pipeline.tracker.forget(tps)
        self._metrics.forget_partitions(tps)
        self._assigned.difference_update(tps)

    def _set_ready(self, ready: bool) -> None:
        # Ready means "in the group and looping", not "holds partitions": replicas beyond the
        # partition count would otherwise never be ready and a rolling update would stall.
        if self._server is not None:
            self._server.set_ready(ready)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, topics: frozenset[str]) -> int:
        self._source.subscribe(topics)
        last_commit = last_lag = time.monotonic()
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                consumed = self._turn()
                self._set_ready(True)
                now = time.monotonic()
                if now - last_commit >= self._settings.commit_interval_s:
                    self._commit(asynchronous=True)
                    last_commit = now
                if now - last_lag >= _LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                idle_since = self._idle_check(consumed, idle_since, now)
            return self._drain()
        finally:
            self._closing = True
            self.pipeline.close()
            self._source.close()

    def _turn(self) -> int:
        pipeline = self.pipeline
        pipeline.tick(monotonic_ms())
        self._backpressure()
        messages = self._source.consume(_CONSUME_BATCH, self._poll_timeout_s())
        for raw in messages:
            pipeline.handle(raw, monotonic_ms())
        self._publish_gauges()
        return len(messages)

    def _poll_timeout_s(self) -> float:
        """Short while requests are in flight or a batch is waiting, so results settle promptly."""
        due = self.pipeline.batcher.next_due_ms()
        if self.pipeline.in_flight_requests or self.pipeline.dead_letters_unacked:
            return 0.02
        if due is None:
            return 0.2
        return min(0.2, max(0.0, (due - monotonic_ms()) / 1000))

    def _backpressure(self) -> None:
        unsettled = self.pipeline.tracker.unsettled()
        limit = self._settings.max_buffered_events
        if not self._paused and unsettled >= limit:
            log.info("pausing %d partitions: %d events unsettled", len(self._assigned), unsettled)
            self._source.pause(sorted(self._assigned))
            self._paused = True
        elif self._paused and unsettled <= limit // 2:
            log.info("resuming %d partitions", len(self._assigned))
            self._source.resume(sorted(self._assigned))
            self._paused = False
        self._metrics.set_paused_partitions(len(self._assigned) if self._paused else 0)

    def _commit(self, *, asynchronous: bool) -> None:
        offsets = self.pipeline.tracker.take_commits()
        offsets = {tp: o for tp, o in offsets.items() if tp in self._assigned}
        if offsets and self._source.commit(offsets, asynchronous=asynchronous):
            self._metrics.committed(len(offsets))

    def _update_lag(self) -> None:
        for (topic, partition), lag in self._source.lag(sorted(self._assigned)).items():
            self._metrics.set_lag(topic, partition, lag)

    def _publish_gauges(self) -> None:
        self._metrics.set_in_flight_events(self.pipeline.tracker.unsettled())
        self._metrics.set_buffered(
            self.pipeline.batcher.pending, self.pipeline.batcher.open_batches
        )
        self._metrics.set_in_flight_requests(self.pipeline.in_flight_requests)
        if self._server is not None:
            self._server.heartbeat(time.monotonic())

    def _idle_check(self, consumed: int, idle_since: float | None, now: float) -> float | None:
        """For `--exit-when-idle`: caught up, nothing buffered or unsettled, for a while."""
        limit = self._settings.exit_when_idle_s
        pipeline = self.pipeline
        if limit is None or consumed or not self._assigned:
            return None
        if pipeline.tracker.unsettled() or pipeline.batcher.pending:
            return None
        if any(self._source.lag(sorted(self._assigned)).values()):
            return None
        if idle_since is None:
            return now
        if now - idle_since >= limit:
            log.info("caught up and idle for %.1fs: stopping", limit)
            self._stop.set()
        return idle_since

    # -- shutdown ------------------------------------------------------------------------------

    def _drain(self) -> int:
        """Stop consuming, flush batches, wait (bounded) for sends and dead letters, commit."""
        self._set_ready(False)
        log.info("draining: %d events unsettled", self.pipeline.tracker.unsettled())
        self.pipeline.submit(self.pipeline.batcher.flush())
        settled = self._settle_until(None, self._settings.drain_timeout_s)
        self._commit(asynchronous=False)
        if not settled:
            log.warning(
                "drain timeout: %d events unsettled; they will be re-read after restart",
                self.pipeline.tracker.unsettled(),
            )
        return 0

    def _settle_until(self, tps: set[TopicPartition] | None, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        tracker = self.pipeline.tracker
        while True:
            remaining = sum(tracker.unsettled(tp) for tp in tps) if tps else tracker.unsettled()
            if remaining == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pipeline.tick(monotonic_ms(), min(0.05, left))
            self._publish_gauges()  # keeps /healthz beating through a long drain


def _fmt(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "-"

"""The consumer loop: poll Kafka, feed the pipeline, pause when it cannot take more, commit, drain.

Order of one loop turn (at-least-once reads top to bottom):
  1. settle finished requests and acknowledged dead letters, send due batches, probe when held;
  2. commit what settled: the fully settled prefix of each partition, and in the commit's
     metadata what settled beyond it, so a crash re-sends only the requests in flight;
  3. pause or resume partitions: paused while Braze is held, or while too many events are
     unsettled (bounded memory);
  4. consume a chunk of messages and hand each to the pipeline.
On assignment the commit metadata of the earlier owner is read back, so events it already settled
are skipped; a cooperative revoke sends and settles only the revoked partitions' batches.
The member's share of the Braze budget follows the partitions it holds (consumer/budget_share.py):
lowered before a revoke or loss callback returns, raised on assignment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from consumer.budget_share import BudgetShare, budget_share
from consumer.clock import Clock, to_ms
from consumer.kafka_io import KafkaSource
from consumer.metrics import Metrics, MetricsServer
from consumer.offsets import Commit, TopicPartition
from consumer.pipeline import Pipeline
from consumer.progress import decode as decode_progress
from consumer.reload import RulesWatcher

log = logging.getLogger(__name__)

_CONSUME_BATCH = 500
_LAG_INTERVAL_S = 5.0
_COMMITTED_TIMEOUT_S = 10.0
# At most one commit per this long, and per 20 times what the last commit took (a commit encodes
# the settled ranges of every partition that changed: with thousands of events in flight it is a
# real cost), but always one per 250 ms: what a crash can re-send beyond the requests in flight
# is what settled since the last commit.
_MIN_COMMIT_GAP_S = 0.02
_COMMIT_COST_FACTOR = 20
_MAX_COMMIT_GAP_S = 0.25
# A commit the broker refused (coordinator moving, broker restarting) is made again after this
# long, with whatever settled meanwhile: a partition gone quiet must not keep its old offset.
_COMMIT_RETRY_S = 1.0
# An asynchronous commit's refusal is not reported (kafka_io), so the latest commits are made
# again this often, for this long after the last commit that carried something new: a broker
# restart or a coordinator move shorter than that cannot leave a quiet partition uncommitted.
_REPEAT_EVERY_S = 5.0
_REPEAT_FOR_S = 60.0
_FINAL_COMMIT_ATTEMPTS = 3  # on shutdown: then the events are re-read (and skipped) after restart
_BUSY_POLL_S = 0.005  # results are waiting: come back for them almost at once
_IDLE_POLL_S = 0.2
_PROGRESS_INTERVAL_S = 60.0  # a quiet service still says it is alive
_METADATA_TIMEOUT_S = 2.0
# Partition counts are read on every assignment, and this often besides (partitions added to a
# topic: until then this member's share may be counted over too few).
_METADATA_INTERVAL_S = 60.0


@dataclass(frozen=True)
class LoopSettings:
    max_buffered_events: int
    max_buffered_bytes: int
    commit_interval_s: float  # at most one commit per this long; 0: after every turn that settled
    drain_timeout_s: float
    revoke_timeout_s: float
    exit_when_idle_s: float | None = None  # demo/replay: stop once caught up and idle this long


class ConsumerService:
    """One consumer-group member. `run()` returns the process exit code."""

    def __init__(
        self,
        pipeline: Pipeline,
        source_factory: Callable[[ConsumerService], KafkaSource],
        metrics: Metrics,
        server: MetricsServer | None,
        settings: LoopSettings,
        *,
        clock: Clock,
        watcher: RulesWatcher | None = None,
        budget: Callable[[BudgetShare], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._metrics = metrics
        self._server = server
        self._settings = settings
        self._clock = clock
        self._stop = threading.Event()
        self._assigned: set[TopicPartition] = set()
        self._paused = False
        self._closing = False
        self._last_commit_s = 0.0
        self._commit_cost_gap_s = 0.0
        self._commit_retry_at_s = 0.0  # no commit before this: the broker refused the last one
        self._last_change_s = -_REPEAT_FOR_S  # when a commit last carried something new
        self._last_repeat_s = 0.0
        self._committed: dict[TopicPartition, int] = {}  # what the lag is measured from
        self._watcher = watcher
        self._topics: frozenset[str] = frozenset()
        self._budget = budget  # takes this member's share of the Braze budget
        self._partition_counts: dict[str, int] = {}
        self._source = source_factory(self)

    def stop(self) -> None:
        """Ask the loop to drain and exit (signal handlers call this)."""
        self._stop.set()

    # -- rebalance callbacks (run inside consume()) ------------------------------------------

    def on_assign(self, tps: list[TopicPartition]) -> None:
        committed = self._source.committed(tps, _COMMITTED_TIMEOUT_S)
        self._committed.update({tp: c.offset for tp, c in committed.items()})
        inherited = {tp: decode_progress(c.metadata, c.offset) for tp, c in committed.items()}
        beyond = sum(end - start for ranges in inherited.values() for start, end in ranges)
        log.info("assigned %s (%d offsets already settled beyond the commits)", _fmt(tps), beyond)
        self._assigned.update(tps)
        self._refresh_partition_counts()
        self._apply_budget_share()
        self.pipeline.assign(tps, inherited)
        if self._paused:
            self._source.pause(tps)

    def on_revoke(self, tps: list[TopicPartition]) -> None:
        log.info("revoking %s", _fmt(tps))
        timeout_s = 0.0 if self._closing else self._settings.revoke_timeout_s
        try:
            # The revoked partitions' batches go out at the share that still includes them.
            self._commit_offsets(self.pipeline.revoke(tps, timeout_s), asynchronous=False)
        finally:
            self._forget(tps)  # lowers the share before the next owner can be assigned them

    def on_lost(self, tps: list[TopicPartition]) -> None:
        log.warning("partitions lost (no commit possible): %s", _fmt(tps))
        self.pipeline.lose(tps)
        self._forget(tps)

    def _forget(self, tps: list[TopicPartition]) -> None:
        self._assigned.difference_update(tps)
        self._apply_budget_share()
        self._metrics.forget_partitions(tps)
        for tp in tps:
            self._committed.pop(tp, None)

    def _refresh_partition_counts(self) -> None:
        """The subscribed topics' partition counts; a topic the metadata misses keeps its last."""
        topics = self._topics | {topic for topic, _ in self._assigned}
        counts = self._source.partition_counts(topics, _METADATA_TIMEOUT_S)
        self._partition_counts = {
            topic: counts.get(topic, self._partition_counts.get(topic, 0)) for topic in topics
        }

    def _apply_budget_share(self) -> None:
        if self._budget is not None:
            self._budget(budget_share(self._assigned, self._partition_counts))

    def _set_ready(self, ready: bool) -> None:
        # Ready means "in the group and looping", not "holds partitions": replicas beyond the
        # partition count would otherwise never be ready and a rolling update would stall.
        if self._server is not None:
            self._server.set_ready(ready)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, topics: frozenset[str]) -> int:
        self._topics = topics
        self._source.subscribe(topics)
        self._apply_budget_share()  # nothing held yet: nothing to send
        last_lag_s = last_progress_s = last_metadata_s = self._clock.monotonic_s()
        idle_since: float | None = None
        try:
            while not self._stop.is_set():
                consumed = self._turn()
                self._set_ready(True)
                now_s = self._clock.monotonic_s()
                if now_s - last_lag_s >= _LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag_s = now_s
                if now_s - last_progress_s >= _PROGRESS_INTERVAL_S:
                    self._log_progress()
                    last_progress_s = now_s
                if now_s - last_metadata_s >= _METADATA_INTERVAL_S:
                    self._refresh_partition_counts()
                    self._apply_budget_share()
                    last_metadata_s = now_s
                self._reload_rules(now_s)
                idle_since = self._idle_check(consumed, idle_since, now_s)
            return self._drain()
        finally:
            self._closing = True
            self.pipeline.close()
            self._source.close()

    def _turn(self) -> int:
        pipeline = self.pipeline
        pipeline.tick()
        # Commit what just settled before consuming more: the longer a settled send waits for
        # its commit, the more a crash would send twice.
        self._commit_due(self._clock.monotonic_s())
        self._flow_control()
        messages = self._source.consume(_CONSUME_BATCH, self._poll_timeout_s())
        for raw in messages:
            pipeline.handle(raw)
        self.publish_gauges()
        return len(messages)

    def _commit_gap_s(self) -> float:
        """At most one commit per `_MIN_COMMIT_GAP_S` even at `commit_interval_s: 0` (under load a
        loop turn lasts a few milliseconds), and fewer when commits grow costly."""
        return max(self._settings.commit_interval_s, _MIN_COMMIT_GAP_S, self._commit_cost_gap_s)

    def _poll_timeout_s(self) -> float:
        """Short while requests are in flight or a batch is waiting, so results settle promptly,
        and no longer than the next commit when settled work waits for one."""
        if self.pipeline.busy:
            return _BUSY_POLL_S
        if self.pipeline.commits_waiting:
            due_s = max(self._last_commit_s + self._commit_gap_s(), self._commit_retry_at_s)
            return min(_IDLE_POLL_S, max(0.0, due_s - self._clock.monotonic_s()))
        due_ms = self.pipeline.next_due_ms()
        if due_ms is None:
            return _IDLE_POLL_S
        now_ms = to_ms(self._clock.monotonic_s())
        return min(_IDLE_POLL_S, max(0.0, (due_ms - now_ms) / 1000))

    def _flow_control(self) -> None:
        """Paused while Braze is held, or while too many events or bytes are unsettled."""
        unsettled, size = self.pipeline.unsettled(), self.pipeline.unsettled_bytes()
        events, limit = self._settings.max_buffered_events, self._settings.max_buffered_bytes
        full = unsettled >= events or size >= limit
        if not self._paused and (full or not self.pipeline.wants_input):
            why = "holding for Braze" if self.pipeline.holding else f"{unsettled} unsettled"
            log.info("pausing %d partitions: %s (%d bytes)", len(self._assigned), why, size)
            self._source.pause(sorted(self._assigned))
            self._paused = True
        elif (
            self._paused
            and unsettled <= events // 2
            and size <= limit // 2
            and self.pipeline.wants_input
        ):
            log.info("resuming %d partitions", len(self._assigned))
            self._source.resume(sorted(self._assigned))
            self._paused = False
        self._metrics.set_paused_partitions(len(self._assigned) if self._paused else 0)

    def _commit_due(self, now_s: float) -> None:
        if now_s < self._commit_retry_at_s:
            return
        if now_s - self._last_commit_s < self._commit_gap_s():
            return
        if self.pipeline.commits_waiting:
            self._last_change_s = now_s
        if self._repeat_due(now_s):
            # An asynchronous commit the broker refused (its coordinator moving or loading) is
            # not reported back (kafka_io): the latest commits are made again a few times, so a
            # partition that went quiet right after a refusal still gets its offset committed.
            self.pipeline.recommit(sorted(self._assigned))
            self._last_repeat_s = now_s
        self._commit(asynchronous=True)
        self._last_commit_s = now_s
        spent_s = self._clock.monotonic_s() - now_s
        self._commit_cost_gap_s = min(_MAX_COMMIT_GAP_S, spent_s * _COMMIT_COST_FACTOR)

    def _repeat_due(self, now_s: float) -> bool:
        """Every `_REPEAT_EVERY_S`, for `_REPEAT_FOR_S` after the last commit that carried news."""
        return (
            bool(self._assigned)
            and now_s - self._last_repeat_s >= _REPEAT_EVERY_S
            and now_s - self._last_change_s <= _REPEAT_FOR_S
        )

    def _commit(self, *, asynchronous: bool) -> bool:
        return self._commit_offsets(self.pipeline.take_commits(), asynchronous=asynchronous)

    def _commit_offsets(self, commits: dict[TopicPartition, Commit], *, asynchronous: bool) -> bool:
        """Commit what is assigned; the lag is measured from what was committed. A commit the
        broker refused (synchronous), or that could not be sent, is made again after
        `_COMMIT_RETRY_S`."""
        commits = {tp: c for tp, c in commits.items() if tp in self._assigned}
        if not commits:
            return True
        if self._source.commit(commits, asynchronous=asynchronous):
            self._metrics.committed(len(commits))
            self._committed.update({tp: c.offset for tp, c in commits.items()})
            return True
        self.pipeline.recommit(list(commits))
        self._commit_retry_at_s = self._clock.monotonic_s() + _COMMIT_RETRY_S
        return False

    def _lag(self) -> dict[TopicPartition, int]:
        """High watermark minus the committed offset (the low watermark before any commit): a
        partition stuck behind an unsettled event shows its real lag, not the fetch position's."""
        assigned = sorted(self._assigned)
        marks = self._source.watermarks(assigned, fresh=self._paused)
        lags = {}
        for tp, (low, high) in marks.items():
            lags[tp] = max(0, high - max(self._committed.get(tp, low), low))
        return lags

    def _update_lag(self) -> None:
        for (topic, partition), lag in self._lag().items():
            self._metrics.set_lag(topic, partition, lag)
        for tp in self._assigned:
            self._metrics.set_lag_seconds(tp[0], tp[1], self.pipeline.oldest_unsettled_age_s(tp))
            if tp in self._committed:
                self._metrics.set_committed_offset(tp[0], tp[1], self._committed[tp])

    def _log_progress(self) -> None:
        stats = self.pipeline.stats
        log.info(
            "progress: consumed %d, sent %d, skipped %d, dead-lettered %d, unsettled %d, lag %d%s",
            stats.consumed,
            stats.recipients_sent,
            stats.skipped,
            sum(self.pipeline.dead_lettered.values()),
            self.pipeline.unsettled(),
            sum(self._lag().values()),
            ", holding for Braze" if self.pipeline.holding else "",
        )

    def _reload_rules(self, now_s: float) -> None:
        """Take a changed rules table between two events; re-subscribe if its topics changed."""
        if self._watcher is None:
            return
        loaded = self._watcher.check(now_s)
        if loaded is None:
            return
        self.pipeline.use_rules(loaded.table, loaded.version)
        if loaded.table.topics != self._topics:
            log.info(
                "the rules' topics changed (%s -> %s): re-subscribing",
                ", ".join(sorted(self._topics)),
                ", ".join(sorted(loaded.table.topics)),
            )
            self._topics = loaded.table.topics
            self._source.subscribe(self._topics)
            self._refresh_partition_counts()
            self._apply_budget_share()

    def publish_gauges(self) -> None:
        """Gauges and the liveness heartbeat; also called during long waits (drain, revoke)."""
        pipeline = self.pipeline
        self._metrics.set_in_flight_events(pipeline.unsettled())
        self._metrics.set_buffered(pipeline.buffered, pipeline.open_batches)
        self._metrics.set_in_flight_requests(pipeline.in_flight_requests)
        if self._server is not None:
            self._server.heartbeat(self._clock.monotonic_s())

    def _idle_check(self, consumed: int, idle_since: float | None, now_s: float) -> float | None:
        """For `--exit-when-idle`: caught up, nothing buffered or unsettled, for a while."""
        limit = self._settings.exit_when_idle_s
        pipeline = self.pipeline
        if limit is None or consumed or not self._assigned:
            return None
        if pipeline.unsettled() or pipeline.buffered:
            return None
        if any(self._lag().values()):
            return None
        if idle_since is None:
            return now_s
        if now_s - idle_since >= limit:
            log.info("caught up and idle for %.1fs: stopping", limit)
            self._stop.set()
        return idle_since

    # -- shutdown ------------------------------------------------------------------------------

    def _drain(self) -> int:
        """Stop consuming, flush batches, wait (bounded) for sends and dead letters, commit."""
        self._set_ready(False)
        log.info("draining: %d events unsettled", self.pipeline.unsettled())
        self.pipeline.flush()
        settled = self.pipeline.settle(self._settings.drain_timeout_s)
        for attempt in range(_FINAL_COMMIT_ATTEMPTS):
            if self._commit(asynchronous=False):
                break
            log.warning("final offset commit refused (attempt %d)", attempt + 1)
            threading.Event().wait(_COMMIT_RETRY_S)
        if not settled:
            log.warning(
                "drain timeout: %d events unsettled; they will be re-read after restart",
                self.pipeline.unsettled(),
            )
        return 0


def _fmt(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps)) or "-"

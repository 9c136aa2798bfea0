"""Stages 2-5 for one consumed message: decode -> rules -> batch -> send -> settle, and the
verbs of its lifecycle (assign, revoke, flush, settle, take_commits) for the loop and replay.

At-least-once, in this order for every event:
  1. the offset is tracked with one pending unit per send intent or dead letter; an event that an
     earlier owner already settled (the commit metadata says so) is tracked as settled, not redone;
  2. intents wait in the batcher until a request is full or due;
  3. a worker thread sends the request (a few retries, the rate limit, bisecting rejections);
  4. each recipient's result settles its unit: sent, or dead-lettered *and acknowledged*. A failure
     of Braze or of the deployment settles nothing: the batch is parked and the pipeline holds,
     probing Braze one request at a time, until Braze answers (`consumer.hold`);
  5. a fully settled prefix of a partition becomes the commit position, and what is settled beyond
     it travels in the commit's metadata (`OffsetTracker`, `consumer.progress`).
Everything here runs on the consumer thread except `BatchSender.send_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consumer.batching import Batch, Batcher, BatchItem
from consumer.braze.client import RecipientResult
from consumer.braze.limits import MAX_RECIPIENT_BYTES, MAX_REQUEST_BYTES
from consumer.clock import Clock, to_ms
from consumer.deadletter import DeadLetter, Reason
from consumer.dlq_writer import DeadLetterSink, DeadLetterWriter
from consumer.events import DecodeError, Event, RawMessage, SchemaWait, decode_any
from consumer.guard import DeadLetterGuard, GuardPolicy
from consumer.hold import Hold, HoldPolicy
from consumer.intents import MappingFailure, RuleSkip, SendIntent
from consumer.metrics import Metrics
from consumer.offsets import Commit, OffsetTracker, TopicPartition
from consumer.progress import SettledRanges
from consumer.quarantine import TargetQuarantine
from consumer.rules import RulesTable
from consumer.schema_wait import SchemaWaits, WaitingEvent
from consumer.sending import BatchSender, Dispatcher, Finished

if TYPE_CHECKING:
    from consumer.schemas.decoder import WireDecoder

log = logging.getLogger(__name__)

_SETTLE_STEP_S = 0.05
# While requests queue for Braze's budget, a partial batch waits up to this many times
# `batching.max_wait_ms` to fill (`Pipeline._extra_wait_ms`).
PARTIAL_WAIT_FACTOR = 10


class HaltError(Exception):
    """Stop the consumer without committing: something is wrong beyond one event."""


@dataclass(slots=True)
class Ticket:
    """An event, and the position whose commit waits for it (its own offset, or a dead-letter
    record's offset when replaying). Never changed once made (not frozen: a frozen dataclass
    costs four times as much to build, and one is built per matched event)."""

    raw: RawMessage
    tp: TopicPartition
    offset: int
    generation: int  # which assignment of `tp` consumed it; results from an older one are ignored
    rules_version: str = ""  # of the table that handled it, for its dead letters


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_in_flight: int = 24
    max_event_bytes: int = 1_048_576  # larger messages are dead-lettered unparsed (too_large)
    hold: HoldPolicy = field(default_factory=HoldPolicy)
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    rejected_target_cooldown_s: float = 600.0
    # While the Schema Registry fails: first and longest wait before decoding again.
    schema_retry_initial_s: float = 1.0
    schema_retry_max_s: float = 30.0


@dataclass(slots=True)
class _Counts:
    """Per-event counts not yet handed to the metrics (`Pipeline.publish_counts`)."""

    consumed: dict[str, int] = field(default_factory=dict)  # by topic
    matched: dict[str, int] = field(default_factory=dict)  # by rule
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # by (rule, reason)
    no_match: int = 0  # events no rule matched: skipped ("-", "no_match"), most of a busy topic

    def clear(self) -> None:
        self.consumed.clear()
        self.matched.clear()
        self.skipped.clear()
        self.no_match = 0


@dataclass
class PipelineStats:
    """Counts since start, for the demo report and logs (metrics carry the same by label)."""

    consumed: int = 0
    matched: int = 0
    skipped: int = 0
    already_settled: int = 0
    recipients_sent: int = 0
    holds: int = 0


class Pipeline:
    """Owns the batcher, the offset tracker, the send dispatcher and the hold; fed by `handle()`."""

    def __init__(
        self,
        *,
        rules: RulesTable,
        rules_version: str = "",
        batcher: Batcher[Ticket],
        tracker: OffsetTracker,
        sender: BatchSender,
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        clock: Clock,
        settings: PipelineSettings = PipelineSettings(),
        on_wait: Callable[[], None] = lambda: None,  # runs during long waits (liveness)
        wire: WireDecoder | None = None,  # Schema Registry records; None: no registry configured
    ) -> None:
        self.rules = rules
        self.rules_version = rules_version
        self.stats = PipelineStats()
        self._counts = _Counts()
        self._batcher = batcher
        self._tracker = tracker
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        self.on_wait = on_wait
        self._sends: Dispatcher[Ticket] = Dispatcher(sender, settings.max_in_flight)
        self._dlq = DeadLetterWriter(dead_letters, clock, metrics)
        self._hold = Hold(settings.hold)
        self._guard = DeadLetterGuard(settings.guard)
        self._quarantine = TargetQuarantine(settings.rejected_target_cooldown_s)
        self._generations: dict[TopicPartition, int] = {}
        self._max_event_bytes = settings.max_event_bytes
        self._wire = wire
        self._waits = SchemaWaits(settings.schema_retry_initial_s, settings.schema_retry_max_s)

    # -- lifecycle ------------------------------------------------------------------------------

    def assign(
        self,
        tps: Sequence[TopicPartition],
        inherited: Mapping[TopicPartition, SettledRanges] | None = None,
    ) -> None:
        """A new assignment generation; `inherited`: offsets an earlier owner already settled."""
        for tp in tps:
            self._generations[tp] = self._generations.get(tp, 0) + 1
            self._tracker.assign(tp, (inherited or {}).get(tp, ()))

    def revoke(
        self, tps: Collection[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, Commit]:
        """Send the revoked partitions' batches and wait (bounded) for them to settle; returns the
        commits to make before letting the partitions go. Unsent work of theirs is dropped: the new
        owner re-reads it."""
        revoked = set(tps)
        self._dispatch(self._batcher.flush_where(lambda ticket: ticket.tp in revoked))
        self.settle(timeout_s, revoked)
        commits = self.take_commits()
        self.lose(revoked)
        return commits

    def lose(self, tps: Collection[TopicPartition]) -> None:
        """Forget partitions without a commit (lost, or after `revoke`)."""
        gone = set(tps)
        self._tracker.forget(gone)
        self._waits.drop(gone)
        for tp in gone:
            self._generations[tp] = self._generations.get(tp, 0) + 1  # late results are ignored
        self._sends.drop_where(lambda ticket: ticket.tp in gone)
        # Their open batches are not sent (the new owner re-reads those events), but the other
        # partitions' events sharing them must still go out.
        for batch in self._batcher.flush_where(lambda ticket: ticket.tp in gone):
            kept = tuple(item for item in batch.items if item.token.tp not in gone)
            if kept:
                self._dispatch([Batch(batch.key, kept, batch.opened_ms)])

    def flush(self) -> None:
        """Send every open batch now (shutdown, end of a replay)."""
        self._dispatch(self._batcher.flush())

    def settle(self, timeout_s: float, tps: Collection[TopicPartition] | None = None) -> bool:
        """Tick until every tracked event (of `tps`) is settled, or `timeout_s` passes. Events
        waiting for the Schema Registry are not waited for (the registry failed them; they are
        read again after a restart or by the partition's next owner), nor is a hold with nothing
        under way (`_stuck`)."""
        deadline_s = self._clock.monotonic_s() + timeout_s
        while self.unsettled(tps) > self._waits.waiting(tps) and not self._stuck():
            left_s = deadline_s - self._clock.monotonic_s()
            if left_s <= 0:
                return False
            self.tick(min(_SETTLE_STEP_S, left_s))
            self.on_wait()
        return True

    def _stuck(self) -> bool:
        """Holding, with no request and no dead-letter write under way: nothing can settle
        before the next probe, so a revoke or drain has nothing to wait for (what is held is
        read again by the partition's next owner, or after the restart)."""
        return self._hold.holding and not self._sends.in_flight and not self._dlq.unacked

    def take_commits(self) -> dict[TopicPartition, Commit]:
        return self._tracker.take_commits()

    def recommit(self, tps: Collection[TopicPartition]) -> None:
        """Commit `tps` again at the next commit: the broker refused their last one."""
        self._tracker.recommit(tps)

    @property
    def commits_waiting(self) -> bool:
        """Whether some partition changed since `take_commits` (a commit may be due)."""
        return self._tracker.changed

    def use_rules(self, rules: RulesTable, version: str) -> None:
        """Swap the rules table between two events; intents already made go on as they are."""
        self.rules = rules
        self.rules_version = version

    def close(self) -> None:
        self.publish_counts()
        self._sends.close()

    # -- state ---------------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self._hold.holding

    @property
    def wants_input(self) -> bool:
        """False while holding work for Braze: consuming more would only buffer more."""
        return not self._hold.holding or not (self._sends.parked or self._sends.in_flight)

    def unsettled_bytes(self) -> int:
        return self._tracker.unsettled_bytes()

    def oldest_unsettled_age_s(self, tp: TopicPartition) -> float:
        """Seconds since the Kafka timestamp of the oldest unsettled event of `tp` (0: none)."""
        timestamp_ms = self._tracker.oldest_unsettled_timestamp_ms(tp)
        if timestamp_ms is None:
            return 0.0
        return max(0.0, self._clock.wall_s() - timestamp_ms / 1000)

    def unsettled(self, tps: Collection[TopicPartition] | None = None) -> int:
        if tps is None:
            return self._tracker.unsettled()
        return sum(self._tracker.unsettled(tp) for tp in tps)

    @property
    def busy(self) -> bool:
        """Requests or dead-letter writes under way: results should be collected promptly."""
        return bool(self._sends.in_flight or self._dlq.unacked)

    @property
    def in_flight_requests(self) -> int:
        return self._sends.in_flight

    @property
    def requests(self) -> int:
        return self._sends.requests

    @property
    def buffered(self) -> int:
        return self._batcher.pending

    @property
    def open_batches(self) -> int:
        return self._batcher.open_batches

    def next_due_ms(self) -> int | None:
        return self._batcher.next_due_ms()

    # -- intake -------------------------------------------------------------------------------

    def handle(
        self,
        raw: RawMessage,
        position: tuple[TopicPartition, int] | None = None,
        only_rule: str | None = None,
    ) -> None:
        """Route one consumed message; every unit it creates is settled later, exactly once.

        `position` (default: the message's own) is what the event's settlement releases;
        `only_rule` keeps the outcomes of one rule (a replay must not re-send the others).
        """
        meta = raw.meta
        stats = self.stats
        stats.consumed += 1
        counts = self._counts
        counts.consumed[meta.topic] = counts.consumed.get(meta.topic, 0) + 1
        if position is None:
            tp, offset = (meta.topic, meta.partition), meta.offset
        else:
            tp, offset = position
        tracker = self._tracker
        if tracker.already_settled(tp, offset):
            tracker.track(tp, offset, 0, settled_before=True)
            stats.already_settled += 1
            self._metrics.already_settled(meta.topic)
            return
        value = raw.value
        size = 0 if value is None else len(value)
        if size > self._max_event_bytes:
            tracker.track(tp, offset, 1, size, meta.timestamp_ms)
            error = f"the event is {size} bytes; kafka.max_event_bytes is {self._max_event_bytes}"
            letter = DeadLetter(raw, Reason.TOO_LARGE, error)
            self._dead_letter(letter, self._ticket(raw, tp, offset))
            return
        waits = self._waits
        if waits.count and waits.holds(tp):  # behind an event waiting for its schema
            tracker.track(tp, offset, 1, size, meta.timestamp_ms)
            waits.add(tp, WaitingEvent(raw, offset, only_rule))
            self._metrics.set_schema_waiting(waits.count)
            return
        decoded = decode_any(raw, self._wire, kafka_namespace=self.rules.conditions_read_kafka)
        if isinstance(decoded, SchemaWait):
            tracker.track(tp, offset, 1, size, meta.timestamp_ms)
            self._wait_for_schema(tp, WaitingEvent(raw, offset, only_rule), decoded.detail)
            return
        self._process(decoded, tp, offset, size, only_rule, tracked=False)

    def _process(
        self,
        decoded: Event | DecodeError,
        tp: TopicPartition,
        offset: int,
        size: int,
        only_rule: str | None,
        *,
        tracked: bool,  # already tracked with one pending unit (it waited for its schema)
    ) -> None:
        raw = decoded.raw
        timestamp_ms = raw.meta.timestamp_ms
        tracker = self._tracker
        if isinstance(decoded, DecodeError):
            if not tracked:
                tracker.track(tp, offset, 1, size, timestamp_ms)
            letter = DeadLetter(raw, decoded.reason, decoded.detail)
            self._dead_letter(letter, self._ticket(raw, tp, offset))
            return
        rules = self.rules
        outcomes = rules.evaluate(decoded, to_ms(self._clock.wall_s()) if rules.reads_clock else 0)
        if only_rule is not None:
            outcomes = [o for o in outcomes if o.rule_id == only_rule]
        if not outcomes:  # most events of a busy topic: no ticket, nothing to settle later
            if tracked:
                tracker.retrack(tp, offset, 0)
            else:
                tracker.track(tp, offset, 0, size, timestamp_ms)
            self.stats.skipped += 1
            self._counts.no_match += 1
            return
        units = 0
        for outcome in outcomes:
            if not isinstance(outcome, RuleSkip):
                units += 1
        if tracked:
            tracker.retrack(tp, offset, units)
        else:
            tracker.track(tp, offset, units, size, timestamp_ms)
        ticket = self._ticket(raw, tp, offset)
        for outcome in outcomes:
            self._route(outcome, ticket)

    # -- events waiting for the Schema Registry --------------------------------------------------

    @property
    def waiting_for_schema(self) -> int:
        """Events waiting for the Schema Registry (unsettled, in order per partition)."""
        return self._waits.count

    def _wait_for_schema(self, tp: TopicPartition, event: WaitingEvent, error: str) -> None:
        first = not self._waits.count
        self._waits.add(tp, event)
        self._waits.failed(self._clock.monotonic_s())
        self._metrics.schema_registry_failed()
        self._metrics.set_schema_waiting(self._waits.count)
        if first:
            log.warning(
                "waiting for the schema registry (%s): events of %s[%d] wait from offset %d; "
                "nothing is dead-lettered, retrying",
                error,
                tp[0],
                tp[1],
                event.offset,
            )

    def _retry_schema_waits(self) -> None:
        """Decode the waiting events again, oldest first per partition; stop at the first that
        still cannot get its schema (the registry still fails: back off further)."""
        waits = self._waits
        for tp in waits:
            while (event := waits.head(tp)) is not None:
                decoded = decode_any(
                    event.raw, self._wire, kafka_namespace=self.rules.conditions_read_kafka
                )
                if isinstance(decoded, SchemaWait):
                    waits.failed(self._clock.monotonic_s())
                    self._metrics.schema_registry_failed()
                    self._metrics.set_schema_waiting(waits.count)
                    return
                waits.pop(tp)
                self._process(decoded, tp, event.offset, 0, event.only_rule, tracked=True)
        self._metrics.set_schema_waiting(waits.count)
        log.info("the schema registry answers again: every waiting event decoded")

    def _ticket(self, raw: RawMessage, tp: TopicPartition, offset: int) -> Ticket:
        return Ticket(raw, tp, offset, self._generations.get(tp, 0), self.rules_version)

    def _route(self, outcome: SendIntent | RuleSkip | MappingFailure, ticket: Ticket) -> None:
        if isinstance(outcome, RuleSkip):
            self._count_skip(outcome.rule_id, outcome.reason)
            return
        self.stats.matched += 1
        matched = self._counts.matched
        matched[outcome.rule_id] = matched.get(outcome.rule_id, 0) + 1
        if isinstance(outcome, MappingFailure):
            error = f"{outcome.field}: {outcome.message}"
            letter = DeadLetter(ticket.raw, outcome.reason, error, rule_id=outcome.rule_id)
            self._dead_letter(letter, ticket)
        elif outcome.size_bytes > MAX_RECIPIENT_BYTES:
            error = f"recipient is {outcome.size_bytes} bytes; a request may be {MAX_REQUEST_BYTES}"
            self._dead_letter(
                DeadLetter(ticket.raw, Reason.TOO_LARGE, error, outcome.rule_id), ticket
            )
        else:
            ready = self._batcher.add(outcome, ticket, to_ms(self._clock.monotonic_s()))
            if ready:
                self._dispatch(ready)

    def _count_skip(self, rule_id: str, reason: str) -> None:
        self.stats.skipped += 1
        skipped = self._counts.skipped
        skipped[(rule_id, reason)] = skipped.get((rule_id, reason), 0) + 1

    def publish_counts(self) -> None:
        """Hand the per-event counts gathered since the last call to the metrics (once per loop
        turn, from `tick`: a counter update per event costs more than the rest of a skipped
        event's handling)."""
        counts, metrics = self._counts, self._metrics
        for topic, n in counts.consumed.items():
            metrics.event_consumed(topic, n)
        for rule_id, n in counts.matched.items():
            metrics.event_matched(rule_id, n)
        for (rule_id, reason), n in counts.skipped.items():
            metrics.event_skipped(rule_id, reason, n)
        if counts.no_match:
            metrics.event_skipped("-", "no_match", counts.no_match)
        counts.clear()

    # -- sending ------------------------------------------------------------------------------

    def tick(self, wait_s: float = 0.0) -> None:
        """Settle finished requests (waiting up to `wait_s` for one), deliver dead-letter
        acknowledgements, send the partial batches that are due, and probe Braze when held."""
        self.publish_counts()
        if self._waits.due(self._clock.monotonic_s()):
            self._retry_schema_waits()
        for finished in self._sends.collect(wait_s):
            self._finish(finished)
        self._dlq.service()
        self._dispatch(self._batcher.due(to_ms(self._clock.monotonic_s()), self._extra_wait_ms()))
        self._probe_if_due()

    def _extra_wait_ms(self) -> int:
        """How much longer than `max_wait_ms` a partial batch stays open: while the send path is
        saturated (Braze's budget or the in-flight bound is the limit, batches already queued),
        a partial batch sent now would only queue behind them, and spend a request on fewer
        recipients than it can still gather (the consumer resumes as the queue drains). Never
        past PARTIAL_WAIT_FACTOR times `max_wait_ms` in all; at once when `max_wait_ms` is 0."""
        if not self._sends.saturated:
            return 0
        return (PARTIAL_WAIT_FACTOR - 1) * self._batcher.max_wait_ms

    def _dispatch(self, batches: list[Batch[Ticket]]) -> None:
        """Queue each batch and start what may start (nothing while holding); stale and
        quarantined items are screened out when a batch starts."""
        for batch in batches:
            self._sends.park(batch)
        if not self._hold.holding:
            self._sends.pump(self._screen)

    def _screen(self, batch: Batch[Ticket]) -> Batch[Ticket] | None:
        """Drop what must not be sent: items of revoked assignments, events that grew stale
        (held past their rule's `max_event_age`), targets Braze rejects as a whole."""
        wall_ms = to_ms(self._clock.wall_s())
        quarantined = self._quarantine.error(batch.key, self._clock.monotonic_s())
        kept = []
        for item in batch.items:
            if not self._current(item.token):
                continue
            stale_after_ms = item.intent.stale_after_ms
            if stale_after_ms is not None and wall_ms > stale_after_ms:
                self._count_skip(item.intent.rule_id, "max_event_age")
                self._settle(item.token)
            elif quarantined is not None:
                # One fault of the rule's target, with its own metric and alert: the guard,
                # which is there to catch bad data or mappings, counts it once (when found).
                self._metrics.target_rejected(item.intent.rule_id, batch.key.target_id)
                self._reject(item.token, item.intent.rule_id, quarantined, None, guard=False)
            else:
                kept.append(item)
        if len(kept) == len(batch.items):
            return batch
        return Batch(batch.key, tuple(kept), batch.opened_ms) if kept else None

    def _probe_if_due(self) -> None:
        if not self._hold.probe_due(self._clock.monotonic_s()):
            return
        batch = self._sends.unpark()
        while batch is not None and (batch := self._screen(batch)) is None:
            batch = self._sends.unpark()
        if batch is None:
            # Nothing parked (revoked, stale, or still in flight): `wants_input` lets the service
            # consume again once nothing is in flight, and the next batch becomes the probe.
            return
        assert self._hold.cause is not None
        self._sender.prepare_probe(self._hold.cause)
        self._hold.probe_started()
        self._sends.send(batch, probe=True)

    def _finish(self, finished: Finished[Ticket]) -> None:
        batch = finished.batch
        results = finished.results
        held: list[tuple[int, RecipientResult]] = []
        if any(r.outcome != "held" and not r.whole_request for r in results):
            self._sends.proven.add((batch.key.endpoint.value, batch.key.target_id))
        if len(results) == len(batch.items) and all(r.outcome == "sent" for r in results):
            self._settle_sent(batch.items)  # most requests
        else:
            for result in results:
                item = batch.items[result.index]
                if result.outcome == "sent":
                    self.stats.recipients_sent += 1  # metrics count them in request_done
                    self._record(dead_lettered=False)
                    self._settle(item.token)
                elif result.outcome == "rejected":
                    if result.whole_request:
                        self._quarantine.reject(batch.key, result.error, self._clock.monotonic_s())
                        self._sends.proven.discard((batch.key.endpoint.value, batch.key.target_id))
                    if not self._current(item.token):
                        # Revoked or lost while the request was out: the partition's next owner
                        # reads the event again and dead-letters it once, not twice.
                        continue
                    # A whole-request rejection is the target's fault, not this event's data.
                    guard = not result.whole_request
                    self._reject(item.token, item.intent.rule_id, result.error, result, guard=guard)
                else:
                    held.append((result.index, result))
        if held:
            self._held(finished, held)
        elif finished.probe:
            self._resume(answered=bool(finished.results))
        if not self._hold.holding:
            self._sends.pump(self._screen)

    def _settle_sent(self, items: Sequence[BatchItem[Ticket]]) -> None:
        """The sent results of a request whose every recipient was sent, in one pass: each
        current event settles, and the guard records the sends at once."""
        for item in items:
            self._settle(item.token)
        self.stats.recipients_sent += len(items)  # metrics count them in request_done
        stop = self._guard.record_sent(len(items))
        if stop is not None:
            raise HaltError(stop)

    def _held(self, finished: Finished[Ticket], held: list[tuple[int, RecipientResult]]) -> None:
        """Park what Braze or the deployment failed to take, and hold (or keep holding)."""
        batch = finished.batch
        items = tuple(batch.items[index] for index, _ in held)
        self._sends.park(Batch(batch.key, items, batch.opened_ms), front=True)
        first = held[0][1]
        assert first.cause is not None
        now_s = self._clock.monotonic_s()
        if finished.probe:
            self._metrics.hold_probe(ok=False)
            self._hold.probe_failed(first.cause, first.error, now_s)
        elif self._hold.failed(first.cause, first.error, now_s):
            self.stats.holds += 1
        self._metrics.set_holding(self._hold.cause)

    def _resume(self, *, answered: bool) -> None:
        if not answered:  # abandoned (shutting down): nothing learnt
            self._hold.probe_abandoned()
            return
        self._metrics.hold_probe(ok=True)
        self._hold.probe_answered(self._clock.monotonic_s())
        self._metrics.set_holding(None)

    # -- settling -----------------------------------------------------------------------------

    def _current(self, ticket: Ticket) -> bool:
        return self._generations.get(ticket.tp) == ticket.generation

    def _settle(self, ticket: Ticket) -> None:
        if self._current(ticket):
            self._tracker.settle(ticket.tp, ticket.offset)

    def _reject(
        self,
        ticket: Ticket,
        rule_id: str,
        error: str,
        result: RecipientResult | None,
        *,
        guard: bool = True,
    ) -> None:
        letter = DeadLetter(
            ticket.raw,
            Reason.BRAZE_REJECTED,
            error,
            rule_id=rule_id,
            http_status=None if result is None else result.http_status,
            attempts=0 if result is None else result.attempts,
            first_failed_at=None if result is None else result.first_failed_at,
        )
        self._dead_letter(letter, ticket, guard=guard)

    def _dead_letter(self, letter: DeadLetter, ticket: Ticket, *, guard: bool = True) -> None:
        if guard:
            self._record(dead_lettered=True)
        log.info(
            "dead letter %s rule=%s %s[%d]@%d%s",
            letter.reason,
            letter.rule_id,
            ticket.tp[0],
            ticket.tp[1],
            ticket.offset,
            "" if letter.http_status is None else f" http_status={letter.http_status}",
            extra={
                "topic": ticket.tp[0],
                "partition": ticket.tp[1],
                "offset": ticket.offset,
                "rule_id": letter.rule_id,
                "reason": str(letter.reason),
                "http_status": letter.http_status,
            },
        )
        letter = dataclasses.replace(letter, rules_version=ticket.rules_version)
        self._dlq.write(letter, lambda: self._settle(ticket), lambda: self._current(ticket))

    def _record(self, *, dead_lettered: bool) -> None:
        stop = self._guard.record(dead_lettered=dead_lettered)
        if stop is not None:
            raise HaltError(stop)

    @property
    def dead_letters_unacked(self) -> int:
        return self._dlq.unacked

    @property
    def dead_lettered(self) -> dict[str, int]:
        return dict(self._dlq.written)

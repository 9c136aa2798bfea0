"""Stages 2-5 for one consumed message: decode -> rules -> batch -> send (worker threads) -> settle.

At-least-once, in this order for every event:
  1. the offset is tracked with one pending unit per send intent or dead letter;
  2. intents wait in the batcher until a request is full or due;
  3. a worker thread sends the request (retries, rate limit, bisecting rejections);
  4. each recipient's result settles its unit: sent, or dead-lettered *and acknowledged*;
  5. only a fully settled prefix of a partition becomes a commit position (see `OffsetTracker`).
Everything here runs on the consumer thread except `BatchSender.send_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from consumer.batching import Batch, Batcher
from consumer.braze.client import ClientClosedError, RecipientResult
from consumer.braze.contract import MAX_BODY_BYTES
from consumer.deadletter import DeadLetter, Reason
from consumer.events import DecodeError, RawMessage, decode
from consumer.intents import BatchKey, MappingFailure, RuleSkip, SendIntent
from consumer.json_types import JSONObject
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, TopicPartition
from consumer.rules import RulesTable

log = logging.getLogger(__name__)

_REQUEST_ENVELOPE_BYTES = 4_096  # body fields around the recipients list


class BatchSender(Protocol):
    def send_batch(self, key: BatchKey, recipients: Sequence[JSONObject]) -> list[RecipientResult]:
        """Blocking and thread-safe; one result per recipient, never raises for HTTP outcomes."""
        ...


class DeadLetterSink(Protocol):
    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None: ...
    def poll(self, timeout_s: float = 0.0) -> int: ...


class HaltError(Exception):
    """Stop the consumer without committing: something is wrong beyond one event."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """An event, and the position whose commit waits for it (its own offset, or a dead-letter
    record's offset when replaying)."""

    raw: RawMessage
    tp: TopicPartition
    offset: int
    generation: int  # which assignment of `tp` consumed it; results from an older one are ignored


@dataclass
class _Retry:
    letter: DeadLetter
    ticket: Ticket
    due_ms: int
    attempt: int = 1


@dataclass
class PipelineStats:
    """Counts since start, for the demo report and logs (metrics carry the same by label)."""

    consumed: int = 0
    matched: int = 0
    skipped: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    recipients_sent: int = 0
    requests: int = 0


class Pipeline:
    """Owns the batcher, the offset tracker and the send workers; fed by `handle()`."""

    def __init__(
        self,
        *,
        rules: RulesTable,
        batcher: Batcher[Ticket],
        tracker: OffsetTracker,
        sender: BatchSender,
        dead_letters: DeadLetterSink,
        metrics: Metrics,
        max_in_flight: int,
        max_consecutive_dead_letters: int,
        wall_ms: Callable[[], int],
    ) -> None:
        self.rules = rules
        self.batcher = batcher
        self.tracker = tracker
        self.stats = PipelineStats()
        self._sender = sender
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._wall_ms = wall_ms
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="braze-send")
        self._done: queue.SimpleQueue[Future[tuple[Batch[Ticket], list[RecipientResult]]]]
        self._done = queue.SimpleQueue()
        self._in_flight = 0
        self._dlq_retries: list[_Retry] = []
        self._dlq_unacked = 0
        self._consecutive_dead = 0
        self._max_consecutive_dead = max_consecutive_dead_letters
        self._generations: dict[TopicPartition, int] = {}

    # -- assignment -----------------------------------------------------------------------------

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        """A new assignment generation: results of sends from an earlier one must not settle it."""
        for tp in tps:
            self._generations[tp] = self._generations.get(tp, 0) + 1

    def _settle(self, ticket: Ticket) -> None:
        if self._generations.get(ticket.tp) == ticket.generation:
            self.tracker.settle(ticket.tp, ticket.offset)

    # -- intake -------------------------------------------------------------------------------

    def handle(
        self,
        raw: RawMessage,
        now_ms: int,
        position: tuple[TopicPartition, int] | None = None,
        only_rule: str | None = None,
    ) -> None:
        """Route one consumed message; every unit it creates is settled later, exactly once.

        `position` (default: the message's own) is what the event's settlement releases;
        `only_rule` keeps the outcomes of one rule (a replay must not re-send the others).
        """
        self.stats.consumed += 1
        self._metrics.event_consumed(raw.meta.topic)
        tp, offset = position or ((raw.meta.topic, raw.meta.partition), raw.meta.offset)
        ticket = Ticket(raw, tp, offset, self._generations.get(tp, 0))
        decoded = decode(raw)
        if isinstance(decoded, DecodeError):
            self.tracker.track(tp, offset, 1)
            self._dead_letter(DeadLetter(raw, decoded.reason, decoded.detail), ticket)
            return
        outcomes = self.rules.evaluate(decoded, self._wall_ms())
        if only_rule is not None:
            outcomes = [o for o in outcomes if o.rule_id == only_rule]
        units = [o for o in outcomes if not isinstance(o, RuleSkip)]
        self.tracker.track(tp, offset, len(units))
        if not outcomes:
            self._count_skip("-", "no_match")
        for outcome in outcomes:
            self._route(outcome, ticket, now_ms)

    def _route(
        self, outcome: SendIntent | RuleSkip | MappingFailure, ticket: Ticket, now_ms: int
    ) -> None:
        if isinstance(outcome, RuleSkip):
            self._count_skip(outcome.rule_id, outcome.reason)
            return
        self.stats.matched += 1
        self._metrics.event_matched(outcome.rule_id)
        if isinstance(outcome, MappingFailure):
            error = f"{outcome.field}: {outcome.message}"
            letter = DeadLetter(ticket.raw, outcome.reason, error, rule_id=outcome.rule_id)
            self._dead_letter(letter, ticket)
        elif outcome.size_bytes + _REQUEST_ENVELOPE_BYTES > MAX_BODY_BYTES:
            error = f"recipient is {outcome.size_bytes} bytes; a request may be {MAX_BODY_BYTES}"
            self._dead_letter(
                DeadLetter(ticket.raw, Reason.TOO_LARGE, error, outcome.rule_id), ticket
            )
        else:
            self.submit(self.batcher.add(outcome, ticket, now_ms))

    def _count_skip(self, rule_id: str, reason: str) -> None:
        self.stats.skipped += 1
        self._metrics.event_skipped(rule_id, reason)

    # -- sending ------------------------------------------------------------------------------

    def submit(self, batches: list[Batch[Ticket]]) -> None:
        for batch in batches:
            future = self._executor.submit(self._send, batch)
            future.add_done_callback(self._done.put)
            self._in_flight += 1
            self.stats.requests += 1

    def _send(self, batch: Batch[Ticket]) -> tuple[Batch[Ticket], list[RecipientResult]]:
        try:
            return batch, self._sender.send_batch(batch.key, batch.recipients)
        except ClientClosedError:
            return batch, []  # shutting down mid-wait: leave unsettled, re-read after restart
        except Exception as exc:  # a bug in the client must not lose the batch: dead-letter it
            log.exception("send_batch failed unexpectedly for %s", batch.key.label)
            now = datetime.now(UTC)
            failed = [
                RecipientResult(i, "exhausted", None, f"internal error: {exc!r}", 0, now, None)
                for i in range(len(batch.items))
            ]
            return batch, failed

    def tick(self, now_ms: int, wait_s: float = 0.0) -> None:
        """Settle finished requests (waiting up to `wait_s` for one), deliver dead-letter
        acknowledgements, and send the partial batches that are due."""
        self.collect(wait_s)
        self.service_dead_letters()
        self.submit(self.batcher.due(now_ms))

    def collect(self, timeout_s: float = 0.0) -> int:
        """Settle finished requests; waits up to `timeout_s` for the first one. Returns how many."""
        count = 0
        block = timeout_s > 0
        while True:
            try:
                future = self._done.get(block=block, timeout=timeout_s if block else None)
            except queue.Empty:
                return count
            block = False
            self._in_flight -= 1
            count += 1
            batch, results = future.result()
            self._settle_batch(batch, results)

    def _settle_batch(self, batch: Batch[Ticket], results: list[RecipientResult]) -> None:
        for result in results:
            item = batch.items[result.index]
            if result.outcome == "sent":
                self._consecutive_dead = 0
                self.stats.recipients_sent += 1  # metrics count them in request_done
                self._settle(item.token)
                continue
            reason = (
                Reason.BRAZE_REJECTED if result.outcome == "rejected" else Reason.RETRIES_EXHAUSTED
            )
            letter = DeadLetter(
                item.token.raw,
                reason,
                result.error,
                rule_id=item.intent.rule_id,
                http_status=result.http_status,
                attempts=result.attempts,
                first_failed_at=result.first_failed_at,
            )
            self._dead_letter(letter, item.token)

    @property
    def in_flight_requests(self) -> int:
        return self._in_flight

    # -- dead letters -------------------------------------------------------------------------

    def _dead_letter(self, letter: DeadLetter, ticket: Ticket) -> None:
        self._consecutive_dead += 1
        if self._consecutive_dead > self._max_consecutive_dead:
            raise HaltError(
                f"{self._consecutive_dead} consecutive dead letters (last: {letter.reason} "
                f"for rule {letter.rule_id}); stopping instead of dead-lettering all traffic"
            )
        log.info(
            "dead letter %s rule=%s %s[%d]@%d",
            letter.reason,
            letter.rule_id,
            ticket.tp[0],
            ticket.tp[1],
            ticket.offset,
        )
        self._write_dead_letter(_Retry(letter, ticket, 0))

    def _write_dead_letter(self, retry: _Retry) -> None:
        stamped = retry.letter
        if stamped.failed_at is None:
            stamped = _stamp(stamped)
            retry.letter = stamped

        def on_done(error: str | None) -> None:
            self._dlq_unacked -= 1
            if error is None:
                reason = retry.letter.reason
                self.stats.dead_lettered[reason] = self.stats.dead_lettered.get(reason, 0) + 1
                self._metrics.dead_lettered(retry.letter.rule_id, reason)
                self._settle(retry.ticket)
                return
            # Never drop: keep the unit unsettled (the partition stops advancing) and try again.
            self._metrics.dlq_write_failed()
            log.error("dead-letter write failed (attempt %d): %s", retry.attempt, error)
            delay_ms = min(30_000, 500 * 2 ** min(retry.attempt, 6))
            retry.attempt += 1
            retry.due_ms = self._wall_ms() + delay_ms
            self._dlq_retries.append(retry)

        self._dlq_unacked += 1
        self._dead_letters.write(stamped, on_done)

    def service_dead_letters(self) -> None:
        """Deliver acknowledgements (callbacks run here) and re-send failed dead-letter writes."""
        self._dead_letters.poll(0.0)
        if not self._dlq_retries:
            return
        now = self._wall_ms()
        due = [r for r in self._dlq_retries if r.due_ms <= now]
        self._dlq_retries = [r for r in self._dlq_retries if r.due_ms > now]
        for retry in due:
            if self._generations.get(retry.ticket.tp) == retry.ticket.generation:
                self._write_dead_letter(retry)  # else: revoked; the new owner re-reads the event

    @property
    def dead_letters_unacked(self) -> int:
        return self._dlq_unacked + len(self._dlq_retries)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _stamp(letter: DeadLetter) -> DeadLetter:
    now = datetime.now(UTC)
    return dataclasses.replace(letter, first_failed_at=letter.first_failed_at or now, failed_at=now)

"""Stage 5 (dead letters): write each dead letter until Kafka acknowledges it, never dropping one.

`DeadLetterWriter.write(letter, on_acked)` stamps the record, hands it to the sink (the producer in
`kafka_io`) and calls `on_acked()` only after the broker acknowledged it; that is when the event's
offset may settle. A failed write is retried on a backoff (the partition stops advancing meanwhile);
`is_current` lets a retry be dropped once its partition was revoked (the new owner re-reads it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consumer.clock import Clock, utc
from consumer.deadletter import DeadLetter
from consumer.metrics import Metrics

log = logging.getLogger(__name__)


class DeadLetterSink(Protocol):
    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None: ...
    def poll(self, timeout_s: float = 0.0) -> int: ...


@dataclass
class _Write:
    letter: DeadLetter
    on_acked: Callable[[], None]
    is_current: Callable[[], bool]
    due_s: float = 0.0
    attempt: int = 1


class DeadLetterWriter:
    def __init__(self, sink: DeadLetterSink, clock: Clock, metrics: Metrics) -> None:
        self._sink = sink
        self._clock = clock
        self._metrics = metrics
        self._retries: list[_Write] = []
        self._unacked = 0
        self.written: dict[str, int] = {}  # acknowledged, by reason

    def write(
        self, letter: DeadLetter, on_acked: Callable[[], None], is_current: Callable[[], bool]
    ) -> None:
        self._write(_Write(_stamp(letter, self._clock), on_acked, is_current))

    def service(self) -> None:
        """Deliver acknowledgements (callbacks run here) and re-send failed writes that are due."""
        self._sink.poll(0.0)
        if not self._retries:
            return
        now_s = self._clock.monotonic_s()
        due = [w for w in self._retries if w.due_s <= now_s]
        self._retries = [w for w in self._retries if w.due_s > now_s]
        for retry in due:
            if retry.is_current():
                self._write(retry)

    @property
    def unacked(self) -> int:
        return self._unacked + len(self._retries)

    def _write(self, write: _Write) -> None:
        def on_done(error: str | None) -> None:
            self._unacked -= 1
            if error is None:
                reason = write.letter.reason
                self.written[reason] = self.written.get(reason, 0) + 1
                self._metrics.dead_lettered(write.letter.rule_id, reason)
                write.on_acked()
                return
            # Never drop: keep the unit unsettled (the partition stops advancing) and try again.
            self._metrics.dlq_write_failed()
            log.error("dead-letter write failed (attempt %d): %s", write.attempt, error)
            write.due_s = self._clock.monotonic_s() + min(30.0, 0.5 * 2 ** min(write.attempt, 6))
            write.attempt += 1
            self._retries.append(write)

        self._unacked += 1
        self._sink.write(write.letter, on_done)


def _stamp(letter: DeadLetter, clock: Clock) -> DeadLetter:
    now = utc(clock.wall_s())
    return dataclasses.replace(letter, first_failed_at=letter.first_failed_at or now, failed_at=now)

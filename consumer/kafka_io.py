"""The only module that talks to confluent-kafka: the group consumer and the dead-letter producer.

Everything crossing this boundary is a plain type (`RawMessage`, `(topic, partition)` tuples,
`Commit`, `DeadLetter`), so the pipeline is tested against a real broker without knowing librdkafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from consumer.deadletter import DeadLetter
from consumer.events import KafkaMeta, RawMessage
from consumer.logs import librdkafka_logger, said_by_librdkafka
from consumer.offsets import Commit
from consumer.offsets import TopicPartition as PartitionKey
from consumer.settings import ClientValue

log = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[PartitionKey]], None]
# Fresh watermarks (asked while paused): one ask, and a whole round, waits at most this long.
_FRESH_TIMEOUT_S = 0.5
_FRESH_BUDGET_S = 1.0


class KafkaFatalError(Exception):
    """The client cannot go on (fatal librdkafka error, authentication failure)."""


class KafkaConfigError(ValueError):
    """librdkafka refused the configuration (an unknown or invalid property): a start-up error."""


def _client(kind: type[Any], config: dict[str, Any]) -> Any:
    """A librdkafka Consumer or Producer; its configuration errors as one clear line. Its own
    log lines go through Python logging (`librdkafka`), not straight to stderr."""
    try:
        return kind({**config, "logger": librdkafka_logger()})
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if isinstance(error, KafkaError) else str(error)
        raise KafkaConfigError(f"kafka client settings: {text}") from None


@dataclass
class RebalanceHandlers:
    on_assign: PartitionsCallback
    on_revoke: PartitionsCallback
    on_lost: PartitionsCallback


class KafkaSource:
    """A consumer-group member with manual commits; callbacks run inside `consume()`."""

    def __init__(self, config: dict[str, ClientValue], handlers: RebalanceHandlers) -> None:
        full: dict[str, Any] = dict(config)
        full["error_cb"] = self._on_error
        self._consumer = _client(Consumer, full)
        self._handlers = handlers
        self._fatal: str | None = None

    def subscribe(self, topics: Iterable[str]) -> None:
        self._consumer.subscribe(
            sorted(topics),
            on_assign=lambda _c, parts: self._handlers.on_assign(_tps(parts)),
            on_revoke=lambda _c, parts: self._handlers.on_revoke(_tps(parts)),
            on_lost=lambda _c, parts: self._handlers.on_lost(_tps(parts)),
        )

    def consume(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        """Up to `max_messages` messages, returning as soon as there is one (waiting up to
        `timeout_s` for it); transient errors are logged, fatal ones raise."""
        # librdkafka's consume(n, timeout) waits for n messages or the whole timeout: at a low
        # rate every event would sit out the timeout before its batch clock even started. So:
        # what is queued now; else wait for one message, then take what queued behind it.
        consumer = self._consumer
        messages = consumer.consume(num_messages=max_messages, timeout=0)
        if not messages and timeout_s > 0:
            messages = consumer.consume(num_messages=1, timeout=timeout_s)
            if messages and max_messages > 1:
                messages.extend(consumer.consume(num_messages=max_messages - 1, timeout=0))
        if self._fatal is not None:
            raise KafkaFatalError(self._fatal)
        out: list[RawMessage] = []
        for message in messages:
            error = message.error()
            if error is None:
                out.append(_raw(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                if error.fatal():
                    raise KafkaFatalError(error.str())
                log.warning("kafka consume error: %s", error.str())
        return out

    def pause(self, tps: Sequence[PartitionKey]) -> None:
        if tps:
            self._consumer.pause([TopicPartition(t, p) for t, p in tps])

    def resume(self, tps: Sequence[PartitionKey]) -> None:
        if tps:
            self._consumer.resume([TopicPartition(t, p) for t, p in tps])

    def commit(self, commits: Mapping[PartitionKey, Commit], *, asynchronous: bool) -> bool:
        """Commit each partition's next offset to read, with its metadata (settled ranges beyond
        it, `consumer.progress`). Returns False when it could not be sent, or (synchronous) when
        the broker refused it.

        An asynchronous commit's answer is not asked for: librdkafka's `on_commit` callback is
        served inside `consume()`, and after a blocking call made in a rebalance callback
        (`committed()`, a synchronous commit) confluent-kafka 2.16 aborts the process when it
        serves one. The loop repeats its latest commits instead (`ConsumerService`)."""
        if not commits:
            return True
        parts = [
            TopicPartition(t, p, c.offset, metadata=c.metadata) for (t, p), c in commits.items()
        ]
        try:
            answered = self._consumer.commit(offsets=parts, asynchronous=asynchronous)
        except KafkaException as exc:
            log.warning("offset commit failed: %s", _message(exc))
            return False
        if asynchronous:
            return True
        refused = [part for part in answered or () if part.error is not None]
        for part in refused[:1]:
            log.warning(
                "offset commit refused for %s[%d]: %s", part.topic, part.partition, part.error
            )
        return not refused

    def committed(
        self, tps: Sequence[PartitionKey], timeout_s: float
    ) -> dict[PartitionKey, Commit]:
        """The group's committed offset and metadata per partition; those without one left out.

        Works inside the on_assign callback (tested against a real broker). A failure is logged
        and yields {}: the caller then re-processes from the committed position, merely slower.
        """
        if not tps:
            return {}
        wanted = [TopicPartition(t, p) for t, p in tps]
        try:
            found = self._consumer.committed(wanted, timeout=timeout_s)
        except KafkaException as exc:
            log.warning("reading committed offsets failed: %s", _message(exc))
            return {}
        out: dict[PartitionKey, Commit] = {}
        for part in found:
            if part.error is not None:
                log.warning(
                    "committed offset of %s[%d]: %s", part.topic, part.partition, part.error
                )
            elif part.offset >= 0:  # OFFSET_INVALID: nothing committed yet
                out[(part.topic, part.partition)] = Commit(
                    offset=part.offset, metadata=part.metadata or ""
                )
        return out

    def watermarks(
        self, tps: Sequence[PartitionKey], *, fresh: bool = False
    ) -> dict[PartitionKey, tuple[int, int]]:
        """(low, high) watermark per partition: from the last fetch (no broker call), or `fresh`
        from the broker (a paused partition fetches nothing, so its cached figure stands still).
        Partitions without a known figure are left out.

        Fresh figures are asked on the consumer loop, so a round is bounded: once one ask fails
        (the broker is down or slow), or `_FRESH_BUDGET_S` is spent, the rest are cached figures.
        Without that, a broker outage during a hold blocked the loop 2 s per partition."""
        marks: dict[PartitionKey, tuple[int, int]] = {}
        deadline = time.monotonic() + _FRESH_BUDGET_S
        for topic, partition in tps:
            tp = TopicPartition(topic, partition)
            found = None
            if fresh and time.monotonic() < deadline:
                try:
                    found = self._consumer.get_watermark_offsets(
                        tp, timeout=_FRESH_TIMEOUT_S, cached=False
                    )
                except KafkaException:
                    deadline = 0.0  # the broker does not answer: cached figures from here on
            if found is None:
                try:
                    found = self._consumer.get_watermark_offsets(tp, cached=True)
                except KafkaException:
                    continue
            low, high = found
            if high >= 0:
                marks[(topic, partition)] = (max(low, 0), high)
        return marks

    def partition_counts(self, topics: Iterable[str], timeout_s: float) -> dict[str, int]:
        """Each topic's partition count from the cluster's metadata (works inside a rebalance
        callback); a topic the metadata does not show (yet) is left out, a failure logged."""
        counts: dict[str, int] = {}
        for topic in sorted(topics):
            try:
                found = self._consumer.list_topics(topic=topic, timeout=timeout_s).topics
            except KafkaException as exc:
                log.warning("partition count of %s unknown: %s", topic, _message(exc))
                continue
            meta = found.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                counts[topic] = len(meta.partitions)
        return counts

    def close(self) -> None:
        self._consumer.close()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error.str()
        # A broker failure reaches here right after librdkafka's own line (FAIL) said it.
        said = said_by_librdkafka(error.str())
        level = logging.DEBUG if said else logging.ERROR if error.fatal() else logging.WARNING
        log.log(level, "kafka client error: %s", error.str())


class DeadLetterProducer:
    """Idempotent producer (acks=all) for dead letters. `on_done(error)` runs inside `poll()`."""

    def __init__(self, config: dict[str, ClientValue], topic: str) -> None:
        self._producer = _client(Producer, dict(config))
        self._topic = topic

    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None:
        """Queue the record; `on_done(None)` once acknowledged, `on_done(message)` if it failed."""

        def delivered(error: KafkaError | None, _message: Message[bytes, bytes]) -> None:
            on_done(None if error is None else error.str())

        raw = letter.raw
        try:
            self._producer.produce(
                self._topic,
                value=raw.value,
                key=raw.meta.key,
                headers=list[tuple[str, str | bytes | None]](letter.headers()),
                on_delivery=delivered,
            )
        except (BufferError, KafkaException) as exc:
            on_done(f"dead-letter produce refused: {exc}")

    def poll(self, timeout_s: float = 0.0) -> int:
        return int(self._producer.poll(timeout_s))

    def flush(self, timeout_s: float) -> int:
        """Messages still unacknowledged after `timeout_s`."""
        return int(self._producer.flush(timeout_s))


def _message(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _tps(parts: list[TopicPartition]) -> list[PartitionKey]:
    return [(p.topic, p.partition) for p in parts]


def _raw(message: Message[bytes, bytes]) -> RawMessage:
    _kind, timestamp = message.timestamp()
    found = message.headers()
    headers: tuple[tuple[str, bytes | None], ...] = ()
    if found:
        pairs = found.items() if isinstance(found, dict) else found
        headers = tuple((name, _bytes(value)) for name, value in pairs)
    meta = KafkaMeta(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        timestamp if timestamp and timestamp > 0 else None,
        headers,
    )
    return RawMessage(meta, message.value())


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value


class TopicReader:
    """Reads every partition of one topic, without a consumer group, from `start_offset` up to
    the end offsets seen when it was opened (records written later are not read)."""

    def __init__(self, config: dict[str, ClientValue], topic: str, start_offset: int) -> None:
        self._consumer = _client(Consumer, {**config, "enable.partition.eof": True})
        metadata = self._consumer.list_topics(topic, timeout=30)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaFatalError(f"topic {topic} not found")
        self.starts: dict[PartitionKey, int] = {}
        self.ends: dict[PartitionKey, int] = {}
        for partition in sorted(found.partitions):
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30
            )
            self.starts[(topic, partition)] = max(low, start_offset)
            self.ends[(topic, partition)] = high
        self._open = {tp for tp, end in self.ends.items() if end > self.starts[tp]}
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.starts.items()])

    @property
    def done(self) -> bool:
        return not self._open

    def read(self, max_messages: int, timeout_s: float) -> list[RawMessage]:
        out: list[RawMessage] = []
        for message in self._consumer.consume(num_messages=max_messages, timeout=timeout_s):
            tp = (message.topic() or "", message.partition() or 0)
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaFatalError(error.str())
            if error is None and (message.offset() or 0) < self.ends.get(tp, 0):
                out.append(_raw(message))
            if error is not None or (message.offset() or 0) + 1 >= self.ends.get(tp, 0):
                self._open.discard(tp)
        return out

    def close(self) -> None:
        self._consumer.close()

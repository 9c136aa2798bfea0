"""Test support: create topics, produce and read back messages on the real integration broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.events import KafkaMeta, RawMessage

Headers = Sequence[tuple[str, bytes | None]]
# librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks (by key hash, or at random).
ANY_PARTITION = -1


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker stored one produced message."""

    partition: int
    offset: int


def unique_name(prefix: str) -> str:
    """A topic or group name no other test (or earlier run on a kept broker) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout_s: float = 30.0) -> None:
    """Create the topic and return once the metadata shows every partition with a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topic = NewTopic(name, num_partitions=partitions, replication_factor=1)
    futures = admin.create_topics([new_topic], operation_timeout=timeout_s)
    futures[name].result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _leaders_ready(admin, name, partitions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name!r} has no leader for all {partitions} partitions")


def _leaders_ready(admin: AdminClient, name: str, partitions: int) -> bool:
    topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
    if topic is None or topic.error is not None or len(topic.partitions) != partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())


@dataclass(frozen=True, slots=True)
class _Deliveries:
    """The producer's delivery callback: what the broker stored, and what failed."""

    stored: list[Delivered] = field(default_factory=list)
    errors: list[KafkaError] = field(default_factory=list)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.stored.append(Delivered(_known(msg.partition()), _known(msg.offset())))


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    key: bytes | None = None,
    keys: Sequence[bytes | None] | None = None,
    headers: Headers | None = None,
    partition: int | None = None,
    timeout_s: float = 30.0,
) -> list[Delivered]:
    """Produce `values` in order (one `key` for all, or one of `keys` each); raise on failure.

    Returns where each message was stored, in delivery order.
    """
    msg_keys = list(keys) if keys is not None else [key] * len(values)
    if len(msg_keys) != len(values):
        raise ValueError(f"{len(msg_keys)} keys for {len(values)} values")
    header_list: list[tuple[str, str | bytes | None]] | None = (
        None if headers is None else list(headers)
    )
    # Idempotence keeps each partition in produce order even if a request is retried.
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    deliveries = _Deliveries()
    for value, msg_key in zip(values, msg_keys, strict=True):
        producer.produce(
            topic,
            value,
            msg_key,
            partition=ANY_PARTITION if partition is None else partition,
            on_delivery=deliveries,
            headers=header_list,
        )
    left = producer.flush(timeout_s)
    if deliveries.errors:
        raise KafkaException(deliveries.errors[0])
    if left or len(deliveries.stored) != len(values):
        raise TimeoutError(f"{left} of {len(values)} messages not delivered in {timeout_s}s")
    return deliveries.stored


def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[RawMessage]:
    """Read the topic from the start until `expected` messages arrived or `timeout_s` passed.

    Returns what arrived, in partition-then-offset order, so a test asserts on the count itself.
    Partitions are assigned, not subscribed: no group join to wait for, and nothing is committed.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("kafka-helpers-read"),
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        received = poll_messages(consumer, expected, timeout_s)
    finally:
        consumer.close()
    return sorted(received, key=lambda m: (m.meta.partition, m.meta.offset))


def poll_messages(consumer: Consumer, expected: int, timeout_s: float) -> list[RawMessage]:
    """Poll until `expected` messages or `timeout_s`; never more than `expected` (none skipped)."""
    deadline = time.monotonic() + timeout_s
    received: list[RawMessage] = []
    while len(received) < expected and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=expected - len(received), timeout=0.5)
        for msg in batch:
            if msg.error() is not None:
                raise KafkaException(msg.error())
            received.append(to_raw_message(msg))
    return received


def to_raw_message(msg: Message) -> RawMessage:
    """A consumed confluent_kafka Message as the pipeline's RawMessage."""
    _, timestamp_ms = msg.timestamp()
    meta = KafkaMeta(
        topic=msg.topic() or "",
        partition=_known(msg.partition()),
        offset=_known(msg.offset()),
        key=msg.key(),
        timestamp_ms=timestamp_ms,
        headers=_headers(msg),
    )
    return RawMessage(meta=meta, value=msg.value())


def _known(number: int | None) -> int:
    # The client leaves these unset only on error events, which callers have already raised.
    if number is None:
        raise ValueError("message without partition/offset")
    return number


def _headers(msg: Message) -> tuple[tuple[str, bytes | None], ...]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, v.encode() if isinstance(v, str) else v) for name, v in pairs)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic`; never-committed ones left out."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        wanted = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = consumer.committed(wanted, timeout=10)
    finally:
        consumer.close()
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

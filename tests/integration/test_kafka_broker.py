"""Proves the integration broker is a real Kafka: group offsets, watermarks, restarts."""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.events import RawMessage
from tests.integration.conftest import KafkaBroker
from tests.integration.kafka_helpers import (
    committed_offsets,
    consume_all,
    create_topic,
    poll_messages,
    produce,
    unique_name,
)


def _consume_in_group(bootstrap: str, group: str, topic: str, count: int) -> list[RawMessage]:
    """Take `count` messages as a member of `group`, commit them synchronously, leave the group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        received = poll_messages(consumer, count, timeout_s=30.0)
        if received:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received


def _produce_round_robin(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    for partition in range(partitions):
        produce(bootstrap, topic, values[partition::partitions], partition=partition)


def _next_offsets(messages: list[RawMessage]) -> dict[int, int]:
    """Per partition, the offset after the last message: what a commit of them must store."""
    offsets: dict[int, int] = {}
    for msg in messages:
        offsets[msg.meta.partition] = max(offsets.get(msg.meta.partition, 0), msg.meta.offset + 1)
    return offsets


@pytest.mark.parametrize(
    ("partitions", "total", "first_take"),
    [
        pytest.param(1, 20, 7, id="one partition"),
        pytest.param(3, 30, 11, id="three partitions"),
        pytest.param(2, 10, 1, id="one message taken"),
    ],
)
def test_group_resumes_exactly_at_committed_offsets(
    kafka_bootstrap: str, partitions: int, total: int, first_take: int
) -> None:
    topic, group = unique_name("resume"), unique_name("resume-group")
    create_topic(kafka_bootstrap, topic, partitions)
    values = [b"message-%03d" % i for i in range(total)]
    _produce_round_robin(kafka_bootstrap, topic, values, partitions)

    first = _consume_in_group(kafka_bootstrap, group, topic, first_take)
    assert len(first) == first_take
    assert committed_offsets(kafka_bootstrap, group, topic) == _next_offsets(first)

    second = _consume_in_group(kafka_bootstrap, group, topic, total - first_take)
    committed = _next_offsets(first)
    for msg in second:
        assert msg.meta.offset >= committed.get(msg.meta.partition, 0), msg.meta
    # Nothing lost, nothing read twice.
    assert Counter(m.value for m in first + second) == Counter(values)
    assert committed_offsets(kafka_bootstrap, group, topic) == {
        p: len(values[p::partitions]) for p in range(partitions)
    }


@pytest.mark.parametrize("partitions", [pytest.param(1, id="one"), pytest.param(4, id="four")])
def test_watermarks_count_every_produced_message(kafka_bootstrap: str, partitions: int) -> None:
    topic = unique_name("watermarks")
    create_topic(kafka_bootstrap, topic, partitions)
    values = [b"w-%d" % i for i in range(13)]
    _produce_round_robin(kafka_bootstrap, topic, values, partitions)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_name("wm")})
    try:
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(partitions)
        }
    finally:
        consumer.close()
    assert marks == {p: (0, len(values[p::partitions])) for p in range(partitions)}
    assert sum(high for _, high in marks.values()) == len(values)


def test_keys_and_headers_arrive_unchanged(kafka_bootstrap: str) -> None:
    topic = unique_name("headers")
    create_topic(kafka_bootstrap, topic)
    headers = [("trace-id", b"abc"), ("empty", None)]
    delivered = produce(kafka_bootstrap, topic, [b"v1", b"v2"], keys=[b"k1", None], headers=headers)

    got = consume_all(kafka_bootstrap, topic, expected=2, timeout_s=20.0)
    assert [(d.partition, d.offset) for d in delivered] == [(0, 0), (0, 1)]
    assert [(m.meta.key, m.value) for m in got] == [(b"k1", b"v1"), (None, b"v2")]
    assert all(m.meta.headers == tuple(headers) for m in got)


# Last in this file: it restarts the session's shared broker (same port, same data).
def test_restart_keeps_messages_and_offsets_and_accepts_writes(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = unique_name("restart"), unique_name("restart-group")
    create_topic(bootstrap, topic)
    before = [b"before-%d" % i for i in range(5)]
    produce(bootstrap, topic, before)
    _consume_in_group(bootstrap, group, topic, 3)

    kafka_broker.restart()

    assert committed_offsets(bootstrap, group, topic) == {0: 3}
    after = [b"after-%d" % i for i in range(3)]
    produce(bootstrap, topic, after)
    assert [m.value for m in consume_all(bootstrap, topic, expected=8)] == before + after
    resumed = _consume_in_group(bootstrap, group, topic, 5)
    assert [m.value for m in resumed] == before[3:] + after

"""Proves the integration broker is a real Kafka: group offsets, watermarks, restarts."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.events import RawMessage
from consumer.kafka_io import KafkaSource, RebalanceHandlers
from consumer.offsets import Commit
from consumer.offsets import TopicPartition as PartitionKey
from consumer.progress import decode, encode
from tests.integration.conftest import KAFKA_LOCAL, KafkaBroker, _free_port_pair
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


@dataclass
class _Member:
    """A KafkaSource in `group` that reads the group's commits inside its on_assign callback."""

    bootstrap: str
    group: str
    assigned: list[PartitionKey] = field(default_factory=list)
    seen_on_assign: dict[PartitionKey, Commit] = field(default_factory=dict)
    source: KafkaSource = field(init=False)

    def __post_init__(self) -> None:
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        handlers = RebalanceHandlers(self._on_assign, lambda _tps: None, lambda _tps: None)
        self.source = KafkaSource(config, handlers)

    def _on_assign(self, tps: list[PartitionKey]) -> None:
        self.seen_on_assign = self.source.committed(tps, timeout_s=10.0)
        self.assigned.extend(tps)

    def read(self, topic: str, count: int) -> list[RawMessage]:
        """Join, then take `count` messages (or whatever came within 30 s)."""
        self.source.subscribe([topic])
        received: list[RawMessage] = []
        deadline = time.monotonic() + 30.0
        while len(received) < count and time.monotonic() < deadline:
            received += self.source.consume(count - len(received), timeout_s=0.5)
        return received


def test_commit_metadata_reaches_the_next_owner_in_on_assign(kafka_bootstrap: str) -> None:
    """Settled ranges committed by one member are read back by the next, inside on_assign."""
    topic, group = unique_name("progress"), unique_name("progress-group")
    create_topic(kafka_bootstrap, topic, partitions=2)
    for partition in range(2):
        produce(kafka_bootstrap, topic, [b"m-%d" % i for i in range(10)], partition=partition)
    p0, p1 = (topic, 0), (topic, 1)
    ranges = ((5, 7), (9, 10))
    first = _Member(kafka_bootstrap, group)
    try:
        assert len(first.read(topic, 20)) == 20
        assert first.seen_on_assign == {}  # nothing committed yet: every partition left out
        sent = {p0: Commit(offset=3, metadata=encode(3, ranges))}
        assert first.source.commit(sent, asynchronous=False)
        assert first.source.committed([p0, p1], timeout_s=10.0) == sent
    finally:
        first.source.close()

    second = _Member(kafka_bootstrap, group)
    try:
        received = second.read(topic, 17)
        assert sorted(second.assigned) == [p0, p1]
        assert second.seen_on_assign == sent
        assert decode(second.seen_on_assign[p0].metadata, 3) == ranges
        # It resumes at the committed offset of p0, from the start of never-committed p1.
        assert sorted((m.meta.partition, m.meta.offset) for m in received) == [
            *((0, o) for o in range(3, 10)),
            *((1, o) for o in range(10)),
        ]
        # A commit without ranges clears the metadata: no stale ranges outlive their offset.
        cleared = {p0: Commit(offset=10, metadata=""), p1: Commit(offset=10, metadata="")}
        assert second.source.commit(cleared, asynchronous=False)
        assert second.source.committed([p0, p1], timeout_s=10.0) == cleared
    finally:
        second.source.close()
    assert committed_offsets(kafka_bootstrap, group, topic) == {0: 10, 1: 10}


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


# Its own broker, not the session's: it may follow the restart test above.
def test_kafka_local_status_reports_the_running_brokers_port(tmp_path: Path) -> None:
    """`status` (and a second `start`) name the port the broker runs on, not KAFKA_PORT's."""
    port = _free_port_pair(random.Random())
    state = tmp_path / "kafka-local"

    def kafka_local(command: str, kafka_port: int) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KAFKA_PORT": str(kafka_port),
            "KAFKA_CONTROLLER_PORT": str(kafka_port + 1),
            "KAFKA_LOCAL_DIR": str(state),
            "KAFKA_OWNER_PID": str(os.getpid()),
            "KAFKA_PYTHON": sys.executable,
        }
        return subprocess.run(
            [str(KAFKA_LOCAL), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )

    other = port + 7  # what a later shell's KAFKA_PORT might say
    started = kafka_local("start", port)
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.splitlines()[-1] == f"127.0.0.1:{port}"
        status = kafka_local("status", other)
        assert status.returncode == 0, status.stderr
        assert re.fullmatch(rf"running 127\.0\.0\.1:{port} \(pid \d+\)\n", status.stdout)
        again = kafka_local("start", other)
        assert (again.returncode, again.stdout) == (0, f"127.0.0.1:{port}\n"), again.stderr
    finally:
        stopped = kafka_local("stop", other)
    assert stopped.returncode == 0, stopped.stderr
    after = kafka_local("status", port)
    assert (after.returncode, after.stdout) == (1, "not running\n")

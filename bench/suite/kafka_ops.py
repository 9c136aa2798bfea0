"""The suite's Kafka side: topics, the backlog, the paced producer and the ceiling consumer.

The ceiling, run (a), is this module as a subprocess (`python -m bench.suite.kafka_ops`): a
plain confluent-kafka Consumer with the service's own consumer settings (a fresh group) that
reads the whole topic and `json.loads` each value, and nothing else.

`--tuned` adds one setting the service lacks (unless it sets it by then): librdkafka's fetcher
waits `fetch.queue.backoff.ms` (default 1,000 ms) whenever its prefetch queue is full, and the
service bounds that queue (kafka.prefetch_kbytes, 16 MiB), so a consumer that empties 16 MiB in
less than a second then idles for the rest of it. Measured here: 33-47k events/s with the
service's settings, 55-128k with 10 ms. The table's ceiling is the tuned one.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.suite.workload import Mix, events, make_event
from consumer.settings import Settings, kafka_consumer_config

PARTITIONS = 6
CONSUME_BATCH = 500  # as the service's loop asks for
TUNED_FETCH_QUEUE_BACKOFF_MS = 10


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # warnings and up
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def produce_backlog(bootstrap: str, topic: str, count: int, mix: Mix) -> None:
    """All `count` events of `mix`, acknowledged, before anything timed starts."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    _produce_all(producer, topic, events(count, mix))
    if producer.flush(120):
        raise RuntimeError(f"backlog of {topic}: messages left unacknowledged after 120 s")


def _produce_all(producer: Producer, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)


def produce_paced(
    bootstrap: str, topic: str, rate_per_s: float, seconds: float, first_index: int = 0
) -> int:
    """`rate_per_s` events a second for `seconds`, each stamped (CreateTime) as it is produced;
    returns how many. librdkafka's default linger (5 ms) applies, as for a typical producer."""
    producer = Producer({"bootstrap.servers": bootstrap})
    rng = random.Random(first_index)
    count = round(rate_per_s * seconds)
    started = time.monotonic()
    for n in range(count):
        delay = started + n / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        key, value = make_event(rng, first_index + n, Mix.ALL)
        producer.produce(topic, value, key=key)
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError(f"paced events to {topic}: left unacknowledged after 30 s")
    return count


class DeliveryProbe:
    """A plain consumer of the latency run's topic in its own group, on a thread: per event, the
    Kafka timestamp and when it arrived here (epoch ms), so the run can say how much of the
    service's latency Kafka alone accounts for."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        settings = Settings.model_validate(
            {"kafka": {"bootstrap_servers": bootstrap, "group_id": f"probe-{topic}"}}
        )
        self._consumer = Consumer(kafka_consumer_config(settings))
        self._consumer.subscribe([topic])
        self.arrivals: list[tuple[int, float]] = []  # (Kafka timestamp ms, received ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-probe", daemon=True)

    def __enter__(self) -> DeliveryProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()

    def _run(self) -> None:
        # poll(), not consume(n, timeout): consume waits for n messages or the whole timeout,
        # which at 200 events/s would add up to the timeout to every reading.
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is not None and message.error() is None:
                self.arrivals.append((message.timestamp()[1], time.time() * 1000))


def ceiling_config(bootstrap: str, group: str, *, tuned: bool) -> dict[str, object]:
    """The service's librdkafka consumer settings; `tuned`: with a short fetch queue backoff,
    unless the service sets one itself."""
    settings = Settings.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, "group_id": group}}
    )
    config: dict[str, object] = dict(kafka_consumer_config(settings))
    if tuned:
        config.setdefault("fetch.queue.backoff.ms", TUNED_FETCH_QUEUE_BACKOFF_MS)
    return config


def service_sets_fetch_backoff() -> bool:
    return "fetch.queue.backoff.ms" in ceiling_config("127.0.0.1:9092", "g", tuned=False)


def read_all(
    bootstrap: str, topic: str, count: int, timeout_s: float, *, tuned: bool
) -> dict[str, float]:
    """Reads `count` messages as a fresh group, decoding each. The rate's interval runs from the
    end of the first batch to the end of the last, and counts the events read in it."""
    group = f"ceiling-{topic}-{'tuned' if tuned else 'exact'}"
    consumer = Consumer(ceiling_config(bootstrap, group, tuned=tuned))
    consumer.subscribe([topic])
    seen, first_batch, first_s, last_s = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=0.5):
                if message.error() is not None:
                    continue
                json.loads(message.value() or b"null")
                seen += 1
            if seen:
                last_s = time.time()
            if seen and not first_batch:
                first_batch, first_s = seen, last_s
    finally:
        consumer.close()
    return {"events": seen, "counted": seen - first_batch, "first_s": first_s, "last_s": last_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the suite's ceiling run (a)")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--tuned", action="store_true", help="short fetch.queue.backoff.ms")
    args = parser.parse_args(argv)
    result = read_all(args.bootstrap, args.topic, args.events, args.timeout_s, tuned=args.tuned)
    print(json.dumps(result), flush=True)
    return 0 if result["events"] >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())

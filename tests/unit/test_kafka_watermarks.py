"""Fresh watermarks are asked on the consumer loop: a round stays bounded when the broker does
not answer (librdkafka's Consumer is built here but never connects; its calls are faked)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from consumer.kafka_io import KafkaSource, RebalanceHandlers


class DownBroker:
    """Fresh asks time out; cached figures answer at once."""

    def __init__(self) -> None:
        self.fresh_asks = 0

    def get_watermark_offsets(self, tp: Any, timeout: float = -1, cached: bool = False) -> Any:
        if not cached:
            self.fresh_asks += 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return (0, 100 + tp.partition)


def _source() -> KafkaSource:
    noop = RebalanceHandlers(lambda _: None, lambda _: None, lambda _: None)
    return KafkaSource({"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}, noop)


def test_one_unanswered_fresh_ask_makes_the_rest_of_the_round_cached() -> None:
    source = _source()
    broker = DownBroker()
    source._consumer.close()
    source._consumer = broker
    marks = source.watermarks([("t", p) for p in range(6)], fresh=True)
    assert broker.fresh_asks == 1
    assert marks == {("t", p): (0, 100 + p) for p in range(6)}

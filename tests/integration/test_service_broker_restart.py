"""The service across a Kafka broker restart (runs after the other integration tests: it restarts
the session's broker)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from consumer.emulator.control import EmulatorControl
from consumer.emulator.server import start_emulator
from tests.integration.conftest import KafkaBroker
from tests.integration.kafka_helpers import committed_offsets
from tests.integration.service_helpers import (
    API_KEY,
    free_port,
    make_scenario,
    scrape_total,
    wait_until,
)


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int] | None:
    """The committed offsets, or None while the restarted broker's coordinator is loading (it
    answers NOT_COORDINATOR for a moment)."""
    try:
        return committed_offsets(bootstrap, group, topic)
    except KafkaException:
        return None


def test_broker_restart_mid_stream_loses_nothing(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    with start_emulator(api_keys=(API_KEY,)) as emulator:
        scenario = make_scenario(
            kafka_broker.bootstrap, tmp_path, EmulatorControl(emulator.url), emulator.url
        )
        config = scenario.config(batching__max_recipients=10)
        service = scenario.start(config, exit_when_idle_s=None)
        everyone = {f"u-{i}" for i in range(300)}
        try:
            scenario.produce_events([scenario.event(i) for i in range(200)])
            wait_until(lambda: len(scenario.sent_users()) >= 50, 60, "sending before the restart")
            kafka_broker.restart()
            scenario.produce_events([scenario.event(i) for i in range(200, 300)])
            wait_until(lambda: set(scenario.sent_users()) == everyone, 120, "all 300 sent")
            wait_until(
                lambda: (
                    _committed(kafka_broker.bootstrap, scenario.group, scenario.topic) == {0: 300}
                ),
                60,
                "offsets committed after the restart",
            )
            service.signal(signal.SIGTERM)
            assert service.wait(60) == 0, service.log()
        finally:
            service.ensure_stopped()

        assert set(scenario.sent_users()) == {f"u-{i}" for i in range(300)}
        assert committed_offsets(kafka_broker.bootstrap, scenario.group, scenario.topic) == {0: 300}


def test_commit_refused_while_the_broker_is_down_is_made_again(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Sends settle while the broker is down, so their commit is refused or held back by
    librdkafka (timing decides which); nothing is read after the broker is back, and still the
    offsets are committed (the loop repeats its latest commits for a while after news)."""
    if kafka_broker.local is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS points at a broker these tests did not start")
    with start_emulator(api_keys=(API_KEY,)) as emulator:
        control = EmulatorControl(emulator.url)
        scenario = make_scenario(kafka_broker.bootstrap, tmp_path, control, emulator.url)
        control.set_faults(latency_ms=(8000, 8000))  # answers land while the broker is down
        port = free_port()
        config = scenario.config(
            batching__max_recipients=10,
            batching__max_wait_ms=100,
            braze__read_timeout_ms=20_000,
            metrics__port=port,
        )
        service = scenario.start(config, exit_when_idle_s=None)
        everyone = {f"u-{i}" for i in range(20)}
        in_flight = "braze_consumer_in_flight_requests"
        try:
            scenario.produce_events([scenario.event(i) for i in range(20)])
            wait_until(lambda: scrape_total(port, in_flight) >= 1, 30, "requests sent")
            kafka_broker.local.stop(keep_data=True)
            try:
                wait_until(lambda: set(scenario.sent_users()) == everyone, 60, "all 20 answered")
                time.sleep(3)  # the service tries to commit them while the broker is down
            finally:
                kafka_broker.local.start(keep_data=True)
            wait_until(
                lambda: (
                    _committed(kafka_broker.bootstrap, scenario.group, scenario.topic) == {0: 20}
                ),
                60,
                "the refused commit made again",
            )
            service.signal(signal.SIGTERM)
            assert service.wait(60) == 0, service.log()
        finally:
            service.ensure_stopped()

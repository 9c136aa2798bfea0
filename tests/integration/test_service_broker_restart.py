"""The service across a Kafka broker restart (runs after the other integration tests: it restarts
the session's broker)."""

from __future__ import annotations

import signal
from pathlib import Path

from consumer.emulator.control import EmulatorControl
from consumer.emulator.server import start_emulator
from tests.integration.conftest import KafkaBroker
from tests.integration.kafka_helpers import committed_offsets
from tests.integration.service_helpers import API_KEY, make_scenario, wait_until


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
                    committed_offsets(kafka_broker.bootstrap, scenario.group, scenario.topic)
                    == {0: 300}
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

"""End-to-end throughput of `braze-consumer run`: real broker, emulator answering in 100-300 ms.

Runs the service over the same backlog once per `max_in_flight` value and prints events/s,
requests/s and recipients per request for each, in one run so the ratios are comparable.

    python -m bench.service_throughput [--events 20000] [--in-flight 8 24] [--latency-ms 100 300]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts (and stops) scripts/kafka-local on port 29192.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.local_broker import local_broker
from consumer.emulator.control import EmulatorControl
from consumer.emulator.server import start_emulator

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
IDLE_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--latency-ms", type=int, nargs=2, default=[100, 300])
    args = parser.parse_args()
    with (
        local_broker(29192, "kafka-bench") as bootstrap,
        start_emulator(api_keys=(API_KEY,)) as emulator,
    ):
        control = EmulatorControl(emulator.url)
        low, high = args.latency_ms
        print(f"{args.events} events, Braze latency {low}-{high} ms")
        print(f"{'in_flight':>9} {'events/s':>9} {'requests/s':>10} {'recipients/req':>14}")
        for in_flight in args.in_flight:
            control.reset()
            control.set_faults(latency_ms=(args.latency_ms[0], args.latency_ms[1]))
            row = run_once(bootstrap, emulator.url, control, args.events, in_flight)
            print(f"{in_flight:>9} {row[0]:>9.0f} {row[1]:>10.1f} {row[2]:>14.1f}", flush=True)
    return 0


def run_once(
    bootstrap: str, url: str, control: EmulatorControl, events: int, in_flight: int
) -> tuple[float, float, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=4)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(events):
        value = {"type": "signup", "data": {"user_id": f"u-{i}", "plan": "pro", "seq": i}}
        producer.produce(topic, json.dumps(value).encode())
        producer.poll(0)
    producer.flush(60)
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), bootstrap, url, topic, in_flight)
        started = time.monotonic()
        command = [sys.executable, "-m", "consumer", "run", "--config", str(config)]
        subprocess.run(
            [*command, "--exit-when-idle", str(IDLE_S), "--log-level", "WARNING"],
            cwd=REPO,
            env=dict(os.environ, BRAZE_API_KEY=API_KEY),
            check=True,
        )
        elapsed_s = time.monotonic() - started - IDLE_S
    stats = control.stats()
    requests = stats.accepted_requests
    return events / elapsed_s, requests / elapsed_s, stats.recipients_sent / max(requests, 1)


def write_config(tmp: Path, bootstrap: str, url: str, topic: str, in_flight: int) -> Path:
    rules = tmp / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "id": "welcome",
                        "topics": [topic],
                        "when": {"type": "signup"},
                        "canvas": {"id": "canvas-welcome"},
                        "recipient": {"external_user_id": "{{ data.user_id }}"},
                        "properties": {"plan": "{{ data.plan }}", "seq": "{{ data.seq }}"},
                    }
                ]
            }
        )
    )
    settings = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{topic}"},
        "braze": {"rest_endpoint": url, "max_in_flight": in_flight},
        "batching": {"max_buffered_events": 20_000},
        "rules": str(rules),
        "metrics": {"host": "127.0.0.1", "port": 0},
    }
    path = tmp / "consumer.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


if __name__ == "__main__":
    raise SystemExit(main())

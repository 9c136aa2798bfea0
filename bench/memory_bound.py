"""Peak memory of `braze-consumer run` while Braze is down and large events keep arriving.

With Braze answering 503 the service holds: nothing settles, so everything it reads stays in
memory until a limit pauses the partitions. This measures the peak RSS (VmHWM) of the service
over a backlog of large events, once with the default limits (max_buffered_bytes 32 MiB) and once
with the byte limit lifted (only max_buffered_events, as before it existed), in one run.

    python -m bench.memory_bound [--events 1500] [--event-kb 300] [--seconds 40]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts (and stops) scripts/kafka-local on port 29194.
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
API_KEY = "bench-key-memory"
RULES = """\
rules:
  - id: big
    topics: [{topic}]
    when: {{type: order.shipped}}
    canvas: {{id: canvas-big}}
    recipient:
      external_user_id: "{{{{ user }}}}"
    properties:
      order: "{{{{ order }}}}"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_500)
    parser.add_argument("--event-kb", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    with local_broker(29194, "kafka-bench-memory") as bootstrap:
        topic = f"bench-memory-{uuid.uuid4().hex[:8]}"
        create(bootstrap, topic)
        produce(bootstrap, topic, args.events, args.event_kb * 1024)
        print(f"{args.events} events of {args.event_kb} KB; Braze answers 503 throughout")
        print(f"{'limits':<44} {'peak RSS MB':>11} {'events read':>11}")
        for label, extra in [
            ("defaults (max_buffered_bytes 32 MiB)", {}),
            ("byte limit lifted (10,000 events only)", {"max_buffered_bytes": 2**40}),
        ]:
            peak_mb, read = run_once(bootstrap, topic, args.seconds, extra)
            print(f"{label:<44} {peak_mb:>11.0f} {read:>11}", flush=True)
    return 0


def create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"max.message.bytes": str(2 * 1_048_576)}
    futures = admin.create_topics([NewTopic(topic, 6, 1, config=config)])
    futures[topic].result(30)


def produce(bootstrap: str, topic: str, count: int, size: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2 * 1_048_576})
    pad = "x" * size
    for i in range(count):
        value = json.dumps({"type": "order.shipped", "user": f"u-{i}", "order": i, "pad": pad})
        while True:
            try:
                producer.produce(topic, value.encode(), key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.5)
    producer.flush(120)


def run_once(
    bootstrap: str, topic: str, seconds: float, batching: dict[str, int]
) -> tuple[float, int]:
    with start_emulator(api_keys=(API_KEY,)) as emulator, tempfile.TemporaryDirectory() as tmp:
        EmulatorControl(emulator.url).set_faults(error_share=1.0, error_statuses=[503])
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES.format(topic=topic), encoding="utf-8")
        settings = {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": f"g-{uuid.uuid4().hex[:8]}"},
            "braze": {"rest_endpoint": emulator.url},
            "batching": batching,
            "rules": str(rules),
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
        config = Path(tmp) / "consumer.yaml"
        config.write_text(yaml.safe_dump(settings), encoding="utf-8")
        log = Path(tmp) / "service.log"
        args = [sys.executable, "-m", "consumer", "run", "--config", str(config)]
        args += ["--summary-json", str(Path(tmp) / "summary.json")]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=REPO, env=dict(os.environ, BRAZE_API_KEY=API_KEY), stdout=out, stderr=out
            )
        peak_kb = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.5)
        peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
        proc.terminate()
        proc.wait(60)
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        return peak_kb / 1024, int(summary["consumed"])


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

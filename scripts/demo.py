"""`make demo`: the service end to end on a local Kafka broker, a local Schema Registry and the
Braze emulator.

Starts the three, creates the topics, produces the example events of config/events/ plus a load of
generated `order.shipped` events (JSON) and a few hundred `payment.captured` events written in Avro
through the registry (config/schemas/shop.payments-value.avsc), runs `braze-consumer run` until
every event is settled, prints a report, and stops everything it started (also on Ctrl-C or
failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.emulator.control import EmulatorControl
from consumer.rules import RulesTable, load_rules

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT = int(os.environ.get("DEMO_KAFKA_PORT", "29092"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
API_KEY = "demo-api-key"  # the emulator's; never a real Braze key
DLQ_TOPIC = "braze-consumer.dlq"
LOAD_EVENTS = int(os.environ.get("DEMO_LOAD_EVENTS", "5000"))
REGISTRY_PORT = int(os.environ.get("DEMO_SCHEMA_REGISTRY_PORT", "29081"))
AVRO_TOPIC = "shop.payments"  # its values are Avro records through the registry
AVRO_SCHEMA = REPO / "config" / "schemas" / f"{AVRO_TOPIC}-value.avsc"
AVRO_EVENTS = int(os.environ.get("DEMO_AVRO_EVENTS", "300"))
IDLE_S = 2.0


def main() -> int:
    kafka_env = dict(os.environ, KAFKA_PORT=str(KAFKA_PORT), KAFKA_OWNER_PID=str(os.getpid()))
    kafka_env["KAFKA_LOCAL_DIR"] = str(REPO / ".cache" / "kafka-demo")
    registry_env = dict(os.environ, SCHEMA_REGISTRY_PORT=str(REGISTRY_PORT))
    registry_env["SCHEMA_REGISTRY_LOCAL_DIR"] = str(REPO / ".cache" / "schema-registry-demo")
    registry_env["SCHEMA_REGISTRY_OWNER_PID"] = str(os.getpid())  # gone with us if we are killed
    registry_env["SCHEMA_REGISTRY_KEEP_DATA"] = "0"  # a fresh registry: the first schema is id 1
    emulator: subprocess.Popen[str] | None = None
    registry_started = False
    step("starting a local Kafka broker (first run downloads it with Maven)")
    subprocess.run([REPO / "scripts" / "kafka-local", "start"], env=kafka_env, check=True)
    try:
        step("starting a local Schema Registry (first run downloads it with Maven)")
        registry_started = True  # from here on, `stop` ends whatever part of it did start
        registry_url = start_registry(registry_env)
        step("starting the Braze emulator")
        emulator, url = start_emulator()
        rules = load_rules(REPO / "config" / "rules.yaml")
        create_topics(sorted(rules.topics))
        produced = produce_events(sorted(rules.topics))
        produced += produce_avro(registry_url)
        step(f"running braze-consumer on {produced} events (stops when all are settled)")
        summary, elapsed_s = run_service(url, registry_url)
        report(summary, elapsed_s, EmulatorControl(url), rules)
        return 0
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(10)
        if registry_started:
            step("stopping the Schema Registry")
            registry = REPO / "scripts" / "schema-registry-local"
            subprocess.run([registry, "stop"], env=registry_env, check=False)
        step("stopping the Kafka broker")
        subprocess.run([REPO / "scripts" / "kafka-local", "stop"], env=kafka_env, check=False)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def start_registry(env: dict[str, str]) -> str:
    """Starts this demo's registry (its own port and state dir); returns its Confluent URL."""
    started = time.monotonic()
    done = subprocess.run(
        [REPO / "scripts" / "schema-registry-local", "start"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    url = done.stdout.strip().splitlines()[-1]
    print(f"    schema registry at {url} ({time.monotonic() - started:.1f} s to start)")
    return url


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    # The key goes in the environment, never on a command line (`ps` shows those to everyone).
    args = [sys.executable, "-m", "consumer", "emulator", "--port", "0"]
    env = dict(os.environ, BRAZE_API_KEY=API_KEY)
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    url = line.rsplit(" ", 1)[-1]
    print(f"    {line}")
    return proc, url


def create_topics(topics: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    wanted = [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics]
    wanted.append(NewTopic(DLQ_TOPIC, num_partitions=1, replication_factor=1))
    for future in admin.create_topics(wanted).values():
        future.result(30)
    print(f"    topics: {', '.join(topics)} and {DLQ_TOPIC}")


def produce_events(topics: list[str]) -> int:
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20})
    count = 0
    for topic in topics:
        path = REPO / "config" / "events" / f"{topic}.jsonl"
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    producer.produce(topic, line, headers=[("x-source", b"demo")])
                    count += 1
    print(f"    {count} example events from config/events/")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for i in range(LOAD_EVENTS):
        producer.produce("shop.orders", json.dumps(shipped(i, now)).encode(), key=f"c-{i}".encode())
        producer.poll(0)
    producer.flush(60)
    print(f"    {LOAD_EVENTS} generated order.shipped events")
    return count + LOAD_EVENTS


def produce_avro(registry_url: str) -> int:
    """Payments in Avro, the schema registered under `shop.payments-value` on first use."""
    with SchemaRegistryClient({"url": registry_url}) as client:
        serialize = AvroSerializer(client, AVRO_SCHEMA.read_text(encoding="utf-8"))
        ctx = SerializationContext(AVRO_TOPIC, MessageField.VALUE)
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20})
        now = datetime.now(UTC).replace(microsecond=0)
        for i in range(AVRO_EVENTS):
            record = payment(i, now)
            producer.produce(AVRO_TOPIC, serialize(record, ctx), key=f"p-{i}".encode())
            producer.poll(0)
        producer.flush(60)
    print(f"    {AVRO_EVENTS} generated payment.captured events in Avro ({AVRO_SCHEMA.name})")
    return AVRO_EVENTS


def payment(i: int, now: datetime) -> dict[str, object]:
    """One record of the Avro schema (the serializer takes the enum as its symbol, the
    timestamp-millis as a datetime)."""
    return {
        "type": "payment.captured",
        "data": {
            "payment_id": f"pay-{500000 + i}",
            "user_id": f"p-{i}",
            "amount": 9.5 + i % 120,
            "currency": ("EUR", "USD", "GBP")[i % 3],
            "captured_at": now - timedelta(seconds=i),
            "coupon": f"SAVE{5 + i % 3 * 5}" if i % 4 == 0 else None,
        },
    }


def shipped(i: int, now: str) -> dict[str, object]:
    return {
        "type": "order.shipped",
        "time": now,
        "data": {
            "order_id": f"o-{100000 + i}",
            "customer_id": f"c-{i}",
            "first_name": "Demo",
            "total": 50 + i % 200,
            "currency": "EUR",
            "items": [{"sku": f"sku-{i % 40}", "qty": 1}],
            "shipment": {"carrier": "DHL", "tracking_id": f"T{i:06d}"},
        },
    }


def run_service(url: str, registry_url: str) -> tuple[dict[str, object], float]:
    with tempfile.TemporaryDirectory() as tmp:
        summary_path = Path(tmp) / "summary.json"
        env = dict(os.environ, BRAZE_API_KEY=API_KEY)
        env["BRAZE_CONSUMER_KAFKA__BOOTSTRAP_SERVERS"] = BOOTSTRAP
        env["BRAZE_CONSUMER_BRAZE__REST_ENDPOINT"] = url
        env["BRAZE_CONSUMER_KAFKA__SCHEMA_REGISTRY__URL"] = registry_url
        env["BRAZE_CONSUMER_METRICS__PORT"] = "0"
        args = [sys.executable, "-m", "consumer", "run", "--config", "config/consumer.yaml"]
        args += ["--exit-when-idle", str(IDLE_S), "--summary-json", str(summary_path)]
        args += ["--log-level", "WARNING"]
        started = time.monotonic()
        subprocess.run(args, cwd=REPO, env=env, check=True)
        elapsed_s = time.monotonic() - started - IDLE_S
        summary: dict[str, object] = json.loads(summary_path.read_text())
    return summary, elapsed_s


def dead_letter_reasons() -> Counter[str]:
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "demo-report"})
    _low, high = consumer.get_watermark_offsets(TopicPartition(DLQ_TOPIC, 0), timeout=10)
    consumer.assign([TopicPartition(DLQ_TOPIC, 0, 0)])
    reasons: Counter[str] = Counter()
    deadline = time.monotonic() + 20
    while sum(reasons.values()) < high and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        headers = dict(message.headers() or [])
        rule = _text(headers.get("dlq.rule_id"))
        reasons[f"{_text(headers.get('dlq.reason'))} (rule {rule})"] += 1
    consumer.close()
    return reasons


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def avro_recipients(emulator: EmulatorControl, target_id: str) -> tuple[int, int]:
    """Accepted recipients of the requests to `target_id` (a Canvas or campaign), and how many
    of them came from Avro records (the rule maps `_kafka.schema.type` to a `schema` property)."""
    recipients = from_avro = 0
    since = 0
    while True:
        page = emulator.requests_page(since)
        if not page.requests:
            return recipients, from_avro
        since = page.last_seq
        for request in page.requests:
            body = request.body
            accepted = request.status is not None and 200 <= request.status < 300
            if not accepted or not isinstance(body, dict):
                continue
            if target_id not in (body.get("campaign_id"), body.get("canvas_id")):
                continue
            listed = body.get("recipients")
            for recipient in listed if isinstance(listed, list) else []:
                if not isinstance(recipient, dict):
                    continue
                recipients += 1
                props = recipient.get("trigger_properties") or recipient.get("context")
                if isinstance(props, dict) and props.get("schema") == "AVRO":
                    from_avro += 1


def report(
    summary: dict[str, object], elapsed_s: float, emulator: EmulatorControl, rules: RulesTable
) -> None:
    stats = emulator.stats()
    consumed = int(str(summary["consumed"]))
    sizes = stats.recipients_per_request
    requests = sum(sizes.values())
    recipients = sum(int(k) * v for k, v in sizes.items())
    print("\n==> report")
    print(f"    events consumed        {consumed}")
    print(f"    rule matches           {summary['matched']}")
    print(f"    skipped (counted)      {summary['skipped']}")
    print(f"    Braze requests         {stats.requests_total} ({requests} accepted)")
    print(f"    recipients sent        {recipients}")
    if requests:
        print(f"    recipients / request   {recipients / requests:.1f} (max 50)")
    payment_rule = next(rule for rule in rules.rules if AVRO_TOPIC in rule.topics)
    sent, from_avro = avro_recipients(emulator, payment_rule.target_id)
    target = "campaign" if payment_rule.endpoint.value.startswith("/campaigns") else "Canvas"
    print(f"    Avro events produced   {AVRO_EVENTS} ({AVRO_TOPIC}, {AVRO_SCHEMA.name})")
    others = f", {sent} recipients in all" if sent != from_avro else ""
    print(
        f"    Avro events sent       {from_avro} (rule {payment_rule.rule_id}:"
        f" {target} {payment_rule.target_id}{others})"
    )
    rate = consumed / max(elapsed_s, 1e-3)
    print(f"    throughput             {rate:.0f} events/s (process start to last event)")
    reasons = dead_letter_reasons()
    print(f"    dead letters           {sum(reasons.values())}")
    for reason, count in sorted(reasons.items()):
        print(f"      {count:5d}  {reason}")


if __name__ == "__main__":
    raise SystemExit(main())

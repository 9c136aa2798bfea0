"""Schema Registry records against JSON: the same events as JSON, Avro and Protobuf, measured in
one run.

    python -m bench.schema_decode [--events 50000] [--repeat 3] [--profile] [--cold-cache]

Every event is ~450 bytes as JSON, of a distinct user, and matches the one rule; the three
encodings decode to the same event (checked on a sample). Per format, each part runs --repeat
times and the best run counts (the least CPU, the most events/s: noise on a shared machine only
ever adds to them):

(a) decode only: `consumer.events.decode_any(raw, wire)` over every event, events/s (wall) and
    CPU us/event;
(b) the whole in-process pipeline of bench.pipeline_cpu (decode, rules, batching, intents,
    settling, commits; its instant sender: no Kafka, no HTTP to Braze), events/s and CPU us/event;
(c) the HTTP requests the service's registry client (`consumer.schemas.registry`) sends during
    (a) and during (b), counted at its HTTP layer; each part gets a client of its own that starts
    with an empty cache, so the count includes the first fetch of every schema.

The registry is SCHEMA_REGISTRY_URL when set; else one is started with
scripts/schema-registry-local (a free port, state in .cache/schema-registry-bench/PORT), its
start timed (the first start, then a restart with the distribution cached), and stopped at the
end.
--cold-cache makes the first start fetch the distribution into a temporary cache (from Maven's
local repository when it holds it, else the network) to time a cold start.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import fastavro
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry._sync.schema_registry_client import _RestClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.common._httpx_compat import Response
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import __version__ as protobuf_version
from google.protobuf import descriptor_pb2, timestamp_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.internal import api_implementation
from google.protobuf.message_factory import GetMessageClass

from bench.pipeline_cpu import PARTITIONS
from bench.pipeline_cpu import run as run_pipeline
from bench.suite.machine import machine_facts
from consumer.events import Event, KafkaMeta, RawMessage, decode_any
from consumer.rules import load_rules_text
from consumer.schemas.decoder import WireDecoder
from consumer.schemas.registry import Registry, client_config
from consumer.settings import SchemaRegistrySettings

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "schema-registry-local"
STATE_DIR = REPO / ".cache" / "schema-registry-bench"
FORMATS = ("JSON", "Avro", "Protobuf")
TOPICS = {name: f"bench.orders.{name.lower()}" for name in FORMATS}  # a subject per format
CURRENCIES = ("EUR", "USD", "GBP")
BASE_MS = 1_795_428_000_000  # 2026-11-23T10:00:00Z

RULES = f"""\
rules:
  - id: order-paid
    topics: [{", ".join(TOPICS.values())}]
    when:
      type: order.paid
      data.total: {{gte: 0}}
    canvas: {{id: canvas-order-paid}}
    recipient: {{external_user_id: "{{{{ data.user_id }}}}"}}
    properties:
      order_id: "{{{{ data.order_id }}}}"
      total: "{{{{ data.total }}}}"
      currency: "{{{{ data.currency }}}}"
      plan: "{{{{ data.plan }}}}"
      paid_at: "{{{{ occurred_at }}}}"
"""

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "OrderPaid",
    "namespace": "bench",
    "fields": [
        {"name": "type", "type": "string"},
        {"name": "id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "data",
            "type": {
                "type": "record",
                "name": "Order",
                "fields": [
                    {"name": "user_id", "type": "string"},
                    {"name": "email", "type": "string"},
                    {"name": "plan", "type": "string"},
                    {"name": "order_id", "type": "string"},
                    {"name": "total", "type": "double"},
                    {
                        "name": "currency",
                        "type": {"type": "enum", "name": "Currency", "symbols": list(CURRENCIES)},
                    },
                    {
                        "name": "items",
                        "type": {
                            "type": "array",
                            "items": {
                                "type": "record",
                                "name": "Item",
                                "fields": [
                                    {"name": "sku", "type": "string"},
                                    {"name": "qty", "type": "int"},
                                    {"name": "price", "type": "double"},
                                ],
                            },
                        },
                    },
                    {"name": "country", "type": "string"},
                    {"name": "seq", "type": "long"},
                    {"name": "coupon", "type": ["null", "string"], "default": None},
                ],
            },
        },
    ],
}


# -- the events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """One event, whatever its encoding."""

    seq: int
    id: str
    at_ms: int
    total: float
    currency: str
    items: tuple[tuple[str, int, float], ...]
    coupon: str | None

    @property
    def user_id(self) -> str:
        return f"user-{self.seq:07d}"  # every event a user of its own

    def json_value(self) -> dict[str, Any]:
        """The event as JSON, with the text each field decodes to from Avro and Protobuf."""
        at = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return {
            "type": "order.paid",
            "id": self.id,
            "occurred_at": at.replace("+00:00", "Z"),
            "data": {
                "user_id": self.user_id,
                "email": f"{self.user_id}@example.com",
                "plan": "pro",
                "order_id": f"ord-{self.seq:07d}",
                "total": self.total,
                "currency": self.currency,
                "items": [{"sku": s, "qty": q, "price": p} for s, q, p in self.items],
                "country": "DE",
                "seq": self.seq,
                "coupon": self.coupon,
            },
        }

    def avro_value(self) -> dict[str, Any]:
        """The record for AvroSerializer: the timestamp-millis as a datetime."""
        value = self.json_value()
        value["occurred_at"] = datetime.fromtimestamp(self.at_ms / 1000, UTC)
        return value


def orders(count: int, seed: int = 7) -> list[Order]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        items = tuple(
            (f"sku-{rng.randrange(500)}", 1 + rng.randrange(3), round(rng.uniform(1, 90), 2))
            for _ in range(3)
        )
        out.append(
            Order(
                seq=i,
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                at_ms=BASE_MS + i * 1000 + 1 + i % 999,  # milliseconds never .000
                total=round(sum(q * p for _, q, p in items), 2),
                currency=CURRENCIES[i % len(CURRENCIES)],
                items=items,
                coupon="SAVE10" if i % 5 == 0 else None,
            )
        )
    return out


def proto_order_class() -> Any:
    """The Protobuf message class, built at run time from a FileDescriptorProto (no protoc), as
    tests/integration/test_schema_events.py does; same fields, in the same order, as the JSON."""
    pool = DescriptorPool()
    ts_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_file)
    pool.Add(ts_file)
    f = descriptor_pb2.FileDescriptorProto(name="bench_order.proto", package="bench")
    f.syntax = "proto3"
    f.dependency.append("google/protobuf/timestamp.proto")
    currency = f.enum_type.add(name="Currency")
    for number, symbol in enumerate(CURRENCIES):
        currency.value.add(name=symbol, number=number)
    fd = descriptor_pb2.FieldDescriptorProto
    string, optional = fd.TYPE_STRING, fd.LABEL_OPTIONAL
    paid = f.message_type.add(name="OrderPaid")  # the first message: index 0 in the framing
    paid.field.add(name="type", number=1, type=string, label=optional)
    paid.field.add(name="id", number=2, type=string, label=optional)
    ts = ".google.protobuf.Timestamp"
    paid.field.add(name="occurred_at", number=3, type=fd.TYPE_MESSAGE, type_name=ts, label=optional)
    paid.field.add(
        name="data", number=4, type=fd.TYPE_MESSAGE, type_name=".bench.Order", label=optional
    )
    order = f.message_type.add(name="Order")
    order.field.add(name="user_id", number=1, type=string, label=optional)
    order.field.add(name="email", number=2, type=string, label=optional)
    order.field.add(name="plan", number=3, type=string, label=optional)
    order.field.add(name="order_id", number=4, type=string, label=optional)
    order.field.add(name="total", number=5, type=fd.TYPE_DOUBLE, label=optional)
    currency_type = ".bench.Currency"
    order.field.add(
        name="currency", number=6, type=fd.TYPE_ENUM, type_name=currency_type, label=optional
    )
    order.field.add(
        name="items",
        number=7,
        type=fd.TYPE_MESSAGE,
        type_name=".bench.Item",
        label=fd.LABEL_REPEATED,
    )
    order.field.add(name="country", number=8, type=string, label=optional)
    order.field.add(name="seq", number=9, type=fd.TYPE_INT64, label=optional)
    # proto3 `optional string coupon`: it has presence, so unset reads as null (as in Avro).
    order.oneof_decl.add(name="_coupon")
    order.field.add(
        name="coupon", number=10, type=string, label=optional, oneof_index=0, proto3_optional=True
    )
    item = f.message_type.add(name="Item")
    item.field.add(name="sku", number=1, type=string, label=optional)
    item.field.add(name="qty", number=2, type=fd.TYPE_INT32, label=optional)
    item.field.add(name="price", number=3, type=fd.TYPE_DOUBLE, label=optional)
    pool.Add(f)
    return GetMessageClass(pool.FindMessageTypeByName("bench.OrderPaid"))


def proto_message(message_class: Any, order: Order) -> Any:
    value = order.json_value()
    data = value["data"]
    message = message_class(type=value["type"], id=value["id"])
    message.occurred_at.FromMilliseconds(order.at_ms)
    out = message.data
    for name in ("user_id", "email", "plan", "order_id", "total", "country", "seq"):
        setattr(out, name, data[name])
    out.currency = CURRENCIES.index(data["currency"])
    for sku, qty, price in order.items:
        out.items.add(sku=sku, qty=qty, price=price)
    if order.coupon is not None:
        out.coupon = order.coupon
    return message


def encode_all(events: list[Order], registry_url: str) -> dict[str, list[RawMessage]]:
    """The events once per format, as the messages the consumer would read; Avro and Protobuf
    with confluent-kafka's serializers (schemas registered under `<topic>-value`)."""
    with SchemaRegistryClient({"url": registry_url}) as client:
        avro = AvroSerializer(client, json.dumps(AVRO_SCHEMA))
        proto_class = proto_order_class()
        proto = ProtobufSerializer(proto_class, client, {"use.deprecated.format": False})
        encoders: dict[str, Callable[[Order, SerializationContext], bytes]] = {
            "JSON": lambda order, _ctx: json.dumps(order.json_value()).encode(),
            "Avro": lambda order, ctx: bytes(avro(order.avro_value(), ctx)),
            "Protobuf": lambda order, ctx: bytes(proto(proto_message(proto_class, order), ctx)),
        }
        encoded: dict[str, list[RawMessage]] = {}
        for name, encode in encoders.items():
            topic = TOPICS[name]
            ctx = SerializationContext(topic, MessageField.VALUE)
            encoded[name] = [
                RawMessage(
                    KafkaMeta(topic, i % PARTITIONS, i // PARTITIONS, b"k", BASE_MS, ()),
                    encode(order, ctx),
                )
                for i, order in enumerate(events)
            ]
    return encoded


# -- the registry --------------------------------------------------------------------------------


@dataclass(slots=True)
class RegistryRun:
    url: str
    notes: list[str] = field(default_factory=list)  # how it was had, and its start times


@contextmanager
def schema_registry(cold_cache: bool) -> Iterator[RegistryRun]:
    """SCHEMA_REGISTRY_URL, or a registry started (and timed) here, stopped on the way out."""
    external = os.environ.get("SCHEMA_REGISTRY_URL")
    if external:
        yield RegistryRun(external.rstrip("/"), ["SCHEMA_REGISTRY_URL (not started here)"])
        return
    port = free_port()
    env = dict(os.environ, SCHEMA_REGISTRY_PORT=str(port), SCHEMA_REGISTRY_KEEP_DATA="0")
    state = STATE_DIR / str(port)
    env["SCHEMA_REGISTRY_LOCAL_DIR"] = str(state)
    env["SCHEMA_REGISTRY_OWNER_PID"] = str(os.getpid())  # stopped even if we are killed
    version = env.get("SCHEMA_REGISTRY_VERSION", "2.6.13.Final")
    if cold_cache:
        env["SCHEMA_REGISTRY_CACHE_DIR"] = str(STATE_DIR / "cold-cache")
        shutil.rmtree(STATE_DIR / "cold-cache", ignore_errors=True)
    cache = Path(env.get("SCHEMA_REGISTRY_CACHE_DIR", REPO / ".cache" / "schema-registry"))
    cached = (cache / version / ".complete").exists()
    run = RegistryRun(f"http://127.0.0.1:{port}/apis/ccompat/v7")
    try:
        print(f"starting a Schema Registry on port {port} ...", flush=True)
        first_s, run.url = _registry_command("start", env)
        if cached:
            what = "warm (distribution cached; --cold-cache times a cold one)"
        else:
            what = "cold (fetched the distribution, then started)"
        run.notes.append(f"first start: {first_s:.1f} s, {what}")
        _registry_command("stop", env)
        again_s, run.url = _registry_command("start", env)
        run.notes.append(f"restart: {again_s:.1f} s, warm (distribution cached)")
        print(f"  {'; '.join(run.notes)}", flush=True)
        yield run
    finally:
        _registry_command("stop", env, check=False)
        shutil.rmtree(state, ignore_errors=True)  # its log and H2 files: this run's own dir
        if cold_cache:
            shutil.rmtree(STATE_DIR / "cold-cache", ignore_errors=True)


def _registry_command(command: str, env: dict[str, str], check: bool = True) -> tuple[float, str]:
    """Runs `schema-registry-local COMMAND`; its time and last stdout line (start: the URL)."""
    started = time.perf_counter()
    done = subprocess.run([SCRIPT, command], env=env, capture_output=True, text=True, check=False)
    elapsed_s = time.perf_counter() - started
    if check and done.returncode != 0:
        raise SystemExit(f"schema-registry-local {command} failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return elapsed_s, lines[-1] if lines else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CountingRestClient(_RestClient):
    """The registry client's HTTP layer, writing down each request it sends."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        self.sent: list[str] = []

    def send_http_request(
        self,
        base_url: str,
        url: str,
        method: str,
        headers: dict[str, Any] | None,
        body: str | None = None,
        query: dict[str, Any] | None = None,
    ) -> Response:
        args = f"?{urlencode(query, doseq=True)}" if query else ""
        self.sent.append(f"{method} /{url.lstrip('/')}{args}")
        return super().send_http_request(base_url, url, method, headers, body, query)


def counting_decoder(url: str) -> tuple[WireDecoder, list[str]]:
    """The service's decoder (its registry client, with the service's settings) with an empty
    cache, and the list its HTTP requests are written to."""
    config = client_config(SchemaRegistrySettings(url=url))
    client = SchemaRegistryClient(config)
    client._rest_client.session.close()
    rest = CountingRestClient(dict(config))
    client._rest_client = rest
    return WireDecoder(Registry(client, url)), rest.sent


# -- the measurements ----------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    name: str
    bytes_per_event: float = 0.0
    decode_per_s: float = 0.0  # the best of the repeats, as the CPU figures
    decode_cpu_us: float = math.inf
    decode_requests: list[str] = field(default_factory=list)
    pipeline_per_s: float = 0.0
    pipeline_cpu_us: float = math.inf
    pipeline_requests: list[str] = field(default_factory=list)
    sent: int = 0


def decode_loop(raws: list[RawMessage], wire: WireDecoder) -> int:
    """Decodes every message; how many did not become an Event."""
    failed = 0
    for raw in raws:
        if not isinstance(decode_any(raw, wire), Event):
            failed += 1
    return failed


def measure_decode(raws: list[RawMessage], url: str, figures: Figures, repeat: int) -> None:
    for _ in range(repeat):
        wire, requests = counting_decoder(url)
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        failed = decode_loop(raws, wire)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if failed:
            raise SystemExit(f"{figures.name}: {failed} of {len(raws)} events did not decode")
        figures.decode_per_s = max(figures.decode_per_s, len(raws) / wall)
        figures.decode_cpu_us = min(figures.decode_cpu_us, cpu / len(raws) * 1e6)
        figures.decode_requests = requests  # the same each time: every repeat starts empty


def measure_pipeline(raws: list[RawMessage], url: str, figures: Figures, repeat: int) -> None:
    rules = load_rules_text(RULES)
    for _ in range(repeat):
        wire, requests = counting_decoder(url)
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        pipeline = run_pipeline(raws, rules, wire)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        figures.sent = pipeline.stats.recipients_sent
        pipeline.close()
        if figures.sent != len(raws):
            raise SystemExit(f"{figures.name}: {figures.sent} of {len(raws)} recipients sent")
        figures.pipeline_per_s = max(figures.pipeline_per_s, len(raws) / wall)
        figures.pipeline_cpu_us = min(figures.pipeline_cpu_us, cpu / len(raws) * 1e6)
        figures.pipeline_requests = requests


def same_documents(encoded: dict[str, list[RawMessage]], url: str) -> bool:
    """Whether the formats decode to the same event (apart from `_kafka`), for a sample."""
    wire, _ = counting_decoder(url)
    for index in range(0, len(encoded["JSON"]), max(1, len(encoded["JSON"]) // 50)):
        documents = []
        for raws in encoded.values():
            event = decode_any(raws[index], wire)
            assert isinstance(event, Event)
            documents.append({k: v for k, v in event.document.items() if k != "_kafka"})
        if any(document != documents[0] for document in documents[1:]):
            print(f"event {index} decodes differently: {documents}")
            return False
    return True


def profile_avro(raws: list[RawMessage], url: str, top: int) -> str:
    """cProfile of the Avro decode loop, its schema already cached: the top `top` by own time."""
    wire, _ = counting_decoder(url)
    decode_loop(raws[:100], wire)  # fetch and parse the schema first
    profiler = cProfile.Profile()
    profiler.runcall(decode_loop, raws, wire)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    return out.getvalue()


# -- the report ----------------------------------------------------------------------------------


def table(rows: list[Figures]) -> str:
    by_name = {row.name: row for row in rows}
    json_row = by_name["JSON"]
    head = (
        "| format | bytes/event | (a) decode events/s | (a) decode CPU µs/event "
        "| (b) pipeline events/s | (b) pipeline CPU µs/event "
        "| (c) registry HTTP requests (a) / (b) | (b) recipients sent |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.bytes_per_event:.0f} | {row.decode_per_s:,.0f} "
            f"| {row.decode_cpu_us:.1f} | {row.pipeline_per_s:,.0f} | {row.pipeline_cpu_us:.1f} "
            f"| {len(row.decode_requests)} / {len(row.pipeline_requests)} | {row.sent:,} |"
        )
    for name in ("Avro", "Protobuf"):
        row = by_name[name]
        lines.append(
            f"| **{name} / JSON** | {row.bytes_per_event / json_row.bytes_per_event:.2f} "
            f"| {row.decode_per_s / json_row.decode_per_s:.2f} "
            f"| {row.decode_cpu_us / json_row.decode_cpu_us:.2f} "
            f"| {row.pipeline_per_s / json_row.pipeline_per_s:.2f} "
            f"| {row.pipeline_cpu_us / json_row.pipeline_cpu_us:.2f} | | |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    facts = dict(machine_facts())
    keep = ("CPU", "CPUs this process may use", "Python", "confluent-kafka")
    parts = [f"{key}: {facts[key]}" for key in keep if key in facts]
    parts.append(f"fastavro {fastavro.__version__}")
    parts.append(f"protobuf {protobuf_version} ({api_implementation.Type()})")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="each part; the best one counts")
    parser.add_argument("--profile", action="store_true", help="cProfile of the Avro decode loop")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="time a cold first start: the distribution fetched into a temporary cache",
    )
    args = parser.parse_args()
    with schema_registry(args.cold_cache) as registry:
        started = time.perf_counter()
        events = orders(args.events)
        encoded = encode_all(events, registry.url)
        print(f"encoded {args.events:,} events 3 ways in {time.perf_counter() - started:.1f} s")
        if not same_documents(encoded, registry.url):
            return 1
        rows = [Figures(name) for name in FORMATS]
        for row in rows:
            raws = encoded[row.name]
            row.bytes_per_event = sum(len(raw.value or b"") for raw in raws) / len(raws)
            measure_decode(raws, registry.url, row, args.repeat)
        for row in rows:
            measure_pipeline(encoded[row.name], registry.url, row, args.repeat)
        profile = (
            profile_avro(encoded["Avro"], registry.url, args.profile_top) if args.profile else ""
        )
    print()
    print(f"## Schema Registry records against JSON ({args.events:,} events, one rule)\n")
    print(table(rows))
    print()
    print("- ratios: events/s below 1 is slower than JSON; CPU and bytes above 1 cost more")
    for row in rows[1:]:
        print(f"- registry requests, {row.name} (a): {', '.join(row.decode_requests) or 'none'}")
        print(f"- registry requests, {row.name} (b): {', '.join(row.pipeline_requests) or 'none'}")
    print("- the three formats decode to the same event (a sample of 50 compared, `_kafka` aside)")
    print(f"- registry: {registry.url}; {'; '.join(registry.notes)}")
    print(f"- machine: {machine_line()}")
    if args.profile:
        print(f"\n## Avro decode loop, cProfile (top {args.profile_top} by own time)\n")
        print(profile.rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per event of the pipeline alone: decode, rules, batching, settling, tracking, commits.

No Kafka and no HTTP: RawMessages are fed to `Pipeline.handle` in chunks of 500 (as the loop
does), the sender answers every request at once, and commits are taken each chunk. What this
measures is the Python work per event that `make bench` (b) and (c) pay on top of Kafka and HTTP.

    python -m bench.pipeline_cpu [--events 50000] [--match 1.0 0.1] [--suite] [--profile]

`--suite` feeds `make bench`'s own workload instead (its events and 10-rule table, every event
or one in ten matching), so a change to the hot path can be compared in-process, in one run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import time
import uuid
from collections.abc import Callable, Sequence

from bench.suite.workload import Mix, events, rules_yaml
from consumer.app import settle_garbage_collector
from consumer.batching import Batcher
from consumer.braze.answers import HoldCause
from consumer.braze.retry import RecipientResult
from consumer.clock import SystemClock
from consumer.deadletter import DeadLetter
from consumer.events import KafkaMeta, RawMessage
from consumer.intents import BatchKey
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker
from consumer.pipeline import Pipeline, Ticket
from consumer.rules import RulesTable, load_rules_text
from consumer.schemas.decoder import WireDecoder

RULES = """\
rules:
  - id: order
    topics: [t]
    when: {type: type0}
    canvas: {id: canvas-order}
    recipient: {external_user_id: "{{ data.user_id }}"}
    properties:
      order_id: "{{ data.order_id }}"
      total: "{{ data.total }}"
      currency: "{{ data.currency }}"
      plan: "{{ data.plan }}"
"""
PARTITIONS = 6
CHUNK = 500


class InstantSender:
    def send_encoded(self, key: BatchKey, encoded: Sequence[bytes]) -> list[RecipientResult]:
        return [
            RecipientResult(
                index=index,
                outcome="sent",
                http_status=201,
                error="",
                attempts=1,
                first_failed_at=None,
            )
            for index in range(len(encoded))
        ]

    def prepare_probe(self, cause: HoldCause) -> None:
        """Nothing to prepare."""


class NoDeadLetters:
    def write(self, letter: DeadLetter, on_done: Callable[[str | None], None]) -> None:
        raise AssertionError(f"unexpected dead letter: {letter.reason}")

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0


def messages(count: int, match: float, seed: int = 1) -> list[RawMessage]:
    """~470-byte events of ten types; `match` of them of the type the rule sends for."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = "type0" if rng.random() < match else f"type{1 + i % 9}"
        value = {
            "type": kind,
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "occurred_at": "2026-11-23T10:00:00Z",
            "data": {
                "user_id": f"user-{rng.randrange(1_000_000)}",
                "email": f"someone{i}@example.com",
                "plan": "pro",
                "order_id": f"ord-{i}",
                "total": round(rng.random() * 100, 2),
                "currency": "EUR",
                "items": [{"sku": f"sku-{j}", "qty": j + 1} for j in range(3)],
                "country": "DE",
                "seq": i,
            },
        }
        meta = KafkaMeta("t", i % PARTITIONS, i // PARTITIONS, b"k", 1_700_000_000_000, ())
        out.append(RawMessage(meta, json.dumps(value).encode()))
    return out


def suite_messages(count: int, match: float) -> tuple[list[RawMessage], RulesTable]:
    """`make bench`'s events (`bench.suite.workload`) and its rules: match 1.0 or 0.1."""
    mix = Mix.ALL if match >= 1.0 else Mix.TENTH
    out = []
    for i, (key, value) in enumerate(events(count, mix)):
        meta = KafkaMeta("t", i % PARTITIONS, i // PARTITIONS, key, 1_700_000_000_000, ())
        out.append(RawMessage(meta, value))
    return out, load_rules_text(rules_yaml("t"))


def run(
    raws: list[RawMessage], rules: RulesTable | None = None, wire: WireDecoder | None = None
) -> Pipeline:
    """Feeds `raws` through a pipeline with an instant sender (`wire`: Schema Registry records,
    bench.schema_decode), in chunks as the service's loop does."""
    pipeline = Pipeline(
        rules=rules or load_rules_text(RULES),
        batcher=Batcher[Ticket](50, 500),
        tracker=OffsetTracker(),
        sender=InstantSender(),
        dead_letters=NoDeadLetters(),
        metrics=Metrics(),
        clock=SystemClock(),
        wire=wire,
    )
    pipeline.assign([(raws[0].meta.topic, p) for p in range(PARTITIONS)])
    for start in range(0, len(raws), CHUNK):
        pipeline.tick()
        pipeline.take_commits()
        for raw in raws[start : start + CHUNK]:
            pipeline.handle(raw)
    pipeline.flush()
    pipeline.settle(30)
    pipeline.take_commits()
    return pipeline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--match", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--suite", action="store_true", help="make bench's events and rules")
    parser.add_argument("--profile", action="store_true", help="cProfile, top 25 by own time")
    args = parser.parse_args()
    for match in args.match:
        rules = None
        if args.suite:
            raws, rules = suite_messages(args.events, match)
        else:
            raws = messages(args.events, match)
        settle_garbage_collector()  # as the service does once set up
        started = time.process_time()
        if args.profile:
            profiler = cProfile.Profile()
            pipeline = profiler.runcall(run, raws, rules)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        else:
            pipeline = run(raws, rules)
        spent = time.process_time() - started
        pipeline.close()
        print(
            f"match {match:.0%}: {spent / len(raws) * 1e6:.1f} us of CPU per event "
            f"({len(raws)} events, {pipeline.stats.recipients_sent} sent)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

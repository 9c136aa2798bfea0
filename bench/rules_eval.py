"""Micro-benchmark of stage 2: RulesTable.evaluate() cost per event for a 10-rule table.

Run from the repository root: python bench/rules_eval.py [--events N] [--repeat R]
All ten rules listen to the same topic, so every event is checked against all ten.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.rules import RulesTable, load_rules_text

NOW_MS = 1_714_558_000_000

RULE = """\
  - id: rule-{n}
    topics: [shop.orders]
    when:
      type: order.kind-{kind}
      data.total: {{gte: 50}}
      data.currency: {{in: [EUR, USD, GBP]}}
      _kafka.headers.x-source: {{ne: backfill}}
    {target}
    recipient:
      external_user_id: "{{{{ data.customer_id }}}}"
    properties:
      order_id: "{{{{ data.order_id }}}}"
      total: "{{{{ data.total }}}}"
      item_count: "{{{{ length(data.items) }}}}"
      greeting: "Hi {{{{ data.first_name }}}}!"
      channel: web
    attributes:
      last_order_at: "{{{{ time }}}}"
      orders: {{inc: 1}}
    max_event_age: 1h
"""
TARGETS = ["canvas: {id: canvas-1}", "campaign: {id: campaign-1, send_id: s-1}"]


def ten_rule_table(same_type: bool) -> RulesTable:
    """Ten rules; with `same_type` every rule wants the same event type (all ten match)."""
    rules = "".join(
        RULE.format(n=n, kind=0 if same_type else n, target=TARGETS[n % 2]) for n in range(10)
    )
    return load_rules_text("rules:\n" + rules)


def event(kind: str) -> Event:
    document = {
        "type": kind,
        "time": "2024-05-01T10:00:00Z",
        "data": {
            "order_id": "o-1001",
            "customer_id": "u-42",
            "first_name": "Ada",
            "total": 129.9,
            "currency": "EUR",
            "items": [{"sku": "sku-1", "qty": 1}, {"sku": "sku-7", "qty": 2}],
        },
    }
    meta = KafkaMeta("shop.orders", 0, 0, timestamp_ms=NOW_MS, headers=(("x-source", b"web"),))
    decoded = decode(RawMessage(meta, json.dumps(document).encode()))
    assert isinstance(decoded, Event)
    return decoded


def measure(table: RulesTable, sample: Event, events: int, repeat: int) -> tuple[float, int]:
    """Best-of-`repeat` µs per evaluate() call, and the number of outcomes per call."""
    outcomes = len(table.evaluate(sample, NOW_MS))
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(events):
            table.evaluate(sample, NOW_MS)
        best = min(best, time.perf_counter() - started)
    return best / events * 1e6, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    distinct, same = ten_rule_table(same_type=False), ten_rule_table(same_type=True)
    cases = [
        ("no rule matches (type differs)", distinct, event("order.other")),
        ("1 of 10 rules matches", distinct, event("order.kind-3")),
        ("all 10 rules match", same, event("order.kind-0")),
    ]
    print(f"RulesTable.evaluate, 10 rules on one topic, best of {args.repeat} x {args.events}")
    for label, table, sample in cases:
        micros, outcomes = measure(table, sample, args.events, args.repeat)
        print(f"  {label:<32} {micros:8.2f} µs/event  ({outcomes} outcomes)")


if __name__ == "__main__":
    main()

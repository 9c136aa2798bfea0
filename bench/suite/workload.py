"""The suite's workload (pure): realistic JSON events and the 10-rule table they meet.

Ten event types, each with its own rule: five start a Canvas, five a campaign, every rule maps
properties from the event with `{{ data.x }}`, checks a condition or two and carries the event's
Kafka timestamp as `sent_ms` (the latency run reads it back from the emulator's record).
Events are about 470 bytes of JSON, keyed by one of a million users.

Two mixes: `ALL` (every event matches exactly one rule, types in turn) and `TENTH` (one event in
ten matches; the others are types no rule wants, or rule types whose currency fails the rule).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

CURRENCIES = ("EUR", "USD", "GBP")
FAILING_CURRENCY = "JPY"  # not in any rule's `data.currency: {in: ...}`
USERS = 1_000_000
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken")
CARRIERS = ("DHL", "UPS", "GLS", "DPD")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    event_type: str
    target: str  # "canvas" or "campaign"
    extra_when: dict[str, Any]  # a second condition, always true for the generated events


RULES: tuple[RuleSpec, ...] = (
    RuleSpec("order.shipped", "canvas", {"data.total": {"gte": 1}}),
    RuleSpec("order.delivered", "canvas", {}),
    RuleSpec("cart.abandoned", "canvas", {"data.items": {"ne": []}}),
    RuleSpec("subscription.renewed", "canvas", {}),
    RuleSpec("trial.ending", "canvas", {"data.marketing_opt_in": True}),
    RuleSpec("order.refunded", "campaign", {"data.total": {"gt": 0}}),
    RuleSpec("password.reset", "campaign", {}),
    RuleSpec("signup.completed", "campaign", {"data.marketing_opt_in": True}),
    RuleSpec("review.requested", "campaign", {}),
    RuleSpec("back_in_stock", "campaign", {"data.country": {"ne": "XX"}}),
)
NO_RULE_TYPES = ("page.viewed", "product.viewed", "search.performed", "wishlist.added")


class Mix(Enum):
    ALL = "all"  # every event matches one rule
    TENTH = "tenth"  # 10% match


def match_share(mix: Mix) -> float:
    return 1.0 if mix is Mix.ALL else 0.1


def expected_matches(count: int, mix: Mix) -> int:
    """How many of the first `count` events of `mix` match a rule (each matches at most one)."""
    if mix is Mix.ALL:
        return count
    return sum(1 for index in range(count) if index % 20 in (0, 10))


def event_kind(index: int, mix: Mix) -> tuple[str, bool]:
    """The type of event `index` and whether its rule's condition holds."""
    if mix is Mix.ALL:
        return RULES[index % len(RULES)].event_type, True
    slot = index % 20
    if slot == 0:
        return RULES[0].event_type, True  # a Canvas
    if slot == 10:
        return RULES[5].event_type, True  # a campaign
    if slot % 2 == 1:
        return NO_RULE_TYPES[(index // 20 + slot) % len(NO_RULE_TYPES)], False
    return RULES[(index // 20 + slot) % len(RULES)].event_type, False


def make_event(rng: random.Random, index: int, mix: Mix) -> tuple[bytes, bytes]:
    """(key, value) of event `index`: the key is the user id, so a user keeps its partition."""
    kind, passes = event_kind(index, mix)
    user = f"u-{rng.randrange(USERS):07d}"
    items = [
        {"sku": f"sku-{rng.randrange(10_000):05d}", "qty": rng.randint(1, 3), "price": 19.9}
        for _ in range(rng.randint(1, 2))
    ]
    value = {
        "event_id": f"{rng.getrandbits(128):032x}",
        "type": kind,
        "time": f"2025-05-01T10:{index // 60 % 60:02d}:{index % 60:02d}.{index % 1000:03d}Z",
        "source": {"app": "shop-web", "version": "4.12.0", "region": "eu-west-1"},
        "data": {
            "customer_id": user,
            "first_name": rng.choice(FIRST_NAMES),
            "country": "DE",
            "locale": "de-DE",
            "order_id": f"o-{index:09d}",
            "total": round(rng.uniform(5, 500), 2),
            "currency": rng.choice(CURRENCIES) if passes else FAILING_CURRENCY,
            "marketing_opt_in": True,
            "items": items,
            "shipment": {"carrier": rng.choice(CARRIERS), "tracking_id": f"JD{index:010d}"},
        },
    }
    return user.encode(), json.dumps(value, separators=(",", ":")).encode()


def events(count: int, mix: Mix, seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """The first `count` events of `mix`, the same for the same seed."""
    rng = random.Random(seed)
    for index in range(count):
        yield make_event(rng, index, mix)


def rules_document(topic: str) -> dict[str, Any]:
    """The 10-rule table on `topic` as the YAML document the service reads."""
    rules = []
    for number, spec in enumerate(RULES):
        name = spec.event_type.replace(".", "-").replace("_", "-")
        properties: dict[str, Any] = {
            "order_id": "{{ data.order_id }}",
            "total": "{{ data.total }}",
            "currency": "{{ data.currency }}",
            "sent_ms": "{{ _kafka.timestamp }}",
        }
        if number % 2:
            properties["greeting"] = "Hi {{ data.first_name }}!"
        else:
            properties["first_sku"] = "{{ data.items[0].sku }}"
            properties["carrier"] = "{{ data.shipment.carrier }}"
        rule: dict[str, Any] = {
            "id": name,
            "topics": [topic],
            "when": {
                "type": spec.event_type,
                "data.currency": {"in": list(CURRENCIES)},
                **spec.extra_when,
            },
            spec.target: {"id": f"{spec.target}-{name}"},
            "recipient": {"external_user_id": "{{ data.customer_id }}"},
            "properties": properties,
        }
        rules.append(rule)
    return {"rules": rules}


def rules_yaml(topic: str) -> str:
    return yaml.safe_dump(rules_document(topic), sort_keys=False)

"""The rules table looks rules up by the text they want at one path (`type: order.shipped`):
whatever the rules and the event, the outcomes are those of testing every rule in file order."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import Outcome
from consumer.json_types import JSONObject
from consumer.rules import RulesTable, load_rules_text

TEXTS = ("a", "b", "c")
NOW_MS = 1_800_000_000_000

# What a rule may want of `type` (and of `kind`, a second path some rules test by text).
WANTS = st.sampled_from(
    [
        None,  # no condition on the path
        "a",
        "b",
        "c",
        {"eq": "b"},
        {"in": ["a", "c"]},  # not looked up: tested
        {"ne": "a"},
        {"eq": 1},  # a number: never looked up by text
        {"eq": "a", "ne": "b"},
        {"exists": True},
    ]
)
VALUES = st.sampled_from(["a", "b", "c", "d", 1, None, True, ["a"], {"x": "a"}, "<absent>"])


def rules_yaml(specs: list[tuple[Any, Any, bool]]) -> str:
    rules = []
    for number, (on_type, on_kind, spelt) in enumerate(specs):
        when: dict[str, Any] = {}
        if on_type is not None:
            when["type"] = on_type
        if on_kind is not None:
            when["kind"] = on_kind
        if spelt and on_type is not None:  # the path spelt with a redundant condition too
            when["type"] = {"eq": on_type} if isinstance(on_type, str) else on_type
        rule: dict[str, Any] = {
            "id": f"r{number}",
            "topics": ["t"],
            "canvas": {"id": f"c{number}"},
            "recipient": {"external_user_id": "{{ user }}"},
            "properties": {"rule": number},
        }
        if when:
            rule["when"] = when
        rules.append(rule)
    return json.dumps({"rules": rules})  # JSON is YAML, and never writes aliases


def event(type_value: Any, kind_value: Any) -> Event:
    document: JSONObject = {"user": "u-1"}
    if type_value != "<absent>":
        document["type"] = type_value
    if kind_value != "<absent>":
        document["kind"] = kind_value
    raw = RawMessage(KafkaMeta("t", 0, 0), json.dumps(document).encode())
    decoded = decode(raw)
    assert isinstance(decoded, Event)
    return decoded


def every_rule(table: RulesTable, decoded: Event) -> list[Outcome]:
    """The outcomes of testing every rule of the topic in file order (no lookup)."""
    found = (rule.apply(decoded, NOW_MS) for rule in table.rules if "t" in rule.topics)
    return [outcome for outcome in found if outcome is not None]


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(st.tuples(WANTS, WANTS, st.booleans()), min_size=1, max_size=8),
    type_value=VALUES,
    kind_value=VALUES,
)
def test_looked_up_rules_give_what_testing_every_rule_gives(
    specs: list[tuple[Any, Any, bool]], type_value: Any, kind_value: Any
) -> None:
    table = load_rules_text(rules_yaml(specs))
    decoded = event(type_value, kind_value)
    assert table.evaluate(decoded, NOW_MS) == every_rule(table, decoded)


def test_an_event_meets_only_the_rules_wanting_its_type() -> None:
    rules = [(f"type-{n}", None, False) for n in range(10)] + [(None, None, False)]
    table = load_rules_text(rules_yaml(rules))
    dispatch = table._by_topic["t"]
    assert [rule.rule_id for rule in dispatch.candidates({"type": "type-3"})] == ["r3", "r10"]
    assert [rule.rule_id for rule in dispatch.candidates({"type": "other"})] == ["r10"]
    assert [rule.rule_id for rule in dispatch.candidates({"type": 3})] == ["r10"]
    outcomes = table.evaluate(event("type-3", "<absent>"), NOW_MS)
    assert [outcome.rule_id for outcome in outcomes] == ["r3", "r10"]


def test_rules_in_file_order_whichever_are_looked_up() -> None:
    specs = [(None, None, False), ("a", None, False), ("a", "x", False)]
    table = load_rules_text(rules_yaml(specs))
    outcomes = table.evaluate(event("a", "x"), NOW_MS)
    assert [outcome.rule_id for outcome in outcomes] == ["r0", "r1", "r2"]


def test_one_rule_wanting_a_text_is_not_looked_up() -> None:
    table = load_rules_text(rules_yaml([("a", None, False), (None, None, False)]))
    assert table._by_topic["t"].read is None


def test_the_table_says_whether_it_reads_the_clock() -> None:
    plain = load_rules_text(rules_yaml([("a", None, False)]))
    assert not plain.reads_clock  # the pipeline then passes 0 instead of reading the clock
    aged = json.loads(rules_yaml([("a", None, False)]))
    aged["rules"][0]["max_event_age"] = "1h"
    assert load_rules_text(json.dumps(aged)).reads_clock


def test_kafka_paths_are_never_looked_up() -> None:
    # An earlier rule that maps `_kafka` adds it to the document while the rules run: a later
    # rule's `_kafka` condition then holds, which a lookup made before the rules ran would miss.
    rules = [
        {
            "id": f"r{n}",
            "topics": ["t"],
            "canvas": {"id": f"c{n}"},
            "recipient": {"external_user_id": "{{ user }}"},
            "properties": {"topic": "{{ _kafka.topic }}"},
            **({"when": {"_kafka.topic": "t"}} if n else {}),
        }
        for n in range(3)
    ]
    table = load_rules_text(json.dumps({"rules": rules}))
    assert table._by_topic["t"].read is None
    raw = RawMessage(KafkaMeta("t", 0, 0), b'{"user": "u-1"}')
    decoded = decode(raw, kafka_namespace=False)
    assert isinstance(decoded, Event)
    assert [o.rule_id for o in table.evaluate(decoded, NOW_MS)] == ["r0", "r1", "r2"]

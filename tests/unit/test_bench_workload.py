"""bench/suite/workload.py: the events and rules of `make bench` meet as the suite says."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from bench.suite.workload import RULES, Mix, events, expected_matches, rules_yaml
from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import SendIntent
from consumer.rules import load_rules_text

COUNT = 1_000


def sends(mix: Mix, count: int = COUNT) -> list[list[SendIntent]]:
    """Per event, the sends the real rules table makes of it."""
    table = load_rules_text(rules_yaml("bench.topic"))
    now_ms = int(time.time() * 1000)
    found = []
    for offset, (key, value) in enumerate(events(count, mix)):
        meta = KafkaMeta("bench.topic", offset % 6, offset, key, timestamp_ms=now_ms)
        event = decode(RawMessage(meta, value))
        assert isinstance(event, Event)
        found.append([o for o in table.evaluate(event, now_ms) if isinstance(o, SendIntent)])
    return found


def test_every_event_of_the_all_mix_matches_exactly_one_rule() -> None:
    outcomes = sends(Mix.ALL)
    assert all(len(matched) == 1 for matched in outcomes)
    assert {matched[0].rule_id for matched in outcomes} == {
        rule.event_type.replace(".", "-").replace("_", "-") for rule in RULES
    }


def test_one_event_in_ten_of_the_tenth_mix_matches() -> None:
    outcomes = sends(Mix.TENTH)
    assert sum(len(matched) for matched in outcomes) == expected_matches(COUNT, Mix.TENTH)
    assert expected_matches(COUNT, Mix.TENTH) == COUNT // 10
    assert all(len(matched) <= 1 for matched in outcomes)


def test_the_timestamp_travels_as_sent_ms() -> None:
    matched = sends(Mix.ALL, 20)
    for intent in (m[0] for m in matched):
        properties = intent.recipient.get("context") or intent.recipient.get("trigger_properties")
        assert isinstance(properties, dict)
        assert isinstance(properties["sent_ms"], int)


def test_five_canvas_and_five_campaign_rules() -> None:
    assert sorted(rule.target for rule in RULES) == ["campaign"] * 5 + ["canvas"] * 5
    assert len({rule.event_type for rule in RULES}) == 10


@pytest.mark.parametrize("mix", list(Mix))
def test_events_are_realistic_json_of_about_470_bytes(mix: Mix) -> None:
    generated = list(events(COUNT, mix))
    sizes = [len(value) for _, value in generated]
    assert 440 <= statistics.mean(sizes) <= 500
    assert all(isinstance(json.loads(value), dict) for _, value in generated)
    assert len({key for key, _ in generated}) > COUNT * 0.99  # many distinct users


def test_events_are_the_same_for_the_same_seed() -> None:
    assert list(events(50, Mix.ALL, seed=7)) == list(events(50, Mix.ALL, seed=7))
    assert list(events(50, Mix.ALL, seed=7)) != list(events(50, Mix.ALL, seed=8))

"""`_kafka` is added to an event only when a rule may read it, and always when one does.

The pipeline decodes events without `_kafka` unless a condition reads it (most events of a busy
topic match nothing); a rule whose conditions hold adds it before mappings that may read it.
"""

from __future__ import annotations

import json

import pytest

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import SendIntent
from consumer.json_types import JSONObject
from consumer.rules import load_rules_text

NOW_MS = 1_714_558_000_000
META = KafkaMeta("t", 3, 42, key=b"user-key", timestamp_ms=NOW_MS, headers=(("h", b"v"),))


def pipeline_event(document: JSONObject) -> Event:
    """As the pipeline decodes when no condition reads `_kafka`."""
    decoded = decode(RawMessage(META, json.dumps(document).encode()), kafka_namespace=False)
    assert isinstance(decoded, Event)
    return decoded


def rules(properties: str, when: str = "type: a") -> str:
    return f"""\
rules:
  - id: r
    topics: [t]
    when: {{{when}}}
    canvas: {{id: c}}
    recipient: {{external_user_id: "{{{{ user }}}}"}}
    properties:
{properties}
"""


def context(text: str, document: JSONObject) -> JSONObject:
    table = load_rules_text(text)
    [outcome] = table.evaluate(pipeline_event(document), NOW_MS)
    assert isinstance(outcome, SendIntent), outcome
    value = outcome.recipient["context"]
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ('      key: "{{ _kafka.key }}"', {"key": "user-key"}),
        ('      partition: "{{ _kafka.partition }}"', {"partition": 3}),
        ('      text: "offset {{ _kafka.offset }}"', {"text": "offset 42"}),
        ('      h: "{{ _kafka.headers.h }}"', {"h": "v"}),
        ('      fields: "{{ sort(keys(@)) }}"', {"fields": ["_kafka", "type", "user"]}),
    ],
)
def test_mappings_that_read_kafka_see_it(properties: str, expected: JSONObject) -> None:
    assert context(rules(properties), {"type": "a", "user": "u"}) == expected


def test_a_rule_that_does_not_read_kafka_leaves_the_document_without_it() -> None:
    event = pipeline_event({"type": "a", "user": "u"})
    [outcome] = load_rules_text(rules('      u: "{{ user }}"')).evaluate(event, NOW_MS)
    assert isinstance(outcome, SendIntent)
    assert "_kafka" not in event.document


def test_an_events_own_kafka_field_is_replaced_as_before() -> None:
    document: JSONObject = {"type": "a", "user": "u", "_kafka": {"key": "forged"}}
    assert context(rules('      key: "{{ _kafka.key }}"'), document) == {"key": "user-key"}
    plain = context(rules('      u: "{{ user }}"'), document)
    assert plain == {"u": "u"}


def test_a_condition_on_kafka_decodes_with_it() -> None:
    table = load_rules_text(rules('      u: "{{ user }}"', when="_kafka.key: user-key"))
    assert table.conditions_read_kafka
    assert not load_rules_text(rules('      u: "{{ user }}"')).conditions_read_kafka

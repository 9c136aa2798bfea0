"""Mappings and outputs: JSON typing of `{{ }}`, required fields, schedules, event age, intents."""

from __future__ import annotations

import json

import jmespath
import pytest

from consumer.braze.limits import MAX_PROPERTIES_BYTES
from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import (
    BatchKey,
    Endpoint,
    MappingFailure,
    Outcome,
    RuleSkip,
    SendIntent,
    canonical_json,
)
from consumer.json_types import JSONObject, JSONValue
from consumer.rules import RulesTable, load_rules_text
from consumer.rules.templates import NOTHING, compile_expression

NOW_MS = 1_714_558_000_000  # 2024-05-01T10:06:40Z

BASE = """\
rules:
  - id: r
    topics: [t]
    {target}
    recipient:
      {recipient}
{extra}"""


def table(
    extra: str = "",
    target: str = "canvas: {id: c-1}",
    recipient: str = 'external_user_id: "{{ user }}"',
) -> RulesTable:
    return load_rules_text(BASE.format(target=target, recipient=recipient, extra=extra))


def event(document: JSONObject, timestamp_ms: int | None = NOW_MS) -> Event:
    meta = KafkaMeta("t", 0, 0, timestamp_ms=timestamp_ms)
    decoded = decode(RawMessage(meta, json.dumps(document).encode()))
    assert isinstance(decoded, Event)
    return decoded


def only(outcomes: list[Outcome]) -> Outcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def intent(rules: RulesTable, document: JSONObject) -> SendIntent:
    outcome = only(rules.evaluate(event(document), NOW_MS))
    assert isinstance(outcome, SendIntent), outcome
    return outcome


DOC: JSONObject = {
    "user": "u-1",
    "time": "2024-05-01T10:00:00Z",
    "data": {
        "total": 129.9,
        "round": 50.0,
        "count": 3,
        "paid": True,
        "name": "Ada",
        "tags": ["a", "b"],
        "shipment": {"carrier": "DHL"},
        "nothing": None,
        "x-y": "dashed",
    },
}

PROPERTY_CASES = [
    pytest.param("{{ data.total }}", 129.9, id="number keeps its type"),
    pytest.param("{{ data.round }}", 50.0, id="float stays float"),
    pytest.param("{{ data.count }}", 3, id="integer"),
    pytest.param("{{ data.paid }}", True, id="boolean"),
    pytest.param("{{ data.tags }}", ["a", "b"], id="list"),
    pytest.param("{{ data.shipment }}", {"carrier": "DHL"}, id="object"),
    pytest.param("{{data.name}}", "Ada", id="no spaces inside braces"),
    pytest.param("{{ time }}", "2024-05-01T10:00:00Z", id="time is the event field"),
    pytest.param('{{ data."x-y" }}', "dashed", id="quoted key with dash"),
    pytest.param("{{ length(data.tags) }}", 2, id="JMESPath function"),
    pytest.param("{{ to_string(data.count) }}", "3", id="to_string"),
    pytest.param("{{ data.tags[0] }}", "a", id="index"),
    pytest.param("Hi {{ data.name }}!", "Hi Ada!", id="mixed text"),
    pytest.param("{{ data.round }} EUR", "50 EUR", id="whole float renders without .0"),
    pytest.param("{{ data.total }} EUR", "129.9 EUR", id="float renders as JSON"),
    pytest.param("paid={{ data.paid }}", "paid=true", id="boolean renders as JSON"),
    pytest.param("{{ data.tags }}!", '["a","b"]!', id="list renders as compact JSON"),
    pytest.param("{{ data.name }}{{ data.count }}", "Ada3", id="two expressions"),
    pytest.param("web", "web", id="literal text"),
    pytest.param(7, 7, id="literal number"),
    pytest.param(False, False, id="literal boolean"),
    pytest.param(None, None, id="literal null is kept"),
    pytest.param({"inc": 1}, {"inc": 1}, id="increment passes through"),
    pytest.param({"add": "{{ data.tags }}"}, {"add": ["a", "b"]}, id="add with expression"),
    pytest.param({"remove": ["x", "{{ data.name }}"]}, {"remove": ["x", "Ada"]}, id="remove"),
    pytest.param({"a": {"b": ["{{ data.count }}", 2]}}, {"a": {"b": [3, 2]}}, id="nested"),
    pytest.param(["{{ data.nothing }}", 1], [1], id="list item yielding null is left out"),
    pytest.param({"a": "{{ data.missing }}"}, {}, id="nested key yielding nothing is left out"),
]


@pytest.mark.parametrize(("mapping", "expected"), PROPERTY_CASES)
def test_property_mapping(mapping: JSONValue, expected: JSONValue) -> None:
    rules = table(f"    properties:\n      p: {json.dumps(mapping)}\n      keep: 1\n")
    assert intent(rules, DOC).recipient["context"] == {"p": expected, "keep": 1}


@pytest.mark.parametrize(
    "mapping",
    [
        pytest.param("{{ data.missing }}", id="missing field"),
        pytest.param("{{ data.nothing }}", id="null field"),
        pytest.param("{{ data.total.deeper }}", id="through a number"),
        pytest.param("Hi {{ data.missing }}!", id="mixed text with a missing field"),
    ],
)
def test_optional_property_yielding_nothing_is_left_out(mapping: str) -> None:
    rules = table(f"    properties:\n      p: {json.dumps(mapping)}\n      keep: 1\n")
    assert intent(rules, DOC).recipient["context"] == {"keep": 1}


def test_properties_all_missing_leaves_out_the_field() -> None:
    rules = table("    properties: {p: '{{ data.missing }}'}\n")
    assert "context" not in intent(rules, DOC).recipient


@pytest.mark.parametrize(
    "source",
    [
        "a",
        "a.b",
        'a."x-y".c',
        "_kafka.headers.h",
        "a.b.c.d",
        "a[0]",
        "a[1]",
        "a[-1]",
        "a[-3]",
        "a[2]",
        "a[0].b",
        "a[0][1]",
        'a."x-y".c[0]',
        "a.b[0].c",
    ],
)
@pytest.mark.parametrize(
    "document",
    [
        {"a": {"b": {"c": {"d": 1}}, "x-y": {"c": [1]}}},
        {"a": [1, 2]},
        {"a": [{"b": "first"}, [10, 11]]},
        {"a": {"b": [{"c": 3}], "0": "key"}},
        {"a": "text"},
        {"a": {"b": "text"}},
        {"a": None},
        {"_kafka": {"headers": {"h": "v"}}},
        {},
    ],
)
def test_field_chains_agree_with_jmespath(source: str, document: JSONObject) -> None:
    expected = jmespath.search(source, document)
    compiled = compile_expression(source)
    assert not compiled.measured  # read directly, without the interpreter
    rendered = compiled.render(document)
    assert rendered == (NOTHING if expected is None else expected)


def test_failing_function_is_a_mapping_failure_for_the_field() -> None:
    rules = table("    properties: {n: '{{ length(data.count) }}'}\n")
    failure = only(rules.evaluate(event(DOC), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert (failure.rule_id, failure.field, failure.reason) == ("r", "properties", "mapping_error")
    assert "length(data.count)" in failure.message


REQUIRED_CASES = [
    pytest.param('external_user_id: "{{ nobody }}"', "recipient.external_user_id", id="missing id"),
    pytest.param('external_user_id: "{{ n }}"', "recipient.external_user_id", id="null id"),
    pytest.param('external_user_id: "{{ num }}"', "recipient.external_user_id", id="number id"),
    pytest.param('external_user_id: "{{ empty }}"', "recipient.external_user_id", id="empty id"),
    pytest.param('external_user_id: "u-{{ nobody }}"', "recipient.external_user_id", id="in text"),
    pytest.param(
        'user_alias: {alias_name: "{{ nobody }}", alias_label: anon}',
        "recipient.user_alias.alias_name",
        id="alias name",
    ),
    pytest.param(
        'user_alias: {alias_name: a, alias_label: "{{ num }}"}',
        "recipient.user_alias.alias_label",
        id="alias label",
    ),
    pytest.param(
        'email: "{{ nobody }}"\n      prioritization: [identified]',
        "recipient.email",
        id="email",
    ),
    pytest.param('braze_id: "{{ obj }}"', "recipient.braze_id", id="braze id object"),
]


@pytest.mark.parametrize(("recipient", "field"), REQUIRED_CASES)
def test_required_identifier_yielding_no_string_fails(recipient: str, field: str) -> None:
    rules = table(recipient=recipient)
    document: JSONObject = {"n": None, "num": 12, "empty": "", "obj": {"a": 1}}
    failure = only(rules.evaluate(event(document), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert (failure.rule_id, failure.field, failure.reason) == ("r", field, "mapping_error")
    assert field in failure.message


def test_number_id_failure_suggests_to_string() -> None:
    failure = only(table().evaluate(event({"user": 42}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert "got a int (use to_string(...)" in failure.message


@pytest.mark.parametrize(
    ("recipient", "expected_recipient", "user_key"),
    [
        pytest.param(
            'external_user_id: "{{ user }}"',
            {"external_user_id": "u-1"},
            "external_user_id:u-1",
            id="external id",
        ),
        pytest.param(
            'user_alias: {alias_name: "{{ user }}", alias_label: anon}',
            {"user_alias": {"alias_name": "u-1", "alias_label": "anon"}},
            "user_alias:anon:u-1",
            id="alias",
        ),
        pytest.param(
            'email: "{{ mail }}"\n      prioritization: [identified, most_recently_updated]',
            {
                "email": "Ada@Example.com",
                "prioritization": ["identified", "most_recently_updated"],
            },
            "email:ada@example.com",
            id="email with prioritization, key case-folded",
        ),
        pytest.param(
            'braze_id: "b-{{ user }}"', {"braze_id": "b-u-1"}, "braze_id:b-u-1", id="braze"
        ),
    ],
)
def test_identifier_and_user_key(
    recipient: str, expected_recipient: JSONObject, user_key: str
) -> None:
    sent = intent(table(recipient=recipient), {"user": "u-1", "mail": "Ada@Example.com"})
    assert sent.recipient == expected_recipient
    assert sent.user_key == user_key


def test_properties_over_50_kb_are_too_large() -> None:
    rules = table("    properties: {blob: '{{ blob }}'}\n")
    blob = "x" * MAX_PROPERTIES_BYTES  # with its key and braces, over the limit
    failure = only(rules.evaluate(event({"user": "u", "blob": blob}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert (failure.field, failure.reason) == ("properties", "too_large")
    assert isinstance(intent(rules, {"user": "u", "blob": "x" * 49_000}), SendIntent)


def test_send_to_existing_only_false_needs_an_attribute_from_the_event() -> None:
    rules = table("    send_to_existing_only: false\n    attributes: {name: '{{ name }}'}\n")
    failure = only(rules.evaluate(event({"user": "u"}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert failure.field == "attributes"
    sent = intent(rules, {"user": "u", "name": "Ada"})
    assert sent.recipient == {
        "external_user_id": "u",
        "attributes": {"name": "Ada"},
        "send_to_existing_only": False,
    }


SCHEDULE_CASES = [
    pytest.param("", "2024-05-02T09:00:00Z", {"time": "2024-05-02T09:00:00Z"}, id="UTC Z"),
    pytest.param("", "2024-05-02T11:00:00+02:00", {"time": "2024-05-02T09:00:00Z"}, id="offset"),
    pytest.param("", "2024-05-02T09:00:00", {"time": "2024-05-02T09:00:00Z"}, id="no offset"),
    pytest.param("", "2024-05-02T09:00:00.123Z", {"time": "2024-05-02T09:00:00Z"}, id="fraction"),
    pytest.param("", "2024-05-02", {"time": "2024-05-02T00:00:00Z"}, id="date only"),
    pytest.param(
        ", in_local_time: true",
        "2024-05-02T11:00:00+02:00",
        {"time": "2024-05-02T11:00:00", "in_local_time": True},
        id="local time drops the offset",
    ),
    pytest.param(
        ", at_optimal_time: true",
        "2024-05-02",
        {"time": "2024-05-02T00:00:00", "at_optimal_time": True},
        id="optimal time",
    ),
    pytest.param(
        ", in_local_time: false",
        "2024-05-02T09:00:00Z",
        {"time": "2024-05-02T09:00:00Z", "in_local_time": False},
        id="explicit false is kept",
    ),
]


@pytest.mark.parametrize(("flags", "time", "schedule"), SCHEDULE_CASES)
def test_schedule_time(flags: str, time: str, schedule: JSONObject) -> None:
    rules = table("    schedule: {time: '{{ at }}'" + flags + "}\n")
    sent = intent(rules, {"user": "u", "at": time})
    assert sent.key.schedule_json == canonical_json(schedule)


@pytest.mark.parametrize(
    "time",
    [
        pytest.param("next tuesday", id="text"),
        pytest.param(1714558000, id="number"),
        pytest.param(None, id="null"),
        pytest.param("2024-13-01T00:00:00Z", id="month 13"),
    ],
)
def test_unusable_schedule_time_fails(time: JSONValue) -> None:
    rules = table("    schedule: {time: '{{ at }}'}\n")
    failure = only(rules.evaluate(event({"user": "u", "at": time}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert failure.field == "schedule.time"


AGE_CASES = [
    pytest.param("", {}, NOW_MS - 3_600_001, "skip", id="kafka timestamp too old"),
    pytest.param("", {}, NOW_MS - 3_600_000, "send", id="kafka timestamp exactly at the limit"),
    pytest.param("", {}, NOW_MS + 60_000, "send", id="kafka timestamp in the future"),
    pytest.param("", {}, None, "send", id="no kafka timestamp"),
    pytest.param(
        "    event_time: at\n", {"at": "2024-05-01T08:00:00Z"}, NOW_MS, "skip", id="event time old"
    ),
    pytest.param(
        "    event_time: at\n", {"at": "2024-05-01T10:00:00Z"}, 0, "send", id="event time fresh"
    ),
    pytest.param(
        "    event_time: at\n", {"at": NOW_MS - 7_200_000}, NOW_MS, "skip", id="event time epoch ms"
    ),
    pytest.param("    event_time: at\n", {}, NOW_MS, "fail", id="event time missing"),
    pytest.param("    event_time: at\n", {"at": "soon"}, NOW_MS, "fail", id="event time text"),
    pytest.param("    event_time: at\n", {"at": True}, NOW_MS, "fail", id="event time boolean"),
]


@pytest.mark.parametrize(("extra", "fields", "timestamp_ms", "expected"), AGE_CASES)
def test_max_event_age(
    extra: str, fields: JSONObject, timestamp_ms: int | None, expected: str
) -> None:
    rules = table("    max_event_age: 1h\n" + extra)
    outcome = only(rules.evaluate(event({"user": "u", **fields}, timestamp_ms), NOW_MS))
    kind = {SendIntent: "send", RuleSkip: "skip", MappingFailure: "fail"}[type(outcome)]
    assert kind == expected, outcome
    if isinstance(outcome, RuleSkip):
        assert outcome == RuleSkip("r", "max_event_age")
    if isinstance(outcome, MappingFailure):
        assert outcome.field == "event_time"


ENDPOINT_CASES = [
    pytest.param("canvas: {id: c-1}", "", BatchKey(Endpoint.CANVAS_SEND, "c-1"), "context"),
    pytest.param(
        "campaign: {id: k-1, send_id: s-1}",
        "",
        BatchKey(Endpoint.CAMPAIGN_SEND, "k-1", "s-1"),
        "trigger_properties",
    ),
    pytest.param(
        "canvas: {id: c-1}",
        "    schedule: {time: '2024-06-01T00:00:00Z'}\n",
        BatchKey(Endpoint.CANVAS_SCHEDULE_CREATE, "c-1", None, '{"time":"2024-06-01T00:00:00Z"}'),
        "context",
    ),
    pytest.param(
        "campaign: {id: k-1}",
        "    schedule: {time: '2024-06-01T00:00:00Z'}\n",
        BatchKey(Endpoint.CAMPAIGN_SCHEDULE_CREATE, "k-1", None, '{"time":"2024-06-01T00:00:00Z"}'),
        "trigger_properties",
    ),
]


@pytest.mark.parametrize(("target", "extra", "key", "properties_field"), ENDPOINT_CASES)
def test_intent_for_each_endpoint(
    target: str, extra: str, key: BatchKey, properties_field: str
) -> None:
    rules = table(extra + "    properties: {n: 1}\n", target=target)
    sent = intent(rules, {"user": "u-1"})
    assert sent.key == key
    assert sent.recipient == {"external_user_id": "u-1", properties_field: {"n": 1}}
    assert sent.size_bytes == len(canonical_json(sent.recipient).encode())
    assert sent.rule_id == "r"


def test_size_counts_utf8_bytes() -> None:
    sent = intent(table("    properties: {n: '{{ name }}'}\n"), {"user": "u", "name": "é" * 10})
    assert sent.size_bytes == len(canonical_json(sent.recipient).encode("utf-8"))
    assert sent.size_bytes > len(canonical_json(sent.recipient))


def test_each_matching_rule_gives_its_own_outcome_in_file_order() -> None:
    text = """\
rules:
  - id: first
    topics: [t]
    canvas: {id: c}
    recipient: {external_user_id: "{{ user }}"}
  - id: second
    topics: [t, u]
    campaign: {id: k}
    recipient: {external_user_id: "{{ missing }}"}
  - id: third
    topics: [t]
    when: {kind: never}
    canvas: {id: c}
    recipient: {external_user_id: "{{ user }}"}
"""
    rules = load_rules_text(text)
    outcomes = rules.evaluate(event({"user": "u"}), NOW_MS)
    assert [type(o).__name__ for o in outcomes] == ["SendIntent", "MappingFailure"]
    assert [o.rule_id for o in outcomes] == ["first", "second"]
    assert rules.topics == frozenset({"t", "u"})
    assert rules.rule_ids == ("first", "second", "third")


RESULT_BOUND_CASES = [
    pytest.param("{{ data.items[*] }}", 100_001, id="projection of over 100,000 values"),
    pytest.param("n={{ data.items[*] }}", 100_001, id="the same in mixed text"),
    # Allowed at load (64 times the event at most), but the references it repeats would write
    # out 64 times the list: measured before anything serialises them.
    pytest.param("{{ data.items" + " | [@, @]" * 6 + " }}", 2_000, id="repeated references"),
]


@pytest.mark.parametrize(("mapping", "count"), RESULT_BOUND_CASES)
def test_a_result_too_large_to_use_fails_the_mapping(mapping: str, count: int) -> None:
    rules = table(f"    properties: {{p: {json.dumps(mapping)}}}\n")
    failure = only(rules.evaluate(event({"user": "u", "data": {"items": [0] * count}}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert (failure.rule_id, failure.field, failure.reason) == ("r", "properties", "mapping_error")
    assert "it builds more than 100,000 values or 1,000,000 characters" in failure.message


def test_long_text_results_are_bounded_by_characters() -> None:
    rules = table("    properties: {p: \"{{ join('', data.parts) }}\"}\n")
    document: JSONObject = {"user": "u", "data": {"parts": ["x" * 1_000] * 1_001}}
    failure = only(rules.evaluate(event(document), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert "it builds more than 100,000 values or 1,000,000 characters" in failure.message


def test_a_field_chain_is_not_measured_it_is_part_of_the_event() -> None:
    # The event bounds its size; a large one is Braze's 50 KB limit to refuse (too_large).
    rules = table("    properties: {p: '{{ data.items }}'}\n")
    failure = only(rules.evaluate(event({"user": "u", "data": {"items": [0] * 100_001}}), NOW_MS))
    assert isinstance(failure, MappingFailure)
    assert (failure.field, failure.reason) == ("properties", "too_large")

"""Property: no JSON event makes evaluation raise; it matches, is skipped, or fails as a value."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.braze.contract import validate_request
from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import MappingFailure, RuleSkip, SendIntent
from consumer.json_types import JSONObject, JSONValue
from consumer.rules import load_rules_text

NOW_MS = 1_714_558_000_000

# Rules that read the same few paths with every operator, function and output feature, so random
# documents exercise each of them with every JSON type.
RULES = """\
rules:
  - id: conditions
    topics: [t]
    when:
      type: {in: [a, 1, true, null, [1], {k: v}]}
      data.total: {gte: 1, lt: 1000}
      data.name: {matches: '^[a-z]', ne: x}
      data.flag: {exists: true}
      data.items.0: {not_in: [0]}
    campaign: {id: k, send_id: s}
    recipient: {external_user_id: "{{ data.name }}"}
  - id: everything
    topics: [t]
    canvas: {id: c}
    recipient:
      user_alias: {alias_name: "{{ data.name }}", alias_label: "l-{{ type }}"}
    properties:
      whole: "{{ data }}"
      text: "{{ data.total }} / {{ type }} / {{ data.items }}"
      length: "{{ length(data.items) }}"
      sorted: "{{ sort(data.items) }}"
      biggest: "{{ max(data.items) }}"
      joined: "{{ join(', ', data.items) }}"
      projection: "{{ data.items[*].sku }}"
      filtered: "{{ data.items[?price > `10`] }}"
      nested: {list: ["{{ data.flag }}", 1, {inc: 1}]}
    attributes:
      last: "{{ time }}"
      tags: {add: "{{ data.items }}"}
    schedule: {time: "{{ data.at }}", in_local_time: true}
  - id: aged
    topics: [t]
    campaign: {id: k2}
    recipient:
      email: "{{ data.email }}"
      prioritization: [unidentified]
    send_to_existing_only: false
    attributes: {seen: "{{ data.flag }}"}
    event_time: data.at
    max_event_age: 1h
"""

TABLE = load_rules_text(RULES)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["a", "x", "2024-05-01T10:00:00Z", "2024-05-01", "bob", "a@b.co"])
)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["sku", "price", "k", "0", "x-y", ""]), children, max_size=4
        )
    ),
    max_leaves=12,
)
KEYS = ["total", "name", "flag", "items", "at", "email"]
data_objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
documents = st.fixed_dictionaries(
    {},
    optional={
        "type": json_values,
        "time": json_values,
        "data": data_objects | json_values,
        "_kafka": json_values,  # a producer may send its own `_kafka`; decode replaces it
    },
)


def event(document: JSONObject) -> Event:
    meta = KafkaMeta("t", 0, 0, key=b"\xff", timestamp_ms=NOW_MS, headers=(("h", None),))
    decoded = decode(RawMessage(meta, json.dumps(document).encode()))
    assert isinstance(decoded, Event)
    return decoded


def check(document: JSONObject) -> None:
    outcomes = TABLE.evaluate(event(document), NOW_MS)
    assert len(outcomes) <= len(TABLE.rule_ids)
    for outcome in outcomes:
        assert isinstance(outcome, SendIntent | RuleSkip | MappingFailure)
        if isinstance(outcome, MappingFailure):
            assert outcome.field != "-", outcome  # "-" means the safety net caught a bug
        if isinstance(outcome, SendIntent):
            body = outcome.key.request_body([outcome.recipient])
            assert validate_request(outcome.key.endpoint, body) == [], body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_arbitrary_documents_never_raise(document: JSONObject) -> None:
    check(document)


def test_values_nested_as_deep_as_json_decoding_allows_are_mapped() -> None:
    deep: JSONValue = "bottom"
    for _ in range(900):
        deep = [deep]
    check({"type": "a", "data": {"name": "bob", "items": deep, "at": "2024-05-01T10:00:00Z"}})


def test_values_nested_deeper_than_the_stack_fail_as_values() -> None:
    deep: JSONValue = "bottom"
    for _ in range(20_000):
        deep = [deep]
    document: JSONObject = {"type": "a", "data": {"name": "bob", "items": deep}}
    # Built directly: json.loads itself refuses such depth, but the contract is "any JSON".
    outcomes = TABLE.evaluate(Event(RawMessage(KafkaMeta("t", 0, 0), None), document), NOW_MS)
    failures = [o for o in outcomes if isinstance(o, MappingFailure)]
    assert ("everything", "event") in {(f.rule_id, f.field) for f in failures}


def test_matching_document_sends() -> None:
    document: JSONObject = {
        "type": "a",
        "time": "2024-05-01T09:00:00Z",
        "data": {
            "total": 5,
            "name": "bob",
            "flag": True,
            "items": ["x", "y"],
            "at": "2024-05-01T10:00:00Z",
            "email": "a@b.co",
        },
    }
    outcomes = TABLE.evaluate(event(document), NOW_MS)
    assert [type(o).__name__ for o in outcomes] == ["SendIntent"] * 3
    check(document)


# Rules whose recipients take whatever the event holds: values whole, in mixed text, through
# functions, as ids and as schedule times.
LOOSE_RULES = """\
rules:
  - id: whole
    topics: [t]
    canvas: {id: c}
    recipient: {external_user_id: "u"}
    properties: {data: "{{ data }}", type: "{{ type }}", text: "t={{ time }}", list: ["{{ type }}"]}
    attributes: {k: "{{ data.k }}", nested: {deep: ["{{ data.items }}"]}}
  - id: ids
    topics: [t]
    canvas: {id: c}
    recipient:
      user_alias: {alias_name: "{{ type }}", alias_label: "l-{{ time }}"}
    properties: {first: "{{ data.items[0] }}", k: "{{ data.k }}"}
  - id: numbers
    topics: [t]
    campaign: {id: k}
    recipient: {external_user_id: "x-{{ type }}"}
    properties: {floor: "{{ floor(data.total) }}", abs: "{{ abs(data.total) }}"}
    schedule: {time: "{{ data.at }}"}
"""
LOOSE_TABLE = load_rules_text(LOOSE_RULES)

# Everything `json.loads` can hand over, strict or not: inf and nan (from `1e400`, or an event built
# in code) and lone surrogates (from `"\ud800"` escapes) in values and in keys, at any depth.
# `characters()` leaves surrogates out, so they are mixed in by hand.
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
unicode_text = st.text(st.characters() | surrogates, max_size=6)
loose_scalars = (
    scalars | st.floats() | unicode_text | st.sampled_from([math.inf, -math.inf, math.nan])
)
loose_values: st.SearchStrategy[JSONValue] = st.recursive(
    loose_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["k", "x"]) | unicode_text, children, max_size=4)
    ),
    max_leaves=12,
)
# Each field leans to the type its rules want, so the strictness check is reached, not only the
# type checks before it.
loose_data = st.fixed_dictionaries(
    {},
    optional={
        "total": st.floats() | loose_values,
        "items": st.lists(loose_scalars, max_size=4) | loose_values,
        "k": loose_values,
        "at": st.sampled_from(["2030-01-01T09:00:00Z"]) | unicode_text | loose_values,
    },
)
loose_documents = st.fixed_dictionaries(
    {},
    optional={
        "type": st.text(st.characters() | surrogates, min_size=1, max_size=6) | loose_values,
        "time": unicode_text | loose_values,
        "data": loose_data | loose_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loose_documents)
def test_values_with_no_strict_json_form_never_raise_nor_reach_a_request(
    document: JSONObject,
) -> None:
    meta = KafkaMeta("t", 0, 0, timestamp_ms=NOW_MS)
    # Built as decode builds it: such values cannot all be written as JSON text to decode.
    event = Event(RawMessage(meta, b"{}"), {**document, "_kafka": meta.as_document()})
    for outcome in LOOSE_TABLE.evaluate(event, NOW_MS):
        if isinstance(outcome, MappingFailure):
            assert outcome.field != "-", outcome  # "-" means the safety net caught an exception
            f"{outcome.field}: {outcome.message}".encode()  # a dead letter can carry it
        else:
            assert isinstance(outcome, SendIntent)
            # Raises unless strict: a non-finite number (allow_nan) or a lone surrogate (UTF-8).
            json.dumps(outcome.recipient, ensure_ascii=False, allow_nan=False).encode("utf-8")
            # What the request carries is the recipient, and its size is what is counted.
            assert json.loads(outcome.encoded) == outcome.recipient
            assert outcome.size_bytes == len(outcome.encoded)
            body = outcome.key.request_body([outcome.recipient])
            assert validate_request(outcome.key.endpoint, body) == [], body
            sent = json.loads(outcome.key.request_content([outcome.encoded]))
            assert sent == body

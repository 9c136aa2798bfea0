"""Values with no strict JSON form (non-finite numbers, lone surrogates) fail the mapping by name.

`json.loads` turns `1e400` into inf and `"\\ud800"` into a str UTF-8 cannot encode; a rule that
renders such a value into a request gets a `mapping_error` naming the field, in one log line.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import (
    LONE_SURROGATE,
    LONE_SURROGATE_KEY,
    NOT_FINITE,
    MappingFailure,
    Outcome,
    SendIntent,
)
from consumer.json_types import JSONObject, JSONValue
from consumer.reasons import Reason
from consumer.rules import evaluate, load_rules_text

NOW_MS = 1_714_558_000_000
INF, NAN = math.inf, math.nan

RULES = """\
rules:
  - id: value
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "u"}
    properties: {total: "{{ v }}"}
  - id: text
    topics: [t]
    campaign: {id: k-1}
    recipient: {external_user_id: "u"}
    properties: {line: "total: {{ v }}", deep: {list: [1, "{{ v }}"]}}
  - id: attribute
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "u"}
    attributes: {score: "{{ v }}"}
  - id: id
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ v }}"}
  - id: id-text
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "user-{{ v }}"}
  - id: alias
    topics: [t]
    canvas: {id: c-1}
    recipient: {user_alias: {alias_name: "{{ v }}", alias_label: l}}
  - id: schedule
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "u"}
    schedule: {time: "2030-01-01T{{ v }}"}
  - id: floor
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "u"}
    properties: {whole: "{{ floor(v) }}"}
"""
TABLE = load_rules_text(RULES)


def document_event(value: JSONValue) -> Event:
    """An event whose `v` is `value`, as decode builds it (NaN cannot come through JSON text)."""
    meta = KafkaMeta("t", 0, 0, timestamp_ms=NOW_MS)
    return Event(RawMessage(meta, b"{}"), {"v": value, "_kafka": meta.as_document()})


def outcome_of(rule_id: str, event: Event) -> Outcome:
    (outcome,) = [o for o in TABLE.evaluate(event, NOW_MS) if o.rule_id == rule_id]
    return outcome


def failure_of(rule_id: str, value: JSONValue) -> tuple[str, str]:
    outcome = outcome_of(rule_id, document_event(value))
    assert isinstance(outcome, MappingFailure), outcome
    assert outcome.reason == Reason.MAPPING_ERROR
    # Field and message go into a dead-letter header and a log line: both must encode.
    f"{outcome.field}: {outcome.message}".encode()
    return outcome.field, outcome.message


DEEP: JSONValue = {"a": [{"b": [1, {"c": NAN}]}]}

CASES = [
    pytest.param("value", INF, "properties.total", NOT_FINITE, id="1e400 (inf)"),
    pytest.param("value", -INF, "properties.total", NOT_FINITE, id="-1e400 (-inf)"),
    pytest.param("value", NAN, "properties.total", NOT_FINITE, id="NaN"),
    pytest.param("value", [1, INF], "properties.total[1]", NOT_FINITE, id="Infinity in a list"),
    pytest.param("value", DEEP, "properties.total.a[0].b[1].c", NOT_FINITE, id="nested deep"),
    pytest.param("value", "\ud800", "properties.total", LONE_SURROGATE, id="high surrogate"),
    pytest.param("value", "ok \udfff", "properties.total", LONE_SURROGATE, id="low surrogate"),
    pytest.param(
        "value", {"k": {"\ud83d": 1}}, "properties.total.k.\\ud83d", LONE_SURROGATE_KEY, id="key"
    ),
    pytest.param(
        "value",
        {"x": [{"\udc00y": "fine"}]},
        "properties.total.x[0].\\udc00y",
        LONE_SURROGATE_KEY,
        id="low surrogate key nested deep",
    ),
    pytest.param(
        "value",
        {"a": 1, "b": ["\ud800"]},
        "properties.total.b[0]",
        LONE_SURROGATE,
        id="surrogate value nested deep",
    ),
    pytest.param("text", INF, "properties.line", NOT_FINITE, id="inf in mixed text"),
    pytest.param("text", [NAN], "properties.line", NOT_FINITE, id="NaN in a list in text"),
    pytest.param("text", "\ud800", "properties.line", LONE_SURROGATE, id="surrogate in text"),
    pytest.param("attribute", -INF, "attributes.score", NOT_FINITE, id="attribute"),
    pytest.param("attribute", "\udbff", "attributes.score", LONE_SURROGATE, id="attribute text"),
    pytest.param("id", "\ud800", "recipient.external_user_id", LONE_SURROGATE, id="recipient id"),
    pytest.param("id-text", INF, "recipient.external_user_id", NOT_FINITE, id="id from inf"),
    pytest.param("id-text", "\udc00", "recipient.external_user_id", LONE_SURROGATE, id="id text"),
    pytest.param("alias", "a\ud800", "recipient.user_alias.alias_name", LONE_SURROGATE, id="alias"),
    pytest.param("schedule", NAN, "schedule.time", NOT_FINITE, id="schedule time from NaN"),
    pytest.param("floor", INF, "properties.whole", NOT_FINITE, id="floor() of inf"),
]


@pytest.mark.parametrize(("rule_id", "value", "field", "message"), CASES)
def test_a_value_that_is_not_strict_json_fails_its_field(
    rule_id: str, value: JSONValue, field: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert failure_of(rule_id, value) == (field, message)
    assert caplog.records == []  # no "rule failed" traceback: a value, not an exception


def test_the_text_rule_names_the_nested_part_that_fails() -> None:
    rules = load_rules_text(
        RULES.replace('line: "total: {{ v }}", ', "").replace("list: [1,", "list: [1, 2,")
    )
    (outcome,) = [o for o in rules.evaluate(document_event(INF), NOW_MS) if o.rule_id == "text"]
    assert isinstance(outcome, MappingFailure)
    assert outcome.field == "properties.deep.list[2]"


def test_a_surrogate_in_a_schedule_time_fails_with_a_printable_message() -> None:
    field, message = failure_of("schedule", "\ud800")
    assert field == "schedule.time"
    assert "\\ud800" in message  # quoted as its escape, so the message encodes


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"v": 1e400, "ok": 1}', id="1e400"),
        pytest.param(b'{"v": -1e400, "ok": 1}', id="-1e400"),
        pytest.param(b'{"v": "\\ud800", "ok": 1}', id="escaped high surrogate"),
        pytest.param(b'{"v": {"\\udc00": 1}, "ok": 1}', id="escaped low surrogate key"),
    ],
)
def test_the_event_still_decodes_and_rules_not_reading_the_value_send(raw: bytes) -> None:
    decoded = decode(RawMessage(KafkaMeta("t", 0, 0, timestamp_ms=NOW_MS), raw))
    assert isinstance(decoded, Event)
    rules = load_rules_text(
        RULES
        + """\
  - id: unaffected
    topics: [t]
    canvas: {id: c-1}
    recipient: {external_user_id: "u"}
    properties: {ok: "{{ ok }}"}
"""
    )
    outcomes = {o.rule_id: o for o in rules.evaluate(decoded, NOW_MS)}
    assert isinstance(outcomes["value"], MappingFailure)
    assert outcomes["value"].field.startswith("properties.total")
    sent = outcomes["unaffected"]
    assert isinstance(sent, SendIntent)
    assert sent.recipient == {"external_user_id": "u", "context": {"ok": 1}}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.5, id="finite float"),
        pytest.param(1e308, id="largest floats are finite"),
        pytest.param("\U0001f600 é", id="astral and accented text"),
        pytest.param({"\U0001f600": ["ok"]}, id="astral key"),
    ],
)
def test_strict_values_still_send(value: JSONValue) -> None:
    outcome = outcome_of("value", document_event(value))
    assert isinstance(outcome, SendIntent)
    assert outcome.recipient == {"external_user_id": "u", "context": {"total": value}}
    encoded = json.dumps(
        outcome.recipient, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()
    assert outcome.size_bytes == len(encoded)


def test_the_check_adds_no_work_to_a_strict_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    """One serialisation per recipient: the walk that names a field runs only on failure."""

    def walk(value: JSONValue) -> tuple[str, str] | None:
        raise AssertionError("walked a strict recipient")

    monkeypatch.setattr(evaluate, "strict_json_problem", walk)
    event_ok: JSONObject = {"v": {"a": [1, "b"]}}
    assert isinstance(outcome_of("value", document_event(event_ok)), SendIntent)

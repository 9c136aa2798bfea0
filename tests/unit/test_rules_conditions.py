"""Conditions (`when:`): every operator, JSON typing (booleans are not numbers), dotted paths."""

from __future__ import annotations

import json

import pytest

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.json_types import JSONObject, JSONValue
from consumer.rules import load_rules_text
from consumer.rules.conditions import compile_conditions, compile_path, resolve

ABSENT = object()  # the field is not in the document at all
CATASTROPHIC = r"^([a-z0-9]+)+@example\.com$"  # the issue's pattern: nested quantifiers


def holds(spec: object, value: object) -> bool:
    conditions, issues = compile_conditions({"data.x": spec})
    assert issues == []
    document: JSONObject = {"data": {} if value is ABSENT else {"x": value}}  # type: ignore[dict-item]
    return all(condition.holds(document) for condition in conditions)


CASES = [
    # plain value = equals
    pytest.param("a", "a", True, id="plain string equal"),
    pytest.param("a", "b", False, id="plain string differs"),
    pytest.param(5, 5.0, True, id="plain 5 equals 5.0"),
    pytest.param(1, True, False, id="plain 1 is not true"),
    pytest.param(True, 1, False, id="plain true is not 1"),
    pytest.param(True, True, True, id="plain true"),
    pytest.param("5", 5, False, id="plain string is not number"),
    pytest.param(None, ABSENT, True, id="plain null matches missing"),
    pytest.param(None, None, True, id="plain null matches null"),
    pytest.param(None, 0, False, id="plain null is not 0"),
    pytest.param([1, "a"], [1, "a"], True, id="plain list equal"),
    pytest.param([1], [True], False, id="list with 1 is not list with true"),
    pytest.param({"eq": {"a": [1]}}, {"a": [1.0]}, True, id="eq object deep"),
    pytest.param({"eq": {"a": 1}}, {"a": 1, "b": 2}, False, id="eq object extra key"),
    pytest.param({"eq": "a"}, ABSENT, False, id="eq on missing"),
    # ne
    pytest.param({"ne": 5}, 6, True, id="ne differs"),
    pytest.param({"ne": 5}, 5, False, id="ne same"),
    pytest.param({"ne": 1}, True, True, id="ne 1 vs true"),
    pytest.param({"ne": "backfill"}, ABSENT, True, id="ne on missing holds"),
    pytest.param({"ne": None}, ABSENT, False, id="ne null on missing"),
    # ordering: numbers with numbers, strings with strings, nothing else
    pytest.param({"gt": 5}, 6, True, id="gt"),
    pytest.param({"gt": 5}, 5, False, id="gt equal"),
    pytest.param({"gte": 5}, 5.0, True, id="gte equal float"),
    pytest.param({"lt": 5}, 4.5, True, id="lt"),
    pytest.param({"lt": 5}, 5, False, id="lt equal"),
    pytest.param({"lte": 5}, 5, True, id="lte equal"),
    pytest.param({"lte": 5}, 6, False, id="lte above"),
    pytest.param({"gt": 5}, "10", False, id="gt string vs number is false"),
    pytest.param({"gt": "5"}, 10, False, id="gt number vs string is false"),
    pytest.param({"gt": 0}, True, False, id="gt true is not a number"),
    pytest.param({"lt": 1}, False, False, id="lt false is not a number"),
    pytest.param({"gte": 0}, None, False, id="gte null"),
    pytest.param({"lt": 0}, ABSENT, False, id="lt missing"),
    pytest.param({"gt": 1}, [2], False, id="gt list"),
    pytest.param({"gte": "2024-05-01"}, "2024-05-02T00:00:00Z", True, id="gte ISO text"),
    pytest.param({"lt": "b"}, "a", True, id="lt strings"),
    pytest.param({"gt": 1.5}, 10**400, True, id="gt huge integer"),
    pytest.param({"gte": 10, "lt": 20}, 15, True, id="range inside"),
    pytest.param({"gte": 10, "lt": 20}, 20, False, id="range upper bound"),
    # in / not_in
    pytest.param({"in": ["a", "b"]}, "b", True, id="in string"),
    pytest.param({"in": ["a", "b"]}, "c", False, id="in string absent"),
    pytest.param({"in": [1, 2]}, 2.0, True, id="in number"),
    pytest.param({"in": [1]}, True, False, id="in true is not 1"),
    pytest.param({"in": [True]}, 1, False, id="in 1 is not true"),
    pytest.param({"in": [False]}, False, True, id="in false"),
    pytest.param({"in": [None]}, ABSENT, True, id="in null matches missing"),
    pytest.param({"in": ["a"]}, ABSENT, False, id="in on missing"),
    pytest.param({"in": [[1], {"a": 2}]}, {"a": 2}, True, id="in object"),
    pytest.param({"in": [[1]]}, [1], True, id="in list"),
    pytest.param({"in": []}, "a", False, id="in empty list"),
    pytest.param({"not_in": ["fraud", "test"]}, "damaged", True, id="not_in holds"),
    pytest.param({"not_in": ["fraud", "test"]}, "test", False, id="not_in fails"),
    pytest.param({"not_in": ["x"]}, ABSENT, True, id="not_in on missing holds"),
    pytest.param({"not_in": [1]}, True, True, id="not_in true vs 1"),
    # exists: a value other than null is there
    pytest.param({"exists": True}, 0, True, id="exists zero"),
    pytest.param({"exists": True}, "", True, id="exists empty string"),
    pytest.param({"exists": True}, None, False, id="exists null"),
    pytest.param({"exists": True}, ABSENT, False, id="exists missing"),
    pytest.param({"exists": False}, ABSENT, True, id="not exists missing"),
    pytest.param({"exists": False}, False, False, id="not exists false value"),
    # matches: regex search, strings only
    pytest.param({"matches": "^ord"}, "order.shipped", True, id="matches prefix"),
    pytest.param({"matches": "ship"}, "order.shipped", True, id="matches searches"),
    pytest.param({"matches": "^ship"}, "order.shipped", False, id="matches anchored"),
    pytest.param({"matches": "5"}, 5, False, id="matches number is false"),
    pytest.param({"matches": "."}, ABSENT, False, id="matches missing"),
    # matches runs on RE2: the issue's pattern cannot backtrack (Python's re spun for minutes)
    pytest.param({"matches": CATASTROPHIC}, "a" * 40 + "!", False, id="matches catastrophic no"),
    pytest.param({"matches": CATASTROPHIC}, "a" * 40 + "@example.com", True, id="catastrophic yes"),
    pytest.param({"matches": CATASTROPHIC}, "a" * 100_000 + "!", False, id="catastrophic long"),
    pytest.param({"matches": "(?i)^ORD"}, "order", True, id="matches case-insensitive flag"),
    pytest.param({"matches": "^(?P<kind>[a-z]+)\\."}, "order.x", True, id="matches named group"),
    pytest.param({"matches": "^é+$"}, "éé", True, id="matches non-ASCII"),
    pytest.param({"matches": "^.$"}, "😀", True, id="matches one astral character"),
    pytest.param({"matches": "^a.c$"}, "a\ud800c", True, id="matches lone surrogate"),
    # RE2, unlike Python's re: \d is ASCII, $ is the very end of the text
    pytest.param({"matches": "^\\d+$"}, "٣", False, id="matches d is ASCII"),
    pytest.param({"matches": "^\\p{Nd}+$"}, "٣", True, id="matches Unicode digits"),
    pytest.param({"matches": "x$"}, "x\n", False, id="matches dollar is end of text"),
]


@pytest.mark.parametrize(("spec", "value", "expected"), CASES)
def test_operator(spec: object, value: object, expected: bool) -> None:
    assert holds(spec, value) is expected


PATHS = [
    pytest.param("data.total", {"data": {"total": 5}}, 5, id="nested key"),
    pytest.param("data.items.1.sku", {"data": {"items": [{}, {"sku": "s"}]}}, "s", id="list index"),
    pytest.param("data.items.5", {"data": {"items": [1]}}, None, id="index past the end"),
    pytest.param("data.0", {"data": {"0": "zero"}}, "zero", id="digit key on an object"),
    pytest.param("data.total.x", {"data": {"total": 5}}, None, id="through a number"),
    pytest.param("data.x-y", {"data": {"x-y": 1}}, 1, id="key with a dash"),
    pytest.param("a", [1], None, id="document not an object"),
]


@pytest.mark.parametrize(("path", "document", "expected"), PATHS)
def test_path(path: str, document: JSONValue, expected: JSONValue) -> None:
    assert resolve(document, compile_path(path)) == expected


def event(document: JSONObject, headers: tuple[tuple[str, bytes | None], ...] = ()) -> Event:
    meta = KafkaMeta("t", 0, 7, key=b"k-1", timestamp_ms=1_000, headers=headers)
    decoded = decode(RawMessage(meta, json.dumps(document).encode()))
    assert isinstance(decoded, Event)
    return decoded


KAFKA_RULES = """\
rules:
  - id: r
    topics: [t]
    when:
      _kafka.headers.x-source: web
      _kafka.key: {matches: '^k-'}
      _kafka.offset: {gte: 7}
      _kafka.partition: 0
    canvas: {id: c}
    recipient: {external_user_id: "{{ u }}"}
"""


@pytest.mark.parametrize(
    ("headers", "matched"),
    [
        pytest.param((("x-source", b"web"),), True, id="header matches"),
        pytest.param((("x-source", b"backfill"),), False, id="header differs"),
        pytest.param((), False, id="header missing"),
    ],
)
def test_kafka_namespace(headers: tuple[tuple[str, bytes | None], ...], matched: bool) -> None:
    table = load_rules_text(KAFKA_RULES)
    assert bool(table.evaluate(event({"u": "u-1"}, headers), now_ms=2_000)) is matched


def test_all_conditions_must_hold_and_rules_see_only_their_topics() -> None:
    table = load_rules_text(KAFKA_RULES.replace("_kafka.partition: 0", "_kafka.partition: 1"))
    assert table.evaluate(event({"u": "u-1"}, (("x-source", b"web"),)), now_ms=2_000) == []
    other = load_rules_text(KAFKA_RULES.replace("topics: [t]", "topics: [elsewhere]"))
    assert other.evaluate(event({"u": "u-1"}, (("x-source", b"web"),)), now_ms=2_000) == []

"""Bounded rules: no event can make an expression or a pattern that passes `rules check` costly.

The cost model (`templates.Cost`) claims, for every expression it admits, that the result written
out has at most `grow * S + fixed` characters and evaluation visits at most `work * S + steps`
nodes, S being the event's compact JSON size. The properties below check those claims against the
real interpreter on arbitrary events, and that whole rules built from the worst admitted
expressions never raise. Timings are the bench's business (bench/hostile_rules.py), not a test's.
"""

from __future__ import annotations

import json
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jmespath.visitor import TreeInterpreter

from consumer.events import Event, KafkaMeta, RawMessage, decode
from consumer.intents import MappingFailure, Outcome, RuleSkip, SendIntent
from consumer.json_types import JSONObject, JSONValue
from consumer.rules import load_rules_text, templates
from consumer.rules.templates import (
    MAX_GROWTH,
    MAX_WORK,
    NOTHING,
    ExpressionError,
    compile_expression,
    expression_cost,
)

NOW_MS = 1_714_558_000_000
DOUBLING = "[@, @][] | "  # the issue's expression: each step doubles its input

# Admitted expressions, the costliest of each kind included: the model must bound every one.
ADMITTED = [
    "data.items",
    "data.items[*].sku",
    "data.items[].sku",
    "data.items[?price > `10`].sku",
    "data.items[*].{sku: sku, name: name, price: price, qty: qty}",
    "data.items[*].[sku, sku, @]",
    "data.items.*",
    "data.items[1:3]",
    "data.items | " + DOUBLING * 5 + "@",
    "data | " + "[@, @] | " * 6 + "@",
    "to_string(data)",
    "data.items[*].to_string(@)",
    "to_string(data.items[*].a)",
    "join(', ', data.items[*].to_string(@))",
    "sort_by(data.items, &sku)",
    "max_by(data.items, &to_string(@))",
    'map(&[@, `"' + "x" * 40 + '"`], data.items)',
    "data.items[*].ceil(price)",
    "sort(data.items[*].sku)",
    "merge(data, data, data)",
    "not_null(data.none, data.items, `[1]`)",
    "keys(data)",
    "values(data)",
    "reverse(to_string(data))",
    "to_array(data) | [@, @][]",
    "data.items[?contains(data.items, @)]",
    "length(data.items[?@ == @])",
    "data.items[*].items[*][]",
    '!data.items || data.items && `{"k": [1, 2, 3]}`',
]


class CountingInterpreter(TreeInterpreter):  # type: ignore[misc]  # jmespath has no stubs
    """The real interpreter, counting the nodes it visits."""

    def __init__(self) -> None:
        super().__init__()
        self.visits = 0

    def visit(self, node: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.visits += 1
        return super().visit(node, *args, **kwargs)


def size(value: JSONValue) -> int:
    """The model's measure: characters of compact JSON, repeated references written out."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


# Values that grow when written out or escaped again: huge floats, quotes, astral characters.
GROWING: list[JSONValue] = [0, 1e308, 1e16, 9.5, "", '"', "\\", "😀", "é", "\x01", "a" * 40 + "!"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(GROWING)
    | st.text(max_size=6)
)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["sku", "price", "items", "x", ""]), children, max_size=4)
    ),
    max_leaves=16,
)
data_objects = st.dictionaries(
    st.sampled_from(["items", "name", "none", "email", "parts"]), json_values, max_size=5
)


@pytest.mark.parametrize("source", ADMITTED)
def test_the_worst_admitted_expressions_are_admitted(source: str) -> None:
    compile_expression(source)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_objects | json_values)
def test_results_and_visits_stay_within_the_model(data: JSONValue) -> None:
    document: JSONObject = {"data": data}
    event_size = size(document)
    for source in ADMITTED:
        cost = expression_cost(source)
        assert cost.grow <= MAX_GROWTH, source
        assert cost.work <= MAX_WORK, source
        interpreter = CountingInterpreter()
        try:
            result = interpreter.visit(jmespath.compile(source).parsed, document)
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError, OverflowError):
            continue  # a type error on this event: a mapping failure, and no result
        if result is not None:
            assert size(result) <= cost.grow * event_size + cost.fixed, source
        assert interpreter.visits <= cost.work * event_size + cost.steps, source
        # The metered interpreter the rules use is jmespath's own: same results.
        assert compile_expression(source).search(document) == result, source


@pytest.mark.parametrize(
    ("source", "admitted"),
    [
        pytest.param(DOUBLING * 5 + "@", True, id="doubling five times"),
        pytest.param(DOUBLING * 6 + "@", False, id="doubling six times"),
        pytest.param("[@, @] | " * 6 + "@", True, id="64 references"),
        pytest.param("[@, @] | " * 7 + "@", False, id="128 references"),
        pytest.param("(" * 31 + "a" + ")" * 31, True, id="31 parentheses"),
        pytest.param("(" * 33 + "a" + ")" * 33, False, id="33 parentheses"),
        pytest.param("'" + "(" * 40 + "'", True, id="parentheses in a raw string"),
        pytest.param('"' + "[" * 40 + '"', True, id="brackets in a quoted name"),
        pytest.param('`"' + "{" * 40 + '"`', True, id="braces in a string literal"),
        pytest.param("!!a != b && !c || &d", True, id="operators are not nesting"),
    ],
)
def test_the_limits_are_where_they_are_said_to_be(source: str, admitted: bool) -> None:
    try:
        compile_expression(source)
    except ValueError:
        assert not admitted
    else:
        assert admitted


def test_evaluation_stops_after_max_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "MAX_STEPS", 1_000)
    expression = compile_expression("length(data.items[?@ == `1`])")  # 3 visits an element
    assert expression.render({"data": {"items": [0] * 300}}) == 0
    with pytest.raises(ExpressionError, match="failed: it takes more than 1,000 steps"):
        expression.render({"data": {"items": [0] * 400}})


def test_evaluation_stops_once_it_has_built_too_much() -> None:
    # 15 values an element (a list of 7 one-key objects): over 100,000 by the 6,667th element.
    expression = compile_expression("data.items[*].[" + ", ".join(["{a: @}"] * 7) + "]")
    assert expression.render({"data": {"items": [0] * 6_000}}) is not NOTHING
    with pytest.raises(ExpressionError, match="it builds more than 100,000 values"):
        expression.render({"data": {"items": [0] * 7_000}})


def test_a_parser_recursing_too_deep_is_a_problem_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unreachable through the text check; proves the defensive catch in case the check misses.
    monkeypatch.setattr(templates, "MAX_EXPRESSION_CHARS", 10_000)
    monkeypatch.setattr(templates, "MAX_EXPRESSION_DEPTH", 10_000)
    with pytest.raises(ValueError, match="is nested too deeply"):
        compile_expression("(" * 3_000 + "a" + ")" * 3_000)


# Whole rules: the issue's pattern and the worst admitted expressions, on arbitrary events.
RULES = """\
rules:
  - id: pattern
    topics: [t]
    when:
      data.email: {matches: '^([a-z0-9]+)+@example\\.com$'}
    canvas: {id: c}
    recipient: {external_user_id: "{{ data.email }}"}
  - id: mappings
    topics: [t]
    when:
      data.name: {matches: '(?i)^[\\p{L} .-]+$'}
    canvas: {id: c}
    recipient: {external_user_id: "u-{{ data.name }}"}
    properties:
"""
RULES += "".join(
    f"      p{i}: {json.dumps('{{ ' + source + ' }}')}\n" for i, source in enumerate(ADMITTED)
)
RULES += '      text: "{{ data.items[0] }} and {{ to_string(data.parts) }}"\n'
TABLE = load_rules_text(RULES)


def event(document: JSONObject) -> Event:
    decoded = decode(RawMessage(KafkaMeta("t", 0, 0), json.dumps(document).encode()))
    assert isinstance(decoded, Event)
    return decoded


def check(document: JSONObject) -> list[Outcome]:
    outcomes = TABLE.evaluate(event(document), NOW_MS)
    for outcome in outcomes:
        assert isinstance(outcome, SendIntent | RuleSkip | MappingFailure)
        if isinstance(outcome, MappingFailure):
            assert outcome.field != "-", outcome  # "-" means the safety net caught a bug
    return outcomes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=data_objects)
def test_arbitrary_events_never_raise_through_bounded_rules(data: JSONObject) -> None:
    check({"data": data})


@pytest.mark.parametrize(
    ("email", "matched"),
    [
        pytest.param("a" * 40 + "!", False, id="the issue's event"),
        pytest.param("a" * 100_000 + "!", False, id="a longer one"),
        pytest.param("a" * 40 + "@example.com", True, id="a match"),
        pytest.param("a\ud800@example.com", False, id="a lone surrogate"),
    ],
)
def test_the_issue_pattern_answers_instead_of_backtracking(email: str, matched: bool) -> None:
    outcomes = check({"data": {"email": email}})
    assert [outcome.rule_id for outcome in outcomes] == (["pattern"] if matched else [])


def test_an_event_of_tiny_elements_fails_as_a_value() -> None:
    # 100,000 zeros: the admitted expressions build results too large to use, and say so.
    outcomes = check({"data": {"name": "Ada", "items": [0] * 100_000}})
    [failure] = outcomes
    assert isinstance(failure, MappingFailure)
    assert (failure.rule_id, failure.field) == ("mappings", "properties")
    assert "it builds more than 100,000 values" in failure.message

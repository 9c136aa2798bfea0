"""Rule file validation: every kind of mistake is reported as `file:line: rule-id: message`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.rules import RuleProblem, RulesError, load_rules, load_rules_many, load_rules_text

VALID = """\
rules:
  - id: ok
    topics: [t]
    canvas: {id: c-1}
    recipient:
      external_user_id: "{{ user }}"
"""


def problems_of(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, "r.yaml")
    return [(p.line, p.rule_id, p.message) for p in caught.value.problems]


def test_valid_rule_loads() -> None:
    table = load_rules_text(VALID)
    assert table.rule_ids == ("ok",)
    assert table.topics == frozenset({"t"})


# Each case: a rules file with one mistake, and the (line, rule id, words of the message) expected.
CASES = [
    pytest.param(
        VALID + "    colour: red\n",
        (7, "ok", "unknown key `colour`"),
        id="unknown key",
    ),
    pytest.param(
        VALID + "    propertes: {a: 1}\n",
        (7, "ok", "did you mean `properties`"),
        id="misspelt key suggests the right one",
    ),
    pytest.param(
        VALID.replace("canvas: {id: c-1}", "canvas: {id: c-1, send_id: s}"),
        (4, "ok", "unknown key `send_id` in `canvas` (it is not allowed here)"),
        id="send_id on a Canvas",
    ),
    pytest.param(
        VALID + "    when:\n      on: 1\n",
        (8, "ok", "key true in `when` is not text: quote it"),
        id="YAML boolean key",
    ),
    pytest.param(
        VALID.replace("topics: [t]", "topics: t"),
        (3, "ok", "topics: Input should be a valid list"),
        id="wrong type",
    ),
    pytest.param(
        VALID.replace("id: ok", "id: 42"),
        (2, "-", "id: Input should be a valid string"),
        id="rule id not a string",
    ),
    pytest.param(
        VALID.replace("id: ok", "id: has space"),
        (2, "has space", "id: String should match pattern"),
        id="rule id with spaces",
    ),
    pytest.param(
        VALID.replace("    topics: [t]\n", ""),
        (2, "ok", "missing required key `topics`"),
        id="missing topics",
    ),
    pytest.param(
        VALID.replace("topics: [t]", "topics: []"),
        (3, "ok", "List should have at least 1 item"),
        id="empty topics",
    ),
    pytest.param(
        VALID.replace("canvas: {id: c-1}", "canvas: {id: c-1}\n    campaign: {id: x}"),
        (2, "ok", "exactly one of `canvas` or `campaign`, found both"),
        id="canvas and campaign",
    ),
    pytest.param(
        VALID.replace("    canvas: {id: c-1}\n", ""),
        (2, "ok", "exactly one of `canvas` or `campaign`, found neither"),
        id="neither canvas nor campaign",
    ),
    pytest.param(
        VALID.replace("canvas: {id: c-1}", "canvas: {id: '{{ data.canvas }}'}"),
        (4, "ok", "`canvas.id` must be literal text"),
        id="templated canvas id",
    ),
    pytest.param(
        VALID.replace("canvas: {id: c-1}", "campaign: {id: c-1, send_id: 'ü'}"),
        (4, "ok", "campaign.send_id: String should match pattern"),
        id="non-ASCII send_id",
    ),
    pytest.param(
        VALID.replace('external_user_id: "{{ user }}"', "nothing: 1"),
        (5, "ok", "exactly one of external_user_id, user_alias, email, braze_id (found: none)"),
        id="recipient without identifier",
    ),
    pytest.param(
        VALID + "      braze_id: b-1\n",
        (5, "ok", "(found: external_user_id, braze_id)"),
        id="recipient with two identifiers",
    ),
    pytest.param(
        VALID.replace('external_user_id: "{{ user }}"', 'email: "{{ mail }}"'),
        (6, "ok", "an `email` recipient needs `prioritization`"),
        id="email without prioritization",
    ),
    pytest.param(
        VALID + "      prioritization: [identified]\n",
        (7, "ok", "`prioritization` is only for `email` recipients"),
        id="prioritization without email",
    ),
    pytest.param(
        VALID.replace('external_user_id: "{{ user }}"', 'email: "{{ m }}"')
        + "      prioritization: [identified, unidentified]\n",
        (7, "ok", "only one of `identified` and `unidentified`"),
        id="identified and unidentified",
    ),
    pytest.param(
        VALID.replace('external_user_id: "{{ user }}"', 'email: "{{ m }}"')
        + "      prioritization: [newest]\n",
        (7, "ok", "recipient.prioritization.0: Input should be 'identified'"),
        id="unknown prioritization value",
    ),
    pytest.param(
        VALID + "    send_to_existing_only: false\n",
        (7, "ok", "`send_to_existing_only: false` needs `attributes`"),
        id="send_to_existing_only false without attributes",
    ),
    pytest.param(
        VALID.replace(
            'external_user_id: "{{ user }}"', "user_alias: {alias_name: a, alias_label: b}"
        )
        + "    send_to_existing_only: false\n    attributes: {x: 1}\n",
        (7, "ok", "not allowed with a `user_alias` recipient"),
        id="send_to_existing_only false with user_alias",
    ),
    pytest.param(
        VALID.replace('external_user_id: "{{ user }}"', "user_alias: {alias_name: a}"),
        (6, "ok", "missing required key `alias_label` in `recipient.user_alias`"),
        id="alias without label",
    ),
    pytest.param(
        VALID.replace("{{ user }}", "{{ user[ }}"),
        (6, "ok", "invalid JMESPath expression `user[`"),
        id="invalid JMESPath in recipient",
    ),
    pytest.param(
        VALID + "    properties:\n      a: 1\n      b: '{{ foo( }}'\n",
        (9, "ok", "invalid JMESPath expression `foo(`"),
        id="invalid JMESPath in a property",
    ),
    pytest.param(
        VALID + "    properties:\n      nested: {deep: ['{{ }}']}\n",
        (8, "ok", "empty `{{ }}` expression"),
        id="empty expression in a nested list",
    ),
    pytest.param(
        VALID + "    attributes:\n      a: 'Hi {{ name'\n",
        (8, "ok", "unclosed `{{`"),
        id="unclosed braces",
    ),
    pytest.param(
        VALID + "    properties:\n      day: 2024-05-01\n",
        (8, "ok", "a date is not a JSON value (quote it"),
        id="YAML date literal",
    ),
    pytest.param(
        VALID + "    when:\n      data.total: {greater: 5}\n",
        (8, "ok", "unknown condition operator 'greater'"),
        id="unknown operator",
    ),
    pytest.param(
        VALID + "    when:\n      data.total: {}\n",
        (8, "ok", "an empty operator mapping"),
        id="empty operator mapping",
    ),
    pytest.param(
        VALID + "    when:\n      data..total: 5\n",
        (8, "ok", "invalid path 'data..total'"),
        id="empty path segment",
    ),
    pytest.param(
        VALID + "    when:\n      data.total: {gt: [1]}\n",
        (8, "ok", "`gt`: needs a number or a string"),
        id="ordering operand not scalar",
    ),
    pytest.param(
        VALID + "    when:\n      data.total: {gte: true}\n",
        (8, "ok", "`gte`: needs a number or a string"),
        id="boolean is not a number",
    ),
    pytest.param(
        VALID + "    when:\n      type: {in: a}\n",
        (8, "ok", "`in`: needs a list of values"),
        id="in needs a list",
    ),
    pytest.param(
        VALID + "    when:\n      type: {not_in: 3}\n",
        (8, "ok", "`not_in`: needs a list of values"),
        id="not_in needs a list",
    ),
    pytest.param(
        VALID + "    when:\n      type: {exists: yes please}\n",
        (8, "ok", "`exists`: needs true or false"),
        id="exists needs a boolean",
    ),
    pytest.param(
        VALID + "    when:\n      type: {matches: '(unclosed'}\n",
        (8, "ok", "`matches`: pattern `(unclosed` is not valid RE2 syntax: missing ): (unclosed"),
        id="invalid regex",
    ),
    pytest.param(
        VALID + "    when:\n      type: {matches: 5}\n",
        (8, "ok", "`matches`: needs a regular expression string"),
        id="regex not a string",
    ),
    pytest.param(
        VALID + "    max_event_age: 10 minutes\n",
        (7, "ok", "invalid duration '10 minutes'"),
        id="invalid duration",
    ),
    pytest.param(
        VALID + "    max_event_age: 0s\n",
        (7, "ok", "must be greater than zero"),
        id="zero duration",
    ),
    pytest.param(
        VALID + "    max_event_age: 60\n",
        (7, "ok", "max_event_age: Input should be a valid string"),
        id="duration without unit",
    ),
    pytest.param(
        VALID + "    event_time: data.at\n",
        (7, "ok", "`event_time` is only used with `max_event_age`"),
        id="event_time without max_event_age",
    ),
    pytest.param(
        VALID + "    schedule: {in_local_time: true}\n",
        (7, "ok", "missing required key `time` in `schedule`"),
        id="schedule without time",
    ),
    pytest.param(
        VALID + "    schedule: {time: '{{ t }}', in_local_time: true, at_optimal_time: true}\n",
        (7, "ok", "use `in_local_time` or `at_optimal_time`, not both"),
        id="schedule with both local and optimal time",
    ),
    pytest.param(
        VALID + "    schedule: {time: '{{ t }}', send_at: now}\n",
        (7, "ok", "unknown key `send_at` in `schedule`"),
        id="schedule with unknown key",
    ),
    pytest.param(
        VALID + "    schedule: '{{ t }}'\n",
        (7, "ok", "schedule: Input should be a valid dictionary or instance of ScheduleSpec"),
        id="schedule not a mapping",
    ),
    pytest.param(
        VALID.replace("    topics: [t]\n", "    topics: [t]\n    topics: [u]\n"),
        (4, "ok", "duplicate key `topics`"),
        id="duplicate YAML key",
    ),
    pytest.param(
        VALID + "  - id: ok\n    topics: [t]\n    canvas: {id: c}\n    recipient: {braze_id: b}\n",
        (7, "ok", "duplicate rule id (first defined at r.yaml:2)"),
        id="duplicate rule id",
    ),
    pytest.param(
        VALID + "  - just text\n",
        (7, "-", "a rule must be a mapping of keys, got a str"),
        id="rule not a mapping",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_each_mistake_is_reported_with_its_line(text: str, expected: tuple[int, str, str]) -> None:
    line, rule_id, words = expected
    found = problems_of(text)
    assert any(p[0] == line and p[1] == rule_id and words in p[2] for p in found), found


# `matches` runs on RE2 (linear time): what only a backtracking engine can do is refused at load.
REGEX_CASES = [
    pytest.param(
        r"(a)\1",
        r"invalid escape sequence: \1 (backreferences are not supported: RE2 matches in linear",
        id="backreference",
    ),
    pytest.param("a(?=b)", "operator: (?= (lookahead is not supported", id="lookahead"),
    pytest.param("a(?!b)", "operator: (?! (lookahead is not supported", id="negative lookahead"),
    pytest.param("(?<=a)b", "(?<= (lookbehind is not supported", id="lookbehind"),
    pytest.param("(?<!a)b", "(?<! (lookbehind is not supported", id="negative lookbehind"),
    pytest.param("(?>a+)b", "(atomic groups are not supported", id="atomic group"),
    pytest.param("a++b", "(possessive quantifiers are not supported", id="possessive"),
    pytest.param(r"a\Z", r"invalid escape sequence: \Z (write \z for the end of the text", id="Z"),
    pytest.param("a{1001}", "invalid repetition size: {1001}", id="repetition over 1000"),
    pytest.param(
        "^.{0,255}$",
        "compiles to 2297 RE2 instructions (at most 2000): matching costs up to that much",
        id="program too large",
    ),
]


@pytest.mark.parametrize(("pattern", "words"), REGEX_CASES)
def test_patterns_re2_cannot_match_in_linear_time_are_refused(pattern: str, words: str) -> None:
    text = VALID + f"    when:\n      data.email: {{matches: '{pattern}'}}\n"
    [(line, rule_id, message)] = problems_of(text)
    assert (line, rule_id) == (8, "ok")
    assert message.startswith(f"`matches`: pattern `{pattern}` "), message
    assert words in message, message


# `{{ expr }}` is bounded at load: length, nesting, and a cost model that refuses expressions
# whose result or work could multiply the event (tests/unit/test_rules_bounded.py for the model).
DOUBLING = "[@,@][] | "  # the expression: each step doubles its input
EXPRESSION_CASES = [
    pytest.param("a." * 500 + "b", "is 1,001 characters long (at most 1,000)", id="too long"),
    pytest.param(
        "(" * 800 + "a" + ")" * 800,
        "is 1,601 characters long (at most 1,000)",
        id="800 nested parentheses of the issue",
    ),
    pytest.param(
        "(" * 400 + "a" + ")" * 400, "nests 400 levels deep (at most 32)", id="nested parentheses"
    ),
    pytest.param("!" * 900 + "a", "nests 900 levels deep (at most 32)", id="nested negations"),
    pytest.param("`" + "[" * 33 + "1" + "]" * 33 + "`", "nests 33 levels deep", id="deep literal"),
    pytest.param(" | ".join(["a"] * 40), "nests 40 levels deep (at most 32)", id="40 pipes"),
    pytest.param(
        DOUBLING * 10 + "@",
        "can build a result 1,024 times the size of the event (at most 64): each `[a, b]`",
        id="doubling ten times",
    ),
    pytest.param(
        DOUBLING * 6 + "@",
        "can take 252 steps per character of the event (at most 128)",
        id="doubling six times",
    ),
    pytest.param(
        "to_string(to_array(to_string(to_array(to_string(data)))))",
        "can build a result 2,744 times the size of the event (at most 64)",
        id="to_string escaping its own output",
    ),
    pytest.param(
        "data.items[*].[" + ",".join(["{a: @}"] * 9) + "]",
        "can build a result 82 times the size of the event",
        id="nine hashes per element",
    ),
    pytest.param(
        '`"' + "x" * 400 + '"` | ' + DOUBLING * 8 + "@",
        "from its literals alone (at most 64,000 and 128,000)",
        id="doubling a literal",
    ),
    pytest.param(
        "frobnicate(a)", "`frobnicate(a)`: unknown function `frobnicate()`", id="function"
    ),
    pytest.param("length(a, b)", "`length()` takes 1 argument, got 2", id="arity"),
    pytest.param("merge()", "`merge()` takes at least 1 argument, got 0", id="variadic arity"),
    pytest.param(
        "join(data.name, data.tags)",
        "the separator of `join()` must not depend on the event",
        id="join separator from the event",
    ),
]


@pytest.mark.parametrize(("expression", "words"), EXPRESSION_CASES)
def test_unbounded_expressions_are_refused_with_their_line(expression: str, words: str) -> None:
    template = json.dumps("{{ " + expression + " }}")
    text = VALID + f"    properties:\n      a: 1\n      p: {template}\n"
    [(line, rule_id, message)] = problems_of(text)
    assert (line, rule_id) == (9, "ok")
    assert message.startswith("expression `"), message
    assert words in message, message


FILE_CASES = [
    pytest.param("", (1, "the file is empty"), id="empty file"),
    pytest.param("# only a comment\n", (1, "the file is empty"), id="only comments"),
    pytest.param("- id: a\n", (1, "expected a mapping with a `rules:` list"), id="top is a list"),
    pytest.param("rules: {id: a}\n", (1, "`rules` must be a list of rules"), id="rules a mapping"),
    pytest.param("rules: []\n", (1, "`rules` is empty"), id="no rules"),
    pytest.param("rule: []\n", (1, "missing the top-level `rules:` list"), id="missing rules"),
    pytest.param(VALID + "extra: 1\n", (7, "unknown top-level key `extra`"), id="top-level key"),
    pytest.param("rules:\n  - id: [a\n", (3, "invalid YAML"), id="YAML syntax error"),
    pytest.param("a: 1\n---\nb: 2\n", (2, "expected a single document"), id="two documents"),
]


@pytest.mark.parametrize(("text", "expected"), FILE_CASES)
def test_file_level_problems(text: str, expected: tuple[int, str]) -> None:
    line, words = expected
    found = problems_of(text)
    assert any(p[0] == line and p[1] == "-" and words in p[2] for p in found), found


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = """\
rules:
  - id: first
    topics: [t]
    canvas: {id: c}
    campaign: {id: d}
    recipient: {external_user_id: "{{ a[ }}"}
    when:
      x: {bogus: 1}
  - id: second
    topics: [t]
    canvas: {id: c}
    recipient: {email: "{{ e }}"}
    max_event_age: soon
  - id: third
    topics: 5
    canvas: {id: c}
    recipient: {external_user_id: "{{ u }}"}
    properties: {p: "{{ ) }}"}
"""
    found = problems_of(text)
    assert [(line, rule_id) for line, rule_id, _ in found] == [
        (2, "first"),
        (6, "first"),
        (8, "first"),
        (12, "second"),
        (13, "second"),
        (15, "third"),
        (18, "third"),
    ]


def test_problem_reads_file_line_rule_message() -> None:
    problem = RuleProblem("rules.yaml", 7, "order-shipped", "unknown key `x`")
    assert str(problem) == "rules.yaml:7: order-shipped: unknown key `x`"


def test_folder_loads_every_yaml_file_and_checks_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yml").write_text(VALID.replace("id: ok", "id: other"))
    (tmp_path / "notes.txt").write_text("not rules")
    assert load_rules(tmp_path).rule_ids == ("ok", "other")
    (tmp_path / "c.yaml").write_text(VALID)
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    [problem] = caught.value.problems
    first = tmp_path / "a.yaml"
    assert (
        str(problem)
        == f"{tmp_path / 'c.yaml'}:2: ok: duplicate rule id (first defined at {first}:2)"
    )


@pytest.mark.parametrize(
    ("make", "words"),
    [
        pytest.param(lambda p: p / "missing.yaml", "no such file or folder", id="missing path"),
        pytest.param(lambda p: p, "folder has no *.yaml rule files", id="empty folder"),
    ],
)
def test_paths_that_hold_no_rules(tmp_path: Path, make: Callable[[Path], Path], words: str) -> None:
    with pytest.raises(RulesError) as caught:
        load_rules_many([make(tmp_path)])
    assert words in caught.value.problems[0].message


def test_non_utf8_file_is_a_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(VALID.encode() + b"    description: caf\xe9\n")
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.message) == (7, "invalid YAML: file is not valid UTF-8")

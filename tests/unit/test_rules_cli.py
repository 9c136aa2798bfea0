"""`braze-consumer rules check` and `rules preview`: output and exit codes."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from consumer.cli import main
from consumer.json_types import JSONObject
from consumer.rules.command import preview_json

CONFIG = Path(__file__).resolve().parents[2] / "config"

GOOD = """\
rules:
  - id: welcome
    topics: [signups]
    when: {type: signup}
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
    properties:
      key: "{{ _kafka.key }}"
      source: "{{ _kafka.headers.source }}"
      at: "{{ _kafka.timestamp }}"
"""

BROKEN = """\
rules:
  - id: one
    topics: [t]
    canvas: {id: c}
    campaign: {id: k}
    recipient: {external_user_id: "{{ u }}"}
  - id: two
    topics: [t]
    canvas: {id: c}
    recipient: {email: "{{ e }}"}
    when:
      total: {above: 5}
  - id: three
    topics: [t]
    canvas: {id: c}
    recipient: {external_user_id: "{{ u[ }}"}
    max_event_age: forever
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_valid_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD)
    folder = tmp_path / "more"
    folder.mkdir()
    write(folder, "b.yaml", GOOD.replace("id: welcome", "id: other"))
    write(folder, "c.yaml", GOOD.replace("id: welcome", "id: third"))
    assert run(capsys, "rules", "check", first, str(folder)) == (
        0,
        "ok: 3 rules in 3 files\n",
        "",
    )


def test_check_lists_every_problem_with_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "broken.yaml", BROKEN)
    code, out, err = run(capsys, "rules", "check", path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:2: one: a rule needs exactly one of `canvas` or `campaign`, found both",
        f"{path}:10: two: an `email` recipient needs `prioritization`",
        f"{path}:12: two: unknown condition operator 'above' (known: "
        "eq, ne, gt, gte, lt, lte, in, not_in, exists, matches)",
        f"{path}:16: three: invalid JMESPath expression `u[`: Invalid jmespath expression: "
        'Incomplete expression: "u[" ^',
        f"{path}:17: three: invalid duration 'forever': "
        "use an integer and a unit (ms, s, m, h, d), e.g. 30s, 15m, 1h, 2d",
    ]
    assert err == "5 problem(s) found\n"


def test_check_missing_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "rules", "check", str(tmp_path / "nope.yaml"))
    assert (code, out) == (2, "")
    assert "no such file or folder" in err


def test_check_without_paths_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rules", "check"])
    assert exited.value.code == 2


def preview(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, events: str, *extra: str
) -> tuple[int, list[JSONObject]]:
    rules = write(tmp_path, "rules.yaml", GOOD)
    event_file = write(tmp_path, "events.jsonl", events)
    code, out, _ = run(
        capsys, "rules", "preview", "--rules", rules, "--topic", "signups", "--event", event_file,
        *extra,
    )  # fmt: skip
    return code, [json.loads(line) for line in out.splitlines()]


def test_preview_prints_the_exact_request_per_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = '{"type": "signup", "user": "u-1"}\n\n{"type": "other"}\n{"type": \n[1]\n'
    code, reports = preview(
        capsys, tmp_path, events,
        "--key", "k-9", "--header", "source=web", "--timestamp-ms", "1700000000000",
    )  # fmt: skip
    assert code == 0
    body = {
        "canvas_id": "c-1",
        "recipients": [
            {
                "external_user_id": "u-1",
                "context": {"key": "k-9", "source": "web", "at": 1700000000000},
            }
        ],
    }
    assert reports == [
        {
            "line": 1,
            "requests": [{"rule_id": "welcome", "endpoint": "/canvas/trigger/send", "body": body}],
            "skipped": [],
            "errors": [],
            "matched": True,
        },
        {
            "line": 3,
            "requests": [],
            "skipped": [],
            "errors": [],
            "matched": False,
            "unmatched": [
                {
                    "rule_id": "welcome",
                    "path": "type",
                    "operator": "eq",
                    "expected": "signup",
                    "actual": "other",
                    "found": True,
                    "message": 'first failed condition: type eq "signup"; the event has "other"',
                }
            ],
        },
        {
            "line": 4,
            "requests": [],
            "skipped": [],
            "errors": [
                {
                    "rule_id": None,
                    "field": None,
                    "reason": "invalid_json",
                    "message": reports[2]["errors"][0]["message"],  # type: ignore[index,call-overload]
                }
            ],
            "matched": False,
        },
        {
            "line": 5,
            "requests": [],
            "skipped": [],
            "errors": [
                {
                    "rule_id": None,
                    "field": None,
                    "reason": "invalid_json",
                    "message": "value must be a JSON object, got list",
                }
            ],
            "matched": False,
        },
    ]


def test_preview_reports_mapping_errors_and_exits_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, reports = preview(capsys, tmp_path, '{"type": "signup"}\n')
    assert code == 0
    assert reports[0]["errors"] == [
        {
            "rule_id": "welcome",
            "field": "recipient.external_user_id",
            "reason": "mapping_error",
            "message": "recipient.external_user_id is required but its expression found no value",
        }
    ]
    assert reports[0]["matched"] is True


def test_preview_reads_stdin(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = write(tmp_path, "rules.yaml", GOOD)
    stdin_file = tmp_path / "stdin"
    stdin_file.write_text('{"type": "signup", "user": "u-2"}\n')
    with stdin_file.open("rb") as handle:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(handle))
        code, out, _ = run(
            capsys, "rules", "preview", "--rules", rules, "--topic", "signups", "--event", "-"
        )
    assert code == 0
    [report] = [json.loads(line) for line in out.splitlines()]
    assert report["requests"][0]["body"]["recipients"][0]["external_user_id"] == "u-2"


def test_preview_with_invalid_rules_prints_problems_and_exits_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = write(tmp_path, "rules.yaml", BROKEN)
    events = write(tmp_path, "events.jsonl", "{}\n")
    code, out, _ = run(
        capsys, "rules", "preview", "--rules", rules, "--topic", "t", "--event", events
    )
    assert code == 1
    assert len(out.splitlines()) == 5
    assert out.startswith(f"{rules}:2: one: ")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--event", "missing.jsonl"], id="missing event file"),
        pytest.param(["--event", "-", "--header", "novalue"], id="header without ="),
    ],
)
def test_preview_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    rules = write(tmp_path, "rules.yaml", GOOD)
    argv = [str(tmp_path / a) if a.endswith(".jsonl") else a for a in argv]
    code, out, err = run(capsys, "rules", "preview", "--rules", rules, "--topic", "signups", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("error: ")


def test_preview_missing_rules_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "rules", "preview", "--rules", str(tmp_path / "x.yaml"), "--topic", "t",
        "--event", "-",
    )  # fmt: skip
    assert code == 2
    assert "no such file or folder" in err


ORDERS = """\
rules:
  - id: order
    topics: [orders]
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
    properties: {total: "{{ total }}", note: "{{ note }}"}
"""


def strict_loads(line: str) -> Any:
    """json.loads that refuses NaN and Infinity, as any strict JSON reader would."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_preview_prints_strict_json_and_the_mapping_error_for_values_braze_cannot_take(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = write(tmp_path, "rules.yaml", ORDERS)
    events = write(
        tmp_path,
        "events.jsonl",
        '{"user": "u", "total": 1e400}\n'
        '{"user": "u", "total": -1e400}\n'
        '{"user": "u", "note": "\\ud800"}\n'
        '{"user": "u", "total": 12.5, "note": "\\ud83d\\ude00"}\n',
    )
    code, out, _ = run(
        capsys, "rules", "preview", "--rules", rules, "--topic", "orders", "--event", events
    )
    assert code == 0
    out.encode("utf-8")
    reports = [strict_loads(line) for line in out.splitlines()]
    errors = [(e["field"], e["message"]) for r in reports for e in r["errors"]]
    assert errors == [
        ("properties.total", "not a finite number"),
        ("properties.total", "not a finite number"),
        ("properties.note", "not valid Unicode (lone surrogate)"),
    ]
    assert [len(r["requests"]) for r in reports] == [0, 0, 0, 1]
    assert reports[3]["requests"] == [
        {
            "rule_id": "order",
            "endpoint": "/canvas/trigger/send",
            "body": {
                "canvas_id": "c-1",
                "recipients": [
                    {"external_user_id": "u", "context": {"total": 12.5, "note": "\U0001f600"}}
                ],
            },
        }
    ]


@pytest.mark.parametrize(
    ("report", "where"),
    [
        pytest.param({"line": 7, "x": [math.inf]}, "report.x[0]", id="a non-finite number"),
        pytest.param({"line": 7, "x": {"\udc00": 1}}, "report.x.\\udc00", id="a surrogate key"),
    ],
)
def test_a_report_that_is_not_strict_json_prints_as_a_strict_error(
    report: JSONObject, where: str
) -> None:
    printed = strict_loads(preview_json(report))
    assert printed["line"] == 7
    (error,) = printed["errors"]
    assert where in error["message"]


# -- rules check: warnings for conditions that can never hold ---------------------------------

NEVER = """\
rules:
  - id: payments
    topics: [payments]
    when:
      data.amount: {gt: "10"}
      data.tags: {in: []}
      data.at: {gte: "2024-05-01T00:00:00Z"}
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
  - id: refunds
    topics: [payments]
    when:
      data.refund: {exists: false, gt: 0}
      data.total: {gte: 100, lt: 50}
      _kafka.headers.x-retry: {gte: 2}
      _kafka.header.x-source: web
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
"""


def test_check_warns_about_conditions_that_can_never_hold_and_exits_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "never.yaml", NEVER)
    code, out, err = run(capsys, "rules", "check", path)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f'{path}:5: payments: warning: `gt: "10"` is text: it never holds for a number (values'
        " of different JSON types never compare) and orders text character by character"
        ' ("9" > "10"); write `gt: 10` to compare numbers',
        f"{path}:6: payments: warning: `in: []` can never hold: no value is in an empty list",
        f"{path}:13: refunds: warning: `gt: 0` can never hold: it needs a number,"
        " and `exists: false` allows only null (missing)",
        f"{path}:14: refunds: warning: `lt: 50` can never hold together with `gte: 100`:"
        " no value is in both",
        f"{path}:15: refunds: warning: `gte: 2` can never hold: it needs a number,"
        " and `_kafka.headers.x-retry` is always text or null (missing)",
        f"{path}:16: refunds: warning: `_kafka.header.x-source` is always null: `_kafka` has no"
        " `header` (it has key, topic, partition, offset, timestamp, headers, schema, key_schema)",
        "ok: 2 rules in 1 file, 6 warnings",
    ]


SCHEMA_PATHS = """\
rules:
  - id: avro-only
    topics: [payments]
    when:
      _kafka.schema.type: AVRO
      _kafka.schema.version: {gte: 2}
      _kafka.key_schema.subject: {exists: true}
      _kafka.key.user_id: u-1
      _kafka.schema.name: x
      _kafka.schema.version.major: 1
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
"""


def test_kafka_schema_paths_are_known_to_the_condition_checks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, "schema.yaml", SCHEMA_PATHS)
    code, out, _ = run(capsys, "rules", "check", path)
    assert code == 0
    assert out.splitlines() == [
        f"{path}:9: avro-only: warning: `_kafka.schema.name` is always null: `_kafka.schema` has"
        " no `name` (it has id, subject, version, type)",
        f"{path}:10: avro-only: warning: `_kafka.schema.version.major` is always null:"
        " `_kafka.schema.version` is a number or null (missing), which has no fields",
        "ok: 1 rule in 1 file, 2 warnings",
    ]


@pytest.mark.parametrize(
    ("when", "warning"),
    [
        pytest.param("{x: {gt: 1.5e+3}}", None, id="a number: no warning"),
        pytest.param(
            "{x: {gt: 1.5e3}}",
            "write `gt: 1500.0` to compare numbers",
            id="YAML 1.1 reads 1.5e3 as text",
        ),
        pytest.param('{x: {lt: "b"}}', None, id="text orders as text: no warning"),
        pytest.param("{x: {gte: 5, lte: 5}}", None, id="one value left: no warning"),
        pytest.param("{x: {exists: true, ne: null}}", None, id="agreeing conditions"),
        pytest.param("{x: {in: [null, 1], exists: false}}", None, id="in allows null"),
        pytest.param('{x: {lte: "-2.5"}}', '`lte: "-2.5"` is text', id="a numeral as text"),
        pytest.param("{x: {gt: 5, lt: 5}}", "`lt: 5` can never hold together", id="empty range"),
        pytest.param('{x: {gt: "b", lt: "a"}}', '`lt: "a"` can never hold', id="text range"),
        pytest.param("{x: {eq: 3, gt: 5}}", "`gt: 5` can never hold together", id="eq outside"),
        pytest.param("{x: {exists: true, eq: null}}", "`eq: null` can never", id="exists, null"),
        pytest.param('{x: {eq: 5, matches: "a"}}', "and `eq: 5` allows only a", id="5 and a regex"),
        pytest.param('{_kafka.partition: "0"}', '`_kafka.partition: "0"` can', id="_kafka number"),
        pytest.param("{_kafka.topic.name: x}", "`_kafka.topic` is text, which", id="_kafka field"),
    ],
)
def test_check_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, when: str, warning: str | None
) -> None:
    rule = GOOD.replace("when: {type: signup}", f"when: {when}")
    code, out, _ = run(capsys, "rules", "check", write(tmp_path, "r.yaml", rule))
    assert code == 0
    found = [line for line in out.splitlines() if ": warning: " in line]
    if warning is None:
        assert found == []
    else:
        [line] = found
        assert warning in line


def test_check_exists_with_a_non_boolean_stays_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rule = GOOD.replace("when: {type: signup}", 'when: {x: {exists: "yes"}, y: {in: []}}')
    path = write(tmp_path, "r.yaml", rule)
    code, out, err = run(capsys, "rules", "check", path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}:4: welcome: `exists`: needs true or false",
        f"{path}:4: welcome: warning: `in: []` can never hold: no value is in an empty list",
    ]
    assert err == "1 problem(s) found, 1 warning\n"


def test_check_lists_problems_and_warnings_in_file_and_line_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    never = write(tmp_path, "a.yaml", NEVER.replace("id: refunds", "id: refunds\n    bad: 1"))
    broken = write(tmp_path, "b.yaml", BROKEN)
    code, out, _ = run(capsys, "rules", "check", never, broken)
    assert code == 1
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        *(f"{never}:{n}" for n in (5, 6, 11, 14, 15, 16, 17)),
        *(f"{broken}:{n}" for n in (2, 10, 12, 16, 17)),
    ]
    assert "unknown key `bad`" in lines[2]


def test_shipped_rules_have_no_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "check", str(CONFIG / "rules.yaml"))
    assert code == 0
    assert out.startswith("ok: ")
    assert "warning" not in out


# -- rules preview: why an event matched nothing ----------------------------------------------

TWO_RULES = """\
rules:
  - id: big-order
    topics: [orders, returns]
    when:
      type: order.placed
      data.total: {gte: 50}
      data.email: {matches: '@'}
    canvas: {id: c-1}
    recipient: {external_user_id: "{{ user }}"}
  - id: vip
    topics: [orders]
    when:
      _kafka.headers.tier: vip
    canvas: {id: c-2}
    recipient: {external_user_id: "{{ user }}"}
"""


def preview_unmatched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, topic: str, event: str
) -> tuple[list[Any], str]:
    rules = write(tmp_path, "rules.yaml", TWO_RULES)
    events = write(tmp_path, "events.jsonl", event + "\n")
    code, out, err = run(
        capsys, "rules", "preview", "--rules", rules, "--topic", topic, "--event", events
    )
    assert code == 0
    [report] = [strict_loads(line) for line in out.splitlines()]
    assert report["matched"] is False
    return report["unmatched"], err


def test_preview_names_each_rules_first_failed_condition(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = '{"type": "order.placed", "data": {"total": "60"}}'
    unmatched, err = preview_unmatched(capsys, tmp_path, "orders", event)
    assert err == ""
    assert unmatched == [
        {
            "rule_id": "big-order",
            "path": "data.total",
            "operator": "gte",
            "expected": 50,
            "actual": "60",
            "found": True,
            "message": 'first failed condition: data.total gte 50; the event has "60",'
            " text where the condition needs a number"
            " (values of different JSON types never compare)",
        },
        {
            "rule_id": "vip",
            "path": "_kafka.headers.tier",
            "operator": "eq",
            "expected": "vip",
            "actual": None,
            "found": False,
            "message": 'first failed condition: _kafka.headers.tier eq "vip";'
            " the event has no _kafka.headers.tier",
        },
    ]


def test_preview_follows_the_rules_order_of_conditions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = '{"type": "order.placed", "data": {"total": 70, "email": null}}'
    unmatched, _ = preview_unmatched(capsys, tmp_path, "returns", event)
    assert [(u["rule_id"], u["path"], u["operator"]) for u in unmatched] == [
        ("big-order", "data.email", "matches")
    ]
    assert unmatched[0]["found"] is True
    assert unmatched[0]["message"].endswith(
        "the event has null, null (missing) where the condition needs text"
        " (values of different JSON types never compare)"
    )


def test_preview_says_when_no_rule_reads_the_topic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unmatched, err = preview_unmatched(capsys, tmp_path, "order", '{"type": "order.placed"}')
    message = "no rule reads topic order (did you mean orders?); the rules read: orders, returns"
    entry = {"rule_id": None, "topic": "order", "rule_topics": ["orders", "returns"]}
    assert unmatched == [{**entry, "message": message}]
    assert err == f"warning: {message}\n"


def test_preview_cuts_long_event_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    event = json.dumps({"type": "x" * 500})
    unmatched, _ = preview_unmatched(capsys, tmp_path, "returns", event)
    actual = unmatched[0]["actual"]
    assert isinstance(actual, str)
    assert actual.startswith('"xxx')
    assert actual.endswith("...")
    assert len(actual) == 203

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
        {"line": 3, "requests": [], "skipped": [], "errors": [], "matched": False},
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
    code, out, err = run(capsys, "rules", "preview", "--rules", rules, "--topic", "t", *argv)
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

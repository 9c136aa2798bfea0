"""`braze-consumer rules check` and `rules preview`: the rules table from an operator's shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from consumer.events import DecodeError, KafkaMeta, RawMessage, decode
from consumer.intents import (
    MappingFailure,
    Outcome,
    RuleSkip,
    SendIntent,
    printable,
    strict_json_problem,
)
from consumer.json_types import JSONObject, JSONValue
from consumer.rules.errors import RulesError
from consumer.rules.load import expand_rule_paths, load_rules, load_rules_many
from consumer.rules.table import RulesTable

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    rules = subparsers.add_parser("rules", help="validate rule files or preview what they send")
    commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate rule files; list every problem")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    check.set_defaults(handler=run_check)
    preview = commands.add_parser(
        "preview", help="print the Braze request each event (JSON lines) would produce"
    )
    preview.add_argument("--rules", required=True, type=Path, help="rules file or folder")
    preview.add_argument("--topic", required=True, help="the topic the events come from")
    preview.add_argument(
        "--event", required=True, help="file with one JSON event a line; - = stdin"
    )
    preview.add_argument("--key", help="Kafka message key (`_kafka.key`)")
    preview.add_argument("--timestamp-ms", type=int, help="Kafka timestamp (default: now)")
    preview.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="a Kafka header"
    )
    preview.add_argument("--now-ms", type=int, help="evaluate as if at this time (default: now)")
    preview.set_defaults(handler=run_preview)


def run_check(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    missing = [path for path in paths if not path.exists()]
    if missing:
        for path in missing:
            print(f"error: no such file or folder: {path}", file=sys.stderr)
        return EXIT_USAGE
    try:
        table = load_rules_many(paths)
    except RulesError as exc:
        _print_problems(exc)
        return EXIT_INVALID
    files = len(expand_rule_paths(paths)[0])
    rules = len(table.rule_ids)
    print(f"ok: {rules} rule{'s' * (rules != 1)} in {files} file{'s' * (files != 1)}")
    return EXIT_OK


def run_preview(args: argparse.Namespace) -> int:
    if not args.rules.exists():
        print(f"error: no such file or folder: {args.rules}", file=sys.stderr)
        return EXIT_USAGE
    try:
        headers = tuple(_header(text) for text in args.header)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        table = load_rules(args.rules)
    except RulesError as exc:
        _print_problems(exc)
        return EXIT_INVALID
    now_ms = args.now_ms if args.now_ms is not None else int(time.time() * 1000)
    meta = _kafka_meta(args, headers, now_ms)
    try:
        with _open_events(args.event) as stream:
            for report in preview_lines(table, meta, stream, now_ms):
                print(preview_json(report))
    except OSError as exc:
        print(f"error: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _kafka_meta(
    args: argparse.Namespace, headers: tuple[tuple[str, bytes | None], ...], now_ms: int
) -> KafkaMeta:
    """What `_kafka` holds in a preview: the options given, the current time as timestamp."""
    return KafkaMeta(
        topic=args.topic,
        partition=0,
        offset=0,
        key=args.key.encode("utf-8") if args.key is not None else None,
        timestamp_ms=args.timestamp_ms if args.timestamp_ms is not None else now_ms,
        headers=headers,
    )


def preview_lines(
    table: RulesTable, meta: KafkaMeta, lines: Iterable[bytes], now_ms: int
) -> Iterator[JSONObject]:
    """One report per non-blank line; line n is offset n-1, as if consumed in order."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        raw = RawMessage(
            KafkaMeta(
                meta.topic, meta.partition, number - 1, meta.key, meta.timestamp_ms, meta.headers
            ),
            line.rstrip(b"\r\n"),
        )
        decoded = decode(raw)
        if isinstance(decoded, DecodeError):
            error: JSONObject = {"rule_id": None, "field": None}
            error |= {"reason": decoded.reason, "message": decoded.detail}
            yield _report(number, [], [], [error], matched=False)
        else:
            outcomes = table.evaluate(decoded, now_ms)
            yield _outcomes_report(number, outcomes)


def preview_json(report: JSONObject) -> str:
    """One report as strict JSON: what the Braze client would send, never `NaN` or `Infinity`.

    The rules already turn values that are not strict JSON into mapping errors; should a report
    still hold one, the line says so in strict JSON instead of stopping the preview.
    """
    try:
        text = json.dumps(report, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # print() would fail on a lone surrogate, mid-stream
    except ValueError as exc:  # UnicodeEncodeError is one too
        problem = strict_json_problem(report)
        where, why = problem if problem is not None else ("", str(exc))
        error: JSONObject = {"rule_id": None, "field": None, "reason": "internal"}
        error["message"] = printable(f"this report is not strict JSON: report{where}: {why}")
        fallback = _report(_line_number(report), [], [], [error], matched=False)
        return json.dumps(fallback, ensure_ascii=False, allow_nan=False)
    return text


def _line_number(report: JSONObject) -> int:
    line = report.get("line")
    return line if isinstance(line, int) else 0


def _outcomes_report(number: int, outcomes: list[Outcome]) -> JSONObject:
    requests: list[JSONValue] = []
    skipped: list[JSONValue] = []
    errors: list[JSONValue] = []
    for outcome in outcomes:
        if isinstance(outcome, SendIntent):
            body = outcome.key.request_body([outcome.recipient])
            requests.append(
                {"rule_id": outcome.rule_id, "endpoint": outcome.key.endpoint.value, "body": body}
            )
        elif isinstance(outcome, RuleSkip):
            skipped.append({"rule_id": outcome.rule_id, "reason": outcome.reason})
        elif isinstance(outcome, MappingFailure):
            errors.append(
                {
                    "rule_id": outcome.rule_id,
                    "field": outcome.field,
                    "reason": outcome.reason,
                    "message": outcome.message,
                }
            )
    return _report(number, requests, skipped, errors, matched=bool(outcomes))


def _report(
    number: int,
    requests: list[JSONValue],
    skipped: list[JSONValue],
    errors: list[JSONValue],
    *,
    matched: bool,
) -> JSONObject:
    report: JSONObject = {"line": number, "requests": requests, "skipped": skipped}
    report |= {"errors": errors, "matched": matched}
    return report


def _header(text: str) -> tuple[str, bytes | None]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--header needs NAME=VALUE, got {text!r}")
    return name, value.encode("utf-8")


def _open_events(name: str) -> IO[bytes]:
    if name == "-":
        # A fresh handle on stdin so the `with` block does not close the real stdin.
        return open(sys.stdin.fileno(), "rb", closefd=False)
    return open(name, "rb")


def _print_problems(error: RulesError) -> None:
    for problem in error.problems:
        print(problem)
    print(f"{len(error.problems)} problem(s) found", file=sys.stderr)

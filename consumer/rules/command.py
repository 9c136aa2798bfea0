"""`braze-consumer rules check` and `rules preview`: the rules table from an operator's shell."""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from consumer.events import (
    DecodeError,
    Event,
    KafkaMeta,
    RawMessage,
    SchemaWait,
    decode_any,
)
from consumer.intents import (
    MappingFailure,
    Outcome,
    RuleSkip,
    SendIntent,
    printable,
    strict_json_problem,
)
from consumer.json_types import JSONObject, JSONValue
from consumer.rules.build import rule_warnings
from consumer.rules.conditions import (
    Condition,
    Step,
    accepted_types,
    compile_conditions,
    describe_types,
    json_type,
    resolve,
)
from consumer.rules.errors import RuleProblem, RulesError
from consumer.rules.jsonvalues import as_json
from consumer.rules.load import expand_rule_paths, load_rules, load_rules_many
from consumer.rules.table import RulesTable
from consumer.yaml_lines import DEFAULT_MAX_BYTES, LineIndex, Loc, YamlError, load_yaml_with_lines

if TYPE_CHECKING:  # the registry client loads only when a registry is asked for
    from consumer.schemas.decoder import WireDecoder
    from consumer.schemas.registry import Registry

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
SHOWN_MAX_CHARS = 200  # an event value quoted in an explanation is cut after this many characters


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    rules = subparsers.add_parser("rules", help="validate rule files or preview what they send")
    commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate rule files; list every problem")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    _registry_options(
        check,
        "also check each rule against the latest schema of its topics' <topic>-value"
        " subjects (Confluent-compatible API, e.g. .../apis/ccompat/v7)",
    )
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
    _registry_options(
        preview,
        "decode Schema Registry records (a line of base64 whose bytes start with 0x00)"
        " through this registry; needed by --event-avro and --event-proto",
    )
    encode = preview.add_mutually_exclusive_group()
    encode.add_argument(
        "--event-avro",
        action="store_true",
        help="each line is JSON to encode with the latest Avro schema of <topic>-value",
    )
    encode.add_argument(
        "--event-proto",
        action="store_true",
        help="each line is JSON to encode with the latest Protobuf schema of <topic>-value",
    )
    preview.set_defaults(handler=run_preview)


def _registry_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--schema-registry URL and its credentials (read by `_registry`)."""
    parser.add_argument("--schema-registry", metavar="URL", help=what)
    parser.add_argument("--schema-registry-user", metavar="USER", help="basic-auth user")
    parser.add_argument(
        "--schema-registry-password-file", type=Path, metavar="FILE", help="its password"
    )


def run_check(args: argparse.Namespace) -> int:
    paths: list[Path] = args.paths
    missing = [path for path in paths if not path.exists()]
    if missing:
        for path in missing:
            print(f"error: no such file or folder: {path}", file=sys.stderr)
        return EXIT_USAGE
    warnings = check_warnings(paths)
    try:
        table = load_rules_many(paths)
    except RulesError as exc:
        names = [str(file) for file in expand_rule_paths(paths)[0]]
        _print_problems(exc, warnings, names)
        return EXIT_INVALID
    schemas: dict[str, bool] = {}  # subject -> whether the registry has it
    if args.schema_registry is not None:
        try:
            problems, schemas = _schema_problems(args, paths)
        except _CannotCheckError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if problems:
            names = [str(file) for file in expand_rule_paths(paths)[0]]
            _print_problems(RulesError(problems), warnings, names)
            return EXIT_INVALID
    for warning in warnings:
        print(warning)
    for subject in (subject for subject, found in schemas.items() if not found):
        print(
            f"info: the schema registry has no subject {subject}: events of topic"
            f" {subject.removesuffix('-value')} are taken as JSON, not checked against a schema"
        )
    files = len(expand_rule_paths(paths)[0])
    rules = len(table.rule_ids)
    summary = f"ok: {rules} rule{'s' * (rules != 1)} in {files} file{'s' * (files != 1)}"
    if args.schema_registry is not None:
        summary += f", {_count(sum(schemas.values()), 'schema')} checked"
    print(summary + (f", {_count(len(warnings), 'warning')}" if warnings else ""))
    return EXIT_OK


class _CannotCheckError(Exception):
    """The schema check could not run: bad registry options, or the registry cannot answer."""


def _schema_problems(
    args: argparse.Namespace, paths: Sequence[Path]
) -> tuple[list[RuleProblem], dict[str, bool]]:
    """The rules' problems against their topics' latest schemas, and whether the registry has
    each subject asked for. Raises `_CannotCheckError`."""
    # Imported here: the registry client loads only when a registry is asked for.
    from consumer.rules import schema_check  # noqa: PLC0415
    from consumer.schemas.registry import RegistryUnavailableError  # noqa: PLC0415

    registry = _registry(args)
    found: dict[str, bool] = {}

    def latest(subject: str) -> schema_check.SubjectSchema | None:
        schema = schema_check.subject_shape(registry, subject)
        found[subject] = schema is not None
        return schema

    try:
        problems = schema_check.check_rules_against_schemas(paths, latest)
    except (RegistryUnavailableError, schema_check.SchemaCheckError) as exc:
        raise _CannotCheckError(f"schema registry {registry.url}: {exc}") from None
    return problems, found


def _registry(args: argparse.Namespace) -> Registry:
    """The registry the `--schema-registry*` options name. Raises `_CannotCheckError`."""
    from pydantic import ValidationError  # noqa: PLC0415

    from consumer.schemas.registry import Registry  # noqa: PLC0415
    from consumer.settings import SchemaRegistrySettings  # noqa: PLC0415

    try:
        settings = SchemaRegistrySettings(
            url=args.schema_registry,
            basic_auth_user=args.schema_registry_user,
            basic_auth_password_file=args.schema_registry_password_file,
        )
        if settings.url is None:
            raise ValueError("must not be empty")
        return Registry.from_settings(settings)
    except ValidationError as exc:
        reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise _CannotCheckError(f"--schema-registry: {reason}") from None
    except ValueError as exc:
        raise _CannotCheckError(f"--schema-registry: {exc}") from None


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
    for warning in check_warnings([args.rules]):
        print(warning, file=sys.stderr)
    if args.topic not in table.topics:
        print(f"warning: {_unread_topic_message(table, args.topic)}", file=sys.stderr)
    written = written_conditions([args.rules])
    now_ms = args.now_ms if args.now_ms is not None else int(time.time() * 1000)
    meta = _kafka_meta(args, headers, now_ms)
    try:
        wire, encode = _preview_registry(args)
    except _CannotCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _open_events(args.event) as stream:
            reports = preview_lines(table, meta, stream, now_ms, written, wire=wire, encode=encode)
            for report in reports:
                print(preview_json(report))
    except BrokenPipeError:
        raise  # `rules preview ... | head`: the reader left; main() ends quietly
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
    table: RulesTable,
    meta: KafkaMeta,
    lines: Iterable[bytes],
    now_ms: int,
    written: Mapping[str, tuple[WrittenCondition, ...]] | None = None,
    *,
    wire: WireDecoder | None = None,
    encode: Callable[[JSONValue], bytes] | None = None,
) -> Iterator[JSONObject]:
    """One report per non-blank line; line n is offset n-1, as if consumed in order.

    A line is a JSON event, or a Schema Registry record's bytes in base64 (what `kcat -e` or a
    dead letter shows; they start with 0x00): decoded through `wire` as the service decodes it,
    and the report shows the decoded event under `event`. With `encode` (--event-avro,
    --event-proto) every line is JSON, encoded into such a record first.

    With `written` (from `written_conditions`), the report of an event no rule matched says why
    under `unmatched`: per rule of the topic its first failed condition, or that no rule reads
    the topic.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value, binary = _event_bytes(line.strip(), encode)
        except ValueError as exc:
            problem: JSONObject = {"rule_id": None, "field": None, "reason": "invalid_json"}
            problem["message"] = f"cannot encode this event with the schema: {exc}"
            yield _report(number, [], [], [problem], matched=False)
            continue
        raw = RawMessage(
            KafkaMeta(
                meta.topic, meta.partition, number - 1, meta.key, meta.timestamp_ms, meta.headers
            ),
            value,
        )
        decoded = decode_any(raw, wire)
        if isinstance(decoded, SchemaWait):
            decoded = DecodeError(raw, "schema_registry", decoded.detail)
        elif binary and wire is None:
            detail = "a Schema Registry record: give --schema-registry URL to decode it"
            decoded = DecodeError(raw, "invalid_payload", detail)
        if isinstance(decoded, DecodeError):
            error: JSONObject = {"rule_id": None, "field": None}
            error |= {"reason": decoded.reason, "message": decoded.detail}
            yield _report(number, [], [], [error], matched=False)
            continue
        outcomes = table.evaluate(decoded, now_ms)
        report = _outcomes_report(number, outcomes)
        if binary:
            report["event"] = decoded.document
        if not outcomes and written is not None:
            report["unmatched"] = why_unmatched(table, written, decoded)
        yield report


_BASE64_PREFIX = b"base64:"


def _event_bytes(
    line: bytes, encode: Callable[[JSONValue], bytes] | None = None
) -> tuple[bytes, bool]:
    """A line's message value, and whether it is a Schema Registry record: given in base64
    (`base64:` in front is optional), or JSON to `encode` into one. Raises ValueError when the
    JSON does not fit the schema."""
    if encode is not None:
        return encode(json.loads(line)), True
    text = line.removeprefix(_BASE64_PREFIX)
    try:
        value = base64.b64decode(text, validate=True)
    except ValueError:
        return line, False
    if value[:1] != b"\x00":
        return line, False
    return value, True


def _preview_registry(
    args: argparse.Namespace,
) -> tuple[WireDecoder | None, Callable[[JSONValue], bytes] | None]:
    """The decoder for records given in base64, and the encoder of --event-avro/--event-proto.
    Raises `_CannotCheckError`."""
    if args.schema_registry is None:
        if args.event_avro or args.event_proto:
            raise _CannotCheckError("--event-avro and --event-proto need --schema-registry URL")
        return None, None
    from consumer.schemas.decoder import WireDecoder  # noqa: PLC0415
    from consumer.schemas.encoder import wire_encoder  # noqa: PLC0415
    from consumer.schemas.registry import RegistryUnavailableError  # noqa: PLC0415

    registry = _registry(args)
    encode = None
    if args.event_avro or args.event_proto:
        try:
            encode = wire_encoder(registry, args.topic, "avro" if args.event_avro else "proto")
        except (RegistryUnavailableError, LookupError) as exc:
            raise _CannotCheckError(f"schema registry {registry.url}: {exc}") from None
    return WireDecoder(registry), encode


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


def _print_problems(
    error: RulesError, warnings: Sequence[RuleProblem] = (), files: Sequence[str] = ()
) -> None:
    """Problems and warnings on stdout in `files` and line order; their count on stderr.

    Problems about no file of `files` (a folder without rule files) come first, as the loader
    lists them; on one line, a problem comes before a warning (the sort is stable).
    """
    rank = {name: position for position, name in enumerate(files)}
    merged = [*error.problems, *warnings]
    for problem in sorted(merged, key=lambda p: (rank.get(p.file, -1), p.line)):
        print(problem)
    count = f"{len(error.problems)} problem(s) found"
    print(count + (f", {_count(len(warnings), 'warning')}" if warnings else ""), file=sys.stderr)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


# -- what loads but cannot work, and why an event matched nothing -------------------------------


@dataclass(frozen=True)
class RawRule:
    """One rule as its file writes it, before compiling: where warnings and explanations look."""

    file: str
    rule_id: str  # "-" without a readable id
    spec: Mapping[object, object]
    index: LineIndex
    loc: Loc  # the rule's location in its file, ("rules", position)

    def line_of(self, loc: Loc) -> int:
        return self.index.line_of((*self.loc, *loc))


def raw_rules(paths: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[RawRule]:
    """Every rule mapping of the files `paths` name; unreadable files are the loader's to report."""
    for file in expand_rule_paths(paths)[0]:
        try:
            data, index = load_yaml_with_lines(file, max_bytes=max_bytes)
        except (YamlError, OSError):
            continue
        rules = data.get("rules") if isinstance(data, dict) else None
        for position, spec in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(spec, dict):
                rule_id = spec.get("id")
                name = rule_id if isinstance(rule_id, str) and rule_id else "-"
                yield RawRule(str(file), name, spec, index, ("rules", position))


def check_warnings(paths: Sequence[Path]) -> list[RuleProblem]:
    """`file:line: rule-id: warning: ...` for each condition that can never hold."""
    return [
        RuleProblem(rule.file, rule.line_of(loc), rule.rule_id, f"warning: {message}")
        for rule in raw_rules(paths)
        for loc, message in rule_warnings(rule.spec)
    ]


@dataclass(frozen=True)
class WrittenCondition:
    """One condition as written (`path: {operator: expected}`), compiled on its own."""

    path: str
    operator: str
    expected: JSONValue
    condition: Condition


def written_conditions(paths: Sequence[Path]) -> dict[str, tuple[WrittenCondition, ...]]:
    """Per rule id, its conditions in the order the rule tests them (the file's order)."""
    return {rule.rule_id: _conditions_of(rule.spec) for rule in raw_rules(paths)}


def _conditions_of(spec: Mapping[object, object]) -> tuple[WrittenCondition, ...]:
    when = spec.get("when")
    if not isinstance(when, Mapping):
        return ()
    found: list[WrittenCondition] = []
    for path, tests in when.items():
        pairs = tests.items() if isinstance(tests, Mapping) else [("eq", tests)]
        for name, operand in pairs:
            compiled, issues = compile_conditions({str(path): {name: operand}})
            if compiled and not issues:
                found.append(WrittenCondition(str(path), str(name), as_json(operand), compiled[0]))
    return tuple(found)


def why_unmatched(
    table: RulesTable, written: Mapping[str, tuple[WrittenCondition, ...]], event: Event
) -> list[JSONValue]:
    """Per rule of the event's topic, its first condition that failed; or that none reads it."""
    topic = event.raw.meta.topic
    rules = [rule for rule in table.rules if topic in rule.topics]
    if not rules:
        read: list[JSONValue] = [*sorted(table.topics)]
        entry: JSONObject = {"rule_id": None, "topic": topic, "rule_topics": read}
        entry["message"] = _unread_topic_message(table, topic)
        return [entry]
    found: list[JSONValue] = []
    for rule in rules:
        conditions = written.get(rule.rule_id, ())
        failed = next((c for c in conditions if not c.condition.holds(event.document)), None)
        if failed is not None:
            found.append(_failed_condition(rule.rule_id, failed, event.document))
    return found


def _unread_topic_message(table: RulesTable, topic: str) -> str:
    read = sorted(table.topics)
    close = difflib.get_close_matches(topic, read, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"no rule reads topic {topic}{hint}; the rules read: {', '.join(read)}"


def _failed_condition(rule_id: str, written: WrittenCondition, document: JSONObject) -> JSONObject:
    found, actual = _lookup(document, written.condition.steps)
    expected = json.dumps(written.expected, ensure_ascii=False)
    condition = f"{written.path} {written.operator} {expected}"
    had = f"the event has {_quoted(actual)}" if found else f"the event has no {written.path}"
    needs = accepted_types(written.operator, written.expected)
    if found and json_type(actual) not in needs:
        had += (
            f", {describe_types(frozenset({json_type(actual)}))} where the condition needs"
            f" {describe_types(needs)} (values of different JSON types never compare)"
        )
    entry: JSONObject = {"rule_id": rule_id, "path": written.path}
    entry |= {"operator": written.operator, "expected": written.expected}
    entry |= {"actual": _shown(actual), "found": found}
    entry["message"] = printable(f"first failed condition: {condition}; {had}")
    return entry


def _lookup(document: JSONObject, steps: tuple[Step, ...]) -> tuple[bool, JSONValue]:
    """(whether the path is present, its value): a missing path and a null both read as null."""
    parent = resolve(document, steps[:-1])
    key, index = steps[-1]
    if isinstance(parent, dict):
        return key in parent, parent.get(key)
    if isinstance(parent, list) and index is not None and index < len(parent):
        return True, parent[index]
    return False, None


def _quoted(value: JSONValue) -> str:
    """An event value as JSON text, cut after SHOWN_MAX_CHARS characters."""
    text = json.dumps(value, ensure_ascii=False)  # NaN and Infinity as names: this is prose
    return text if len(text) <= SHOWN_MAX_CHARS else text[:SHOWN_MAX_CHARS] + "..."


def _shown(value: JSONValue) -> JSONValue:
    """The event's value itself when it is short strict JSON, else its cut text."""
    text = _quoted(value)
    if text.endswith("...") or strict_json_problem(value) is not None:
        return printable(text)
    return value

r"""Rule conditions (`when:`): compiled at load into predicates over the event document.

A key is a dotted path (`data.total`, `_kafka.headers.x-source`, `data.items.0.sku`); a missing path
reads as null, as in JMESPath. Comparisons between different JSON types are false, never errors,
and booleans are never numbers.

`matches` searches a string with an RE2 regular expression (google-re2). RE2 matches in time linear
in the text, so no event can make a pattern backtrack (Python's `re` can take minutes on 41
characters). RE2 has no backreferences or lookaround, `\d \w \s \b` are ASCII, and `$` is the end
of the text (not before a final newline); `rules check` reports patterns RE2 cannot compile.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from consumer.json_types import JSONValue
from consumer.rules.jsonvalues import as_json, json_equal
from consumer.rules.model import Issue

Predicate = Callable[[JSONValue], bool]
Step = tuple[str, int | None]  # (object key, list index when the segment is a number)
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "matches")

# RE2 is linear in the text, but the factor is the compiled program's size in the worst case (when
# its DFA runs out of memory and it falls back to simulating the program). Counted repetitions copy
# their operand (`.{0,255}` is 2,297 instructions); 2,000 keeps the measured worst case under a
# second per MB of text and admits Unicode classes such as `[\p{L}\p{N}_]+` (1,346).
MAX_PATTERN_PROGRAM = 2_000


@dataclass(frozen=True, slots=True)
class Condition:
    path: str
    steps: tuple[Step, ...]
    test: Predicate
    # The text an `eq` condition wants (`type: order.shipped`), else None: the rules table looks
    # rules up by it (`consumer.rules.table`) instead of testing each.
    equals_text: str | None = None
    # `resolve(document, steps)`, specialised at load for the common short paths (every event
    # of a topic is tested against its rules' conditions).
    read: Callable[[JSONValue], JSONValue] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read", path_reader(self.steps))

    def holds(self, document: JSONValue) -> bool:
        return self.test(self.read(document))


def path_reader(steps: tuple[Step, ...]) -> Callable[[JSONValue], JSONValue]:
    """A function equal to `resolve(document, steps)`, without its loop for one or two keys
    (also the templates' field chains: steps without an index never read into a list)."""
    if len(steps) == 1 and steps[0][1] is None:
        only = steps[0][0]

        def read_one(document: JSONValue) -> JSONValue:
            return document.get(only) if isinstance(document, dict) else None

        return read_one
    if len(steps) == 2 and steps[0][1] is None and steps[1][1] is None:
        first, second = steps[0][0], steps[1][0]

        def read_two(document: JSONValue) -> JSONValue:
            if isinstance(document, dict):
                inner = document.get(first)
                if isinstance(inner, dict):
                    return inner.get(second)
            return None

        return read_two
    return lambda document: resolve(document, steps)


def compile_path(text: str) -> tuple[Step, ...]:
    """`"data.items.0"` -> (("data", None), ("items", None), ("0", 0)). Raises ValueError."""
    parts = text.split(".")
    if not text or any(part == "" for part in parts):
        raise ValueError(f"invalid path {text!r}: use dot-separated keys such as data.total")
    return tuple((part, int(part) if part.isdigit() else None) for part in parts)


def resolve(document: JSONValue, steps: tuple[Step, ...]) -> JSONValue:
    """The value at `steps`, or None when any step is missing or of the wrong type."""
    current = document
    for key, index in steps:
        if isinstance(current, dict):
            current = current.get(key)
        elif isinstance(current, list) and index is not None and index < len(current):
            current = current[index]
        else:
            return None
    return current


def compile_conditions(when: Mapping[str, object]) -> tuple[tuple[Condition, ...], list[Issue]]:
    """All conditions of one rule, with issues located under `("when", path[, operator])`."""
    conditions: list[Condition] = []
    issues: list[Issue] = []
    for path, spec in when.items():
        try:
            steps = compile_path(path)
        except ValueError as exc:
            issues.append(((path,), str(exc)))
            continue
        for loc, result in _predicates(spec):
            if isinstance(result, str):
                issues.append(((path, *loc), result))
            else:
                conditions.append(Condition(path, steps, result, _equals_text(spec, loc)))
    return tuple(conditions), [(("when", *loc), message) for loc, message in issues]


def _equals_text(spec: object, loc: tuple[str, ...]) -> str | None:
    """The operand of the predicate at `loc` when it is `eq` of a string."""
    operand: object = None
    if loc == ():
        operand = spec
    elif loc == ("eq",) and isinstance(spec, Mapping):
        operand = spec.get("eq")
    return operand if isinstance(operand, str) else None


def _predicates(spec: object) -> Iterator[tuple[tuple[str, ...], Predicate | str]]:
    """Predicates for one key; a message string in place of a predicate is an issue."""
    if not isinstance(spec, Mapping):
        yield (), _compile_operator("eq", spec)
        return
    if not spec:
        yield (), "an empty operator mapping; write a value, or {operator: value}"
    for name, operand in spec.items():
        if name not in OPERATORS:
            known = ", ".join(OPERATORS)
            yield (str(name),), f"unknown condition operator {name!r} (known: {known})"
        else:
            yield (name,), _compile_operator(name, operand)


def _compile_operator(operator: str, operand: object) -> Predicate | str:
    try:
        value = as_json(operand)
    except ValueError as exc:
        return str(exc)
    builder = _BUILDERS[operator]
    try:
        return builder(value)
    except ValueError as exc:
        return f"`{operator}`: {exc}"


def _equals(operand: JSONValue) -> Predicate:
    if operand is None:
        return lambda value: value is None
    if isinstance(operand, str):
        return lambda value: value == operand  # a str only equals a str
    return lambda value: json_equal(value, operand)


def _not_equals(operand: JSONValue) -> Predicate:
    equals = _equals(operand)
    return lambda value: not equals(value)


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[JSONValue], Predicate]:
    """Numbers compare with numbers and strings with strings (ISO 8601 times order as text)."""

    def build(operand: JSONValue) -> Predicate:
        if isinstance(operand, str):
            return lambda value: type(value) is str and compare(value, operand)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return lambda value: type(value) in (int, float) and compare(value, operand)
        raise ValueError("needs a number or a string")

    return build


def _member(operand: JSONValue) -> Predicate:
    if not isinstance(operand, list):
        raise ValueError("needs a list of values")
    strings = frozenset(item for item in operand if type(item) is str)
    numbers = frozenset(item for item in operand if type(item) in (int, float))
    booleans = frozenset(item for item in operand if type(item) is bool)
    has_null = None in operand
    others = tuple(item for item in operand if isinstance(item, list | dict))

    def test(value: JSONValue) -> bool:
        kind = type(value)
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        if kind is bool:
            return value in booleans
        if value is None:
            return has_null
        return any(json_equal(value, item) for item in others)

    return test


def _not_member(operand: JSONValue) -> Predicate:
    member = _member(operand)
    return lambda value: not member(value)


def _exists(operand: JSONValue) -> Predicate:
    if not isinstance(operand, bool):
        raise ValueError("needs true or false")
    return lambda value: (value is not None) is operand


def _matches(operand: JSONValue) -> Predicate:
    if not isinstance(operand, str):
        raise ValueError("needs a regular expression string")
    pattern = Pattern(operand)
    return lambda value: type(value) is str and pattern.search(value)


class Pattern:
    """A typed wrapper over google-re2 (which has no type stubs): compiled once, searched often."""

    def __init__(self, source: str) -> None:
        options = re2.Options()
        options.never_capture = True  # only "is there a match?": no submatch bookkeeping
        options.log_errors = False  # a bad pattern is a rule problem, not noise on stderr
        try:
            self._regexp = re2.compile(source, options)
        except re2.error as exc:
            raise ValueError(_compile_error(source, exc)) from exc
        program = self._regexp._regexp  # the RE2 object: its program sizes bound matching work
        size = max(program.ProgramSize(), program.ReverseProgramSize())
        if size > MAX_PATTERN_PROGRAM:
            raise ValueError(
                f"pattern `{source}` compiles to {size} RE2 instructions"
                f" (at most {MAX_PATTERN_PROGRAM}): matching costs up to that much per character;"
                " shorten counted repetitions such as `{0,255}`"
            )

    def search(self, text: str) -> bool:
        """Whether the pattern occurs anywhere in `text` (like `re.search`), in linear time."""
        # Bytes skip the wrapper's character-offset bookkeeping; surrogatepass keeps a lone
        # surrogate (valid in a JSON string, not in UTF-8) from raising.
        data = text.encode("utf-8", "surrogatepass")
        return self._regexp.search(data) is not None


# Constructs Python's `re` accepts and RE2 refuses, by the start of RE2's message.
_LINEAR = "RE2 matches in linear time"
_UNSUPPORTED = (
    ("invalid perl operator: (?=", f"lookahead is not supported: {_LINEAR}"),
    ("invalid perl operator: (?!", f"lookahead is not supported: {_LINEAR}"),
    ("invalid perl operator: (?<=", f"lookbehind is not supported: {_LINEAR}"),
    ("invalid perl operator: (?<!", f"lookbehind is not supported: {_LINEAR}"),
    ("invalid perl operator: (?>", f"atomic groups are not supported: {_LINEAR}"),
    ("bad repetition operator: ?+", f"possessive quantifiers are not supported: {_LINEAR}"),
    ("bad repetition operator: *+", f"possessive quantifiers are not supported: {_LINEAR}"),
    ("bad repetition operator: ++", f"possessive quantifiers are not supported: {_LINEAR}"),
    ("invalid escape sequence: \\Z", "write \\z for the end of the text"),
)


def _compile_error(source: str, error: Exception) -> str:
    raw = error.args[0] if error.args else ""
    detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    hint = next((hint for start, hint in _UNSUPPORTED if detail.startswith(start)), None)
    if hint is None and re.match(r"invalid escape sequence: \\[1-9]", detail):
        hint = f"backreferences are not supported: {_LINEAR}"
    why = f" ({hint})" if hint else ""
    return f"pattern `{source}` is not valid RE2 syntax: {detail}{why}"


_BUILDERS: dict[str, Callable[[JSONValue], Predicate]] = {
    "eq": _equals,
    "ne": _not_equals,
    "gt": _ordering(operator.gt),
    "gte": _ordering(operator.ge),
    "lt": _ordering(operator.lt),
    "lte": _ordering(operator.le),
    "in": _member,
    "not_in": _not_member,
    "exists": _exists,
    "matches": _matches,
}


# -- check-time warnings: conditions that can never hold --------------------------------------
# Valid conditions that no event can satisfy. They are warnings, not errors: the rule still
# loads (a deployed rules file that loaded before keeps loading), and `rules check` prints them.

JSON_TYPES = frozenset({"null", "boolean", "number", "string", "array", "object"})
_ORDERING = frozenset({"gt", "gte", "lt", "lte"})
_TYPE_NAMES = {
    "null": "null (missing)",
    "boolean": "true/false",
    "number": "a number",
    "string": "text",
    "array": "a list",
    "object": "an object",
}
# What `_kafka` holds (events.KafkaMeta.as_document); any other field reads as null.
_KAFKA_FIELDS: dict[str, frozenset[str]] = {
    # Text, or any JSON value when the key is a Schema Registry record.
    "key": JSON_TYPES,
    "topic": frozenset({"string"}),
    "partition": frozenset({"number"}),
    "offset": frozenset({"number"}),
    "timestamp": frozenset({"number", "null"}),
    "headers": frozenset({"object"}),
    "schema": frozenset({"object", "null"}),
    "key_schema": frozenset({"object", "null"}),
}
_NUMERAL = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")

# (location under `when`, operator, operand, the condition as written)
Test = tuple[tuple[str, ...], str, JSONValue, str]


def condition_warnings(when: Mapping[str, object]) -> list[Issue]:
    """Conditions of one rule that can never hold, located under `("when", path[, operator])`.

    Only valid conditions are looked at: invalid ones are errors reported by compile_conditions.
    """
    issues: list[Issue] = []
    for path, spec in when.items():
        try:
            steps = compile_path(path)
        except ValueError:
            continue
        issues.extend(_path_warnings(path, steps, _valid_tests(path, spec)))
    return [(("when", *loc), message) for loc, message in issues]


def json_type(value: JSONValue) -> str:
    """The JSON type name of a value (booleans are not numbers)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _valid_tests(path: str, spec: object) -> list[Test]:
    """The (location, operator, operand) of each valid condition on one path, in file order."""
    written = spec.items() if isinstance(spec, Mapping) else [("eq", spec)]
    tests: list[Test] = []
    for name, operand in written:
        if name not in OPERATORS or isinstance(_compile_operator(name, operand), str):
            continue
        value = as_json(operand)
        if isinstance(spec, Mapping):
            tests.append(((path, name), name, value, _written(name, value)))
        else:  # a plain value: `eq`, written as `path: value`
            tests.append(((path,), name, value, _written(path, value)))
    return tests


def _path_warnings(path: str, steps: tuple[Step, ...], tests: list[Test]) -> Iterator[Issue]:
    possible, why_null = _kafka_types(steps)
    if why_null:
        yield (path,), f"`{path}` is always null: {why_null}"
        return
    for loc, name, operand, _ in tests:
        note = _operand_warning(name, operand)
        if note:
            yield loc, note
    clash = _type_clash(path, possible, tests)
    if clash is not None:
        yield clash
        return
    empty = _empty_range(tests)
    if empty is not None:
        yield empty


# `_kafka.schema` (and `key_schema`): set for Schema Registry records, null for JSON events.
_SCHEMA_FIELDS: dict[str, frozenset[str]] = {
    "id": frozenset({"number", "null"}),
    "subject": frozenset({"string", "null"}),
    "version": frozenset({"number", "null"}),
    "type": frozenset({"string", "null"}),
}


def _schema_types(names: list[str]) -> tuple[frozenset[str], str]:
    if len(names) == 2:
        return frozenset({"object", "null"}), ""
    inner = f"_kafka.{names[1]}"
    sub = names[2]
    if sub not in _SCHEMA_FIELDS:
        known = ", ".join(_SCHEMA_FIELDS)
        return frozenset({"null"}), f"`{inner}` has no `{sub}` (it has {known})"
    if len(names) > 3:
        kind = describe_types(_SCHEMA_FIELDS[sub])
        return frozenset({"null"}), f"`{inner}.{sub}` is {kind}, which has no fields"
    return _SCHEMA_FIELDS[sub], ""


def _kafka_types(steps: tuple[Step, ...]) -> tuple[frozenset[str], str]:
    """The JSON types a path can read, and why it is always null (or "") for `_kafka` paths."""
    names = [key for key, _ in steps]
    if names[0] != "_kafka":
        return JSON_TYPES, ""
    if len(names) == 1:
        return frozenset({"object"}), ""
    field = names[1]
    if field not in _KAFKA_FIELDS:
        known = ", ".join(_KAFKA_FIELDS)
        return frozenset({"null"}), f"`_kafka` has no `{field}` (it has {known})"
    if field in ("schema", "key_schema"):
        return _schema_types(names)
    if field == "key" and len(names) > 2:
        return JSON_TYPES, ""  # into a key decoded from a Schema Registry record
    depth = 3 if field == "headers" else 2
    if len(names) > depth:
        inner = ".".join(names[:depth])
        kind = "text" if field == "headers" else describe_types(_KAFKA_FIELDS[field])
        return frozenset({"null"}), f"`{inner}` is {kind}, which has no fields"
    return (frozenset({"string", "null"}) if depth == 3 else _KAFKA_FIELDS[field]), ""


def _operand_warning(name: str, operand: JSONValue) -> str:
    """A warning about one condition on its own, or ""."""
    if name == "in" and operand == []:
        return "`in: []` can never hold: no value is in an empty list"
    if name in _ORDERING and isinstance(operand, str) and _NUMERAL.fullmatch(operand):
        # YAML 1.1 reads 1.5e3 as text (an exponent needs a sign): suggest what reads as a number.
        number = operand if "e" not in operand.lower() else json.dumps(float(operand))
        return (
            f'`{name}: "{operand}"` is text: it never holds for a number (values of different'
            f" JSON types never compare) and orders text character by character"
            f' ("9" > "10"); write `{name}: {number}` to compare numbers'
        )
    return ""


def accepted_types(name: str, operand: JSONValue) -> frozenset[str]:
    """The JSON types a value must have for `name: operand` to hold."""
    if name == "eq":
        return frozenset({json_type(operand)})
    if name in _ORDERING:
        return frozenset({json_type(operand)})  # a number or text: other operands are errors
    if name == "matches":
        return frozenset({"string"})
    if name == "in" and isinstance(operand, list):
        return frozenset(json_type(item) for item in operand)
    if name == "exists":
        return JSON_TYPES - {"null"} if operand is True else frozenset({"null"})
    if name == "ne" and operand is None:
        return JSON_TYPES - {"null"}
    return JSON_TYPES  # ne, not_in: a value of any type can differ


def _type_clash(path: str, possible: frozenset[str], tests: list[Test]) -> Issue | None:
    """The first condition needing a type that the path and the earlier conditions rule out."""
    allowed = possible
    earlier: list[str] = []
    for loc, name, operand, text in tests:
        needs = accepted_types(name, operand)
        if not needs:
            continue  # `in: []`: warned about on its own
        if not needs & allowed:
            if earlier:
                verb = "allow" if len(earlier) > 1 else "allows"
                because = f"{' and '.join(earlier)} {verb} only"
            else:
                because = f"`{path}` is always"
            return loc, (
                f"{text} can never hold: it needs {describe_types(needs)},"
                f" and {because} {describe_types(allowed)}"
            )
        if needs != JSON_TYPES:
            allowed &= needs
            earlier.append(text)
    return None


def _written(name: str, operand: JSONValue) -> str:
    return f"`{name}: {json.dumps(operand, ensure_ascii=False)}`"


def describe_types(types: frozenset[str]) -> str:
    """How a message names a set of JSON types, e.g. "a number or text"."""
    if types == JSON_TYPES - {"null"}:
        return "a value (not null)"
    return " or ".join(_TYPE_NAMES[kind] for kind in sorted(types, key=_TYPE_ORDER.index))


_TYPE_ORDER = ["number", "string", "boolean", "array", "object", "null"]


def _empty_range(tests: list[Test]) -> Issue | None:
    """The first ordering or `eq` condition no value can meet together with the earlier ones.

    Runs after the type check: all ordering operands and any `eq` operand share one type here.
    """
    low: tuple[Any, bool, str] | None = None  # (bound, inclusive, as written)
    high: tuple[Any, bool, str] | None = None
    for loc, name, operand, text in tests:
        if name in ("gt", "gte"):
            low = _tighter(low, (operand, name == "gte", text), operator.gt)
        elif name in ("lt", "lte"):
            high = _tighter(high, (operand, name == "lte", text), operator.lt)
        elif name == "eq" and json_type(operand) in ("number", "string"):
            low = _tighter(low, (operand, True, text), operator.gt)
            high = _tighter(high, (operand, True, text), operator.lt)
        else:
            continue
        if low is not None and high is not None and _disjoint(low, high):
            other = low[2] if low[2] != text else high[2]
            return loc, f"{text} can never hold together with {other}: no value is in both"
    return None


def _tighter(
    bound: tuple[Any, bool, str] | None,
    new: tuple[Any, bool, str],
    beyond: Callable[[Any, Any], bool],
) -> tuple[Any, bool, str]:
    """The stricter of two bounds on one side (`beyond` says which value is stricter)."""
    if bound is None or beyond(new[0], bound[0]) or (new[0] == bound[0] and not new[1]):
        return new
    return bound


def _disjoint(low: tuple[Any, bool, str], high: tuple[Any, bool, str]) -> bool:
    if (type(low[0]) is str) != (type(high[0]) is str):
        return False  # mixed types are the type check's to report
    if low[0] > high[0]:
        return True
    return bool(low[0] == high[0] and not (low[1] and high[1]))

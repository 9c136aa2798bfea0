"""`rules check --schema-registry`: the rules read against the latest schema of their topics.

The events of a topic whose subject `<topic>-value` (TopicNameStrategy) the registry has are
records of that subject's schemas; the latest one, as a JSON shape (`consumer.schemas.shapes`,
which follows the decoder's mapping), says which fields they have. Reported, at the line of the
key that says it:

- a path naming a field the schema does not have: a condition (`when:`), `event_time`, or a field
  a `{{ }}` expression reads (in `recipient`, `properties`, `attributes`, `schedule.time`);
- a condition that no value of the field's type can meet (`gt: "10"` on a double, `eq: 5` on
  text, `matches` on a number): it never holds, as values of different JSON types never compare.

Only what is certain is reported, never a guess:

- a path into a map, an open object (JSON Schema without `additionalProperties: false`), a
  Struct, Value or Any, or a type the schema only names (another subject) is accepted;
- a `{{ }}` expression is followed only while each step's input is known from the root of the
  event: after a function call, a literal, `||` or a multi-select, nothing more is checked;
- null is never held against a condition (`eq: null`, `exists`, `ne`, `not_in` are not checked):
  events written with an earlier version of the schema may lack a field the latest one has;
- `_kafka` is the consumer's, not the schema's: paths under it are never reported here.

A topic without a subject carries JSON events: its rules are not checked against anything.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import jmespath
from confluent_kafka.schema_registry import RegisteredSchema
from confluent_kafka.schema_registry.common._httpx_compat import httpx
from confluent_kafka.schema_registry.error import SchemaRegistryError
from jmespath.exceptions import JMESPathError

from consumer.json_types import JSONValue
from consumer.rules.command import raw_rules
from consumer.rules.conditions import OPERATORS, Step, accepted_types, compile_path
from consumer.rules.errors import RuleProblem
from consumer.rules.jsonvalues import as_json
from consumer.rules.model import Issue
from consumer.rules.templates import Expression, Text, compile_string
from consumer.schemas import shapes
from consumer.schemas.decoder import protobuf_messages, subject_of
from consumer.schemas.registry import Registry, RegistryUnavailableError, translate
from consumer.schemas.shapes import ANY, Obj, Shape
from consumer.yaml_lines import DEFAULT_MAX_BYTES

_KAFKA = "_kafka"
# Operators whose operand says which JSON type the value must have; the others (ne, not_in,
# exists) hold for some value of any type.
_TYPED_OPERATORS = frozenset({"eq", "gt", "gte", "lt", "lte", "in", "matches"})
# Sections whose text values may hold `{{ }}` expressions.
_TEMPLATE_SECTIONS = ("recipient", "properties", "attributes", "schedule")
_TYPE_ORDER = ("number", "string", "boolean", "array", "object", "null")
_TYPE_NAMES = {
    "number": "a number",
    "string": "text",
    "boolean": "true/false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}
_SHOWN_FIELDS = 8  # fields listed when a misspelt name is not close to any of them
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Node: TypeAlias = Mapping[str, Any]  # a JMESPath AST node: {"type", "children", "value"}


@dataclass(frozen=True)
class SubjectSchema:
    """The latest schema of one subject, as the JSON shape its records decode to."""

    subject: str
    schema_type: str  # AVRO, PROTOBUF or JSON
    version: int | None
    shape: Shape

    def __str__(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        return f"schema {self.subject} ({self.schema_type}{version})"


class SchemaCheckError(Exception):
    """The registry served a schema this check cannot read (it could not run)."""


def subject_shape(registry: Registry, subject: str) -> SubjectSchema | None:
    """The latest schema of `subject` as a shape; None when the registry has no such subject.

    Raises `RegistryUnavailableError` when the registry cannot answer, `SchemaCheckError` when
    its schema cannot be read. A Protobuf schema's root is its first top-level message (message
    index [0], what a producer's serializer uses unless told otherwise).
    """
    registered = registry.latest(subject)
    if registered is None:
        return None
    kind = (registered.schema.schema_type or "AVRO").upper()
    try:
        shape = _registered_shape(registry, subject, kind, registered)
    except (RegistryUnavailableError, SchemaCheckError):
        raise
    except (SchemaRegistryError, httpx.HTTPError) as exc:  # a reference the Protobuf schema imports
        raise translate(exc, f"subject {subject}", frozenset()) from None
    except Exception as exc:  # the parsers' own errors on a schema they cannot read
        text = " ".join((str(exc) or type(exc).__name__).split())[:300]
        raise SchemaCheckError(
            f"subject {subject}: cannot read its {kind} schema: {text}"
        ) from None
    return SubjectSchema(subject, kind, registered.version, shape)


def _registered_shape(
    registry: Registry, subject: str, kind: str, registered: RegisteredSchema
) -> Shape:
    text: str = registered.schema.schema_str or ""
    if kind == "AVRO":
        return shapes.avro_shape(text)
    if kind == "JSON":
        return shapes.json_schema_shape(text)
    if kind == "PROTOBUF":
        # The descriptor needs the serialized form. By id, not `get_latest_version(subject,
        # fmt="serialized")`: the client caches the latest version by subject alone, so that
        # would return the text form `Registry.latest` just fetched.
        if registered.schema_id is None:
            raise SchemaCheckError(f"subject {subject}: the registry gave no schema id")
        messages = protobuf_messages(registry.client, registry.serialized(registered.schema_id))
        if not messages:
            raise SchemaCheckError(f"subject {subject}: its Protobuf schema has no message")
        return shapes.protobuf_shape(messages[0])
    raise SchemaCheckError(f"subject {subject}: schema type {kind} is not supported")


def check_rules_against_schemas(
    paths: Sequence[Path],
    latest: Callable[[str], SubjectSchema | None],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[RuleProblem]:
    """Every problem of the rules in `paths` against the latest schema of each of their topics'
    value subjects (`latest(subject)`, asked once per subject; None: no such subject), in file
    and line order. Exceptions from `latest` propagate."""
    schemas: dict[str, SubjectSchema | None] = {}
    problems: list[RuleProblem] = []
    for rule in raw_rules(paths, max_bytes=max_bytes):
        found: dict[tuple[int, str], None] = {}
        for topic in _topics(rule.spec):
            subject = subject_of(topic, is_key=False)
            if subject not in schemas:
                schemas[subject] = latest(subject)
            schema = schemas[subject]
            if schema is None:
                continue
            for loc, message in rule_schema_issues(rule.spec, schema.shape):
                found[(rule.line_of(loc), f"{schema}: {message}")] = None
        problems.extend(
            RuleProblem(rule.file, line, rule.rule_id, message) for line, message in sorted(found)
        )
    return problems


def rule_schema_issues(spec: Mapping[object, object], shape: Shape) -> list[Issue]:
    """The problems of one raw rule against the shape of its events (locations in the rule)."""
    root = shapes.with_field(shape, _KAFKA, ANY)
    issues: list[Issue] = []
    when = spec.get("when")
    if isinstance(when, Mapping):
        issues.extend(_condition_issues(when, root))
    event_time = spec.get("event_time")
    if isinstance(event_time, str):
        issues.extend(_event_time_issues(event_time, root))
    for loc, text in _template_texts(spec):
        for source in _expressions(text):
            for message in _ExpressionReader.issues(source, root):
                issues.append((loc, f"`{{{{ {source} }}}}`: {message}"))
    return issues


def _topics(spec: Mapping[object, object]) -> list[str]:
    topics = spec.get("topics")
    return [t for t in topics if isinstance(t, str) and t] if isinstance(topics, list) else []


# -- conditions and event_time ---------------------------------------------------------------


def _condition_issues(when: Mapping[object, object], root: Shape) -> Iterator[Issue]:
    for path, spec in when.items():
        steps = _path_steps(path)
        if steps is None:
            continue
        found = _follow(root, steps)
        if isinstance(found, str):
            yield ("when", str(path)), f"condition `{path}`: {found}"
            continue
        for loc, name, operand, written in _tests(str(path), spec):
            clash = _type_clash(str(path), found, name, operand, written)
            if clash is not None:
                yield ("when", *loc), clash


def _event_time_issues(path: str, root: Shape) -> Iterator[Issue]:
    steps = _path_steps(path)
    if steps is None:
        return
    found = _follow(root, steps)
    if isinstance(found, str):
        yield ("event_time",), f"event_time `{path}`: {found}"
    elif not shapes.json_types(found, nonfinite_text=False) & {"number", "string"}:
        yield (
            ("event_time",),
            f"event_time `{path}` is {_describe(found)}: it needs ISO 8601 text or a number of"
            " epoch milliseconds",
        )


def _path_steps(path: object) -> tuple[Step, ...] | None:
    """The steps of a valid dotted path outside `_kafka`; None for others (invalid paths are
    the rules check's to report)."""
    if not isinstance(path, str):
        return None
    try:
        steps = compile_path(path)
    except ValueError:
        return None
    return None if steps[0][0] == _KAFKA else steps


def _follow(root: Shape, steps: Sequence[Step]) -> Shape | str:
    """The shape at the end of a dotted path, or why the schema has no such field."""
    current = root
    for position, (key, index) in enumerate(steps):
        found = shapes.step(current, key, index)
        if found is None:
            where = ".".join(name for name, _ in steps[:position])
            return _missing(current, where, key, f"{where}.0.{key}")
        current = found
    return current


def _tests(path: str, spec: object) -> Iterator[tuple[tuple[str, ...], str, JSONValue, str]]:
    """(location under `when`, operator, operand, as written) of each valid condition."""
    written = spec.items() if isinstance(spec, Mapping) else [("eq", spec)]
    for name, operand in written:
        if name not in OPERATORS:
            continue
        try:
            value = as_json(operand)
        except ValueError:
            continue
        text = json.dumps(value, ensure_ascii=False)
        if isinstance(spec, Mapping):
            yield (path, str(name)), str(name), value, f"`{path}: {{{name}: {text}}}`"
        else:
            yield (path,), "eq", value, f"`{path}: {text}`"


def _type_clash(path: str, shape: Shape, name: str, operand: JSONValue, written: str) -> str | None:
    if name not in _TYPED_OPERATORS:
        return None
    needs = accepted_types(name, operand) - {"null"}
    if not needs:
        return None  # `eq: null`, `in: [null]`: never held against a field (module doc)
    words = operand if isinstance(operand, list) else [operand]
    nonfinite = name in ("eq", "in") and any(word in shapes.NONFINITE_TEXTS for word in words)
    if needs & shapes.json_types(shape, nonfinite_text=nonfinite):
        return None
    return (
        f"{written} can never hold: it needs {_types_text(needs)},"
        f" and `{path}` is {_describe(shape)}"
    )


# -- templates --------------------------------------------------------------------------------


def _template_texts(spec: Mapping[object, object]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(location, text) of every text value of the sections that hold templates."""
    stack: list[tuple[tuple[str | int, ...], object]] = [
        ((section,), spec.get(section)) for section in reversed(_TEMPLATE_SECTIONS)
    ]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            yield loc, value
        elif isinstance(value, Mapping):
            stack.extend(((*loc, str(k)), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(value))))


def _expressions(text: str) -> list[str]:
    """The `{{ }}` expressions of a text value (none when it does not compile: the rules check
    reports that)."""
    try:
        template = compile_string(text)
    except ValueError:
        return []
    if isinstance(template, Expression):
        return [template.source]
    if isinstance(template, Text):
        return [part.source for part in template.parts if isinstance(part, Expression)]
    return []


@dataclass(frozen=True)
class _At:
    """What an expression has read so far: its shape, and the expression that reads it."""

    shape: Shape
    where: str  # "" for the event itself


_UNKNOWN = _At(ANY, "")  # a value the schema does not say: nothing read from it is checked


class _ExpressionReader:
    """Follows a JMESPath AST over shapes, as the interpreter would over a decoded event, and
    notes each field read from a known shape that has no such field."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @classmethod
    def issues(cls, source: str, root: Shape) -> list[str]:
        try:
            tree: Node = jmespath.compile(source).parsed
        except (JMESPathError, RecursionError):
            return []
        reader = cls()
        reader.read(tree, _At(root, ""))
        return list(dict.fromkeys(reader.found))

    def read(self, node: Node, at: _At) -> _At:
        visit = _VISITS.get(node.get("type", ""))
        return visit(self, node, at) if visit is not None else _UNKNOWN

    def _children(self, node: Node) -> list[Node]:
        children = node.get("children")
        return [child for child in children if isinstance(child, Mapping)] if children else []

    def field(self, node: Node, at: _At) -> _At:
        name = str(node.get("value"))
        if not at.shape.alternatives or (name == _KAFKA and not at.where):
            return _UNKNOWN  # never read (items of an empty object); the consumer's `_kafka`
        found = shapes.step(at.shape, name, None)
        where = f"{at.where}.{_quoted(name)}" if at.where else _quoted(name)
        if found is None:
            self.found.append(_missing(at.shape, at.where, name, f"{at.where}[].{_quoted(name)}"))
            return _UNKNOWN  # one problem per chain: what follows would only repeat it
        return _At(found, where)

    def chain(self, node: Node, at: _At) -> _At:
        """`a.b`, `a[0]`, `a | b`: each child reads what the previous one gave."""
        for child in self._children(node):
            at = self.read(child, at)
        return at

    def current(self, node: Node, at: _At) -> _At:
        return at

    def index(self, node: Node, at: _At) -> _At:
        value = node.get("value")
        found = shapes.step(at.shape, None, value if isinstance(value, int) else 0)
        return _UNKNOWN if found is None else _At(found, f"{at.where}[{value}]")

    def slice(self, node: Node, at: _At) -> _At:
        found = shapes.items(at.shape)
        return _UNKNOWN if found is None else _At(shapes.arr(found), at.where)

    def flatten(self, node: Node, at: _At) -> _At:
        inner = self.read(self._children(node)[0], at)
        found = shapes.items(inner.shape)
        if found is None:
            return _UNKNOWN
        flat = shapes.union(
            *(shapes.items(Shape((alt,))) or Shape((alt,)) for alt in found.alternatives)
        )
        return _At(shapes.arr(flat), f"{inner.where}[]")

    def projection(self, node: Node, at: _At) -> _At:
        """`a[*].b`, `a[].b`, `a[?test].b`, `a.*.b`: the right side reads each item (value)."""
        children = self._children(node)
        left = self.read(children[0], at)
        kind = node.get("type")
        if kind == "value_projection":
            found, where = shapes.values(left.shape), f"{left.where}.*"
        else:
            found = shapes.items(left.shape)
            marks = {"filter_projection": "[?...]", "projection": "[*]"}
            flat = children[0].get("type") == "flatten"
            where = left.where if flat else f"{left.where}{marks.get(str(kind), '[*]')}"
        if found is None:
            return _UNKNOWN  # a projection over what is never a list (object) reads nothing
        each = _At(found, where)
        for test in children[2:]:
            self.read(test, each)
        right = self.read(children[1], each) if len(children) > 1 else each
        return _At(shapes.arr(right.shape), right.where)

    def opaque(self, node: Node, at: _At) -> _At:
        """Comparisons, `||`, `&&`, `!`, multi-selects: their operands read from `at`; what they
        give is not followed."""
        for child in self._children(node):
            operand = self._children(child)[0] if child.get("type") == "key_val_pair" else child
            self.read(operand, at)
        return _UNKNOWN

    def function(self, node: Node, at: _At) -> _At:
        """A call's arguments read from `at`; `&expr` reads each item of the array argument of
        map, sort_by, min_by and max_by. The result is not followed."""
        arguments = self._children(node)
        items = _UNKNOWN
        for argument in arguments:
            if argument.get("type") != "expref":
                value = self.read(argument, at)
                found = shapes.items(value.shape)
                if found is not None and node.get("value") in _KEYED_FUNCTIONS:
                    items = _At(found, f"{value.where}[]")
        for argument in arguments:
            if argument.get("type") == "expref":
                self.read(self._children(argument)[0], items)
        return _UNKNOWN


_KEYED_FUNCTIONS = frozenset({"map", "sort_by", "min_by", "max_by"})
_VISITS: dict[str, Callable[[_ExpressionReader, Node, _At], _At]] = {
    "field": _ExpressionReader.field,
    "subexpression": _ExpressionReader.chain,
    "index_expression": _ExpressionReader.chain,
    "pipe": _ExpressionReader.chain,
    "current": _ExpressionReader.current,
    "identity": _ExpressionReader.current,
    "index": _ExpressionReader.index,
    "slice": _ExpressionReader.slice,
    "flatten": _ExpressionReader.flatten,
    "projection": _ExpressionReader.projection,
    "value_projection": _ExpressionReader.projection,
    "filter_projection": _ExpressionReader.projection,
    "comparator": _ExpressionReader.opaque,
    "or_expression": _ExpressionReader.opaque,
    "and_expression": _ExpressionReader.opaque,
    "not_expression": _ExpressionReader.opaque,
    "multi_select_list": _ExpressionReader.opaque,
    "multi_select_dict": _ExpressionReader.opaque,
    "function_expression": _ExpressionReader.function,
}


def _quoted(name: str) -> str:
    """A field name as JMESPath writes it (quoted unless an identifier)."""
    return name if _IDENTIFIER.fullmatch(name) else json.dumps(name, ensure_ascii=False)


# -- messages ---------------------------------------------------------------------------------


def _missing(parent: Shape, where: str, name: str, item_path: str) -> str:
    """Why `name` is never a field of `parent` (read by `where`, "" for the event)."""
    owner = f"`{where}`" if where else "the event"
    if any(isinstance(alt, Obj) for alt in parent.alternatives):
        names = [n for n in shapes.field_names(parent) if where or n != _KAFKA]
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            hint = f" (did you mean `{close[0]}`?)"
        elif names:
            shown = ", ".join(names[:_SHOWN_FIELDS]) + (
                ", ..." if len(names) > _SHOWN_FIELDS else ""
            )
            hint = f" (it has {shown})"
        else:
            hint = " (it has no fields)"
        return f"{owner} has no field `{name}`{hint}"
    text = f"{owner} is {_describe(parent)}, which has no field `{name}`"
    items = shapes.items(parent)
    if items is not None and not shapes.is_any(items) and shapes.step(items, name, None):
        text += f"; its items have one: `{item_path}`"
    return text


def _describe(shape: Shape) -> str:
    """ "a number or null (double)": the JSON types of a shape and the schema's names for them."""
    types = shapes.json_types(shape, nonfinite_text=False) or shapes.json_types(shape)
    names = shapes.labels(shape)
    return _types_text(types) + (f" ({', '.join(names)})" if names else "")


def _types_text(types: frozenset[str]) -> str:
    return " or ".join(_TYPE_NAMES[kind] for kind in _TYPE_ORDER if kind in types)

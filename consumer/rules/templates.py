"""Rule mappings: `{{ expr }}` templates compiled at load, rendered per event.

`{{ expr }}` is JMESPath over the event document (which includes `_kafka`). A value that is exactly
one expression keeps its JSON type; text mixed with expressions renders as a string; everything
else is a literal. An expression yielding null (or a missing field) yields nothing: the key or list
item is left out, and mixed text containing it yields nothing too (so `"user-{{ id }}"` never
becomes `"user-"`). Literal nulls are kept (in `attributes` a null removes the attribute).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import jmespath
from jmespath.exceptions import JMESPathError

from consumer.json_types import JSONObject, JSONValue
from consumer.rules.jsonvalues import as_json, render_text
from consumer.rules.model import Issue

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class Nothing(enum.Enum):
    """What a template yields when its expression finds no value."""

    NOTHING = enum.auto()


NOTHING = Nothing.NOTHING
Rendered: TypeAlias = JSONValue | Nothing


class ExpressionError(Exception):
    """A JMESPath function failed on this event's data (e.g. `length` of a number)."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"expression `{source}` failed: {detail}")


@dataclass(frozen=True, slots=True)
class Constant:
    value: JSONValue

    def render(self, document: JSONObject) -> Rendered:
        return self.value


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    search: Callable[[JSONObject], JSONValue]

    def render(self, document: JSONObject) -> Rendered:
        try:
            value = self.search(document)
        except (JMESPathError, TypeError, ValueError) as exc:
            raise ExpressionError(self.source, str(exc)) from exc
        return NOTHING if value is None else value


@dataclass(frozen=True, slots=True)
class Text:
    parts: tuple[str | Expression, ...]

    def render(self, document: JSONObject) -> Rendered:
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value = part.render(document)
            if value is NOTHING:
                return NOTHING
            pieces.append(render_text(value))
        return "".join(pieces)


@dataclass(frozen=True, slots=True)
class ObjectTemplate:
    items: tuple[tuple[str, Template], ...]

    def render(self, document: JSONObject) -> JSONObject:
        result: JSONObject = {}
        for key, template in self.items:
            value = template.render(document)
            if value is not NOTHING:
                result[key] = value
        return result


@dataclass(frozen=True, slots=True)
class ListTemplate:
    items: tuple[Template, ...]

    def render(self, document: JSONObject) -> list[JSONValue]:
        values = (item.render(document) for item in self.items)
        return [value for value in values if value is not NOTHING]


Template: TypeAlias = Constant | Expression | Text | ObjectTemplate | ListTemplate


def compile_template(value: object) -> tuple[Template, list[Issue]]:
    """Compile a YAML value (string, number, mapping, list...) with issues at relative locations."""
    issues: list[Issue] = []
    template = _compile(value, (), issues)
    return template, issues


def _compile(value: object, loc: tuple[str | int, ...], issues: list[Issue]) -> Template:
    if isinstance(value, str):
        try:
            return compile_string(value)
        except ValueError as exc:
            issues.append((loc, str(exc)))
            return Constant(None)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                issues.append(((*loc, str(key)), f"key {key!r} must be a string (quote it)"))
                continue
            items.append((key, _compile(item, (*loc, key), issues)))
        return ObjectTemplate(tuple(items))
    if isinstance(value, list):
        return ListTemplate(
            tuple(_compile(item, (*loc, i), issues) for i, item in enumerate(value))
        )
    try:
        return Constant(as_json(value))
    except ValueError as exc:
        issues.append((loc, str(exc)))
        return Constant(None)


def compile_string(text: str) -> Constant | Expression | Text:
    """A literal, exactly one `{{ expr }}`, or text mixed with expressions. Raises ValueError."""
    parts: list[str | Expression] = []
    position = 0
    for match in _EXPRESSION.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        parts.append(compile_expression(match.group(1)))
        position = match.end()
    rest = text[position:]
    if "{{" in rest:
        raise ValueError(f"unclosed `{{{{` in {text!r}")
    if rest:
        parts.append(rest)
    if not any(isinstance(part, Expression) for part in parts):
        return Constant(text)
    if len(parts) == 1 and isinstance(parts[0], Expression):
        return parts[0]
    return Text(tuple(parts))


def compile_expression(source: str) -> Expression:
    """A JMESPath expression; plain field chains (`data.customer_id`) skip the interpreter."""
    source = source.strip()
    if not source:
        raise ValueError("empty `{{ }}` expression")
    try:
        parsed = jmespath.compile(source)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"invalid JMESPath expression `{source}`: {detail}") from exc
    fields = _field_chain(parsed.parsed)
    if fields is not None:
        return Expression(source, _field_getter(fields))
    search: Callable[[JSONObject], JSONValue] = parsed.search
    return Expression(source, search)


def _field_chain(node: dict[str, object]) -> tuple[str, ...] | None:
    """The keys of `a.b."c-d"` if the AST is only field lookups, else None."""
    if node.get("type") == "field":
        value = node.get("value")
        return (value,) if isinstance(value, str) else None
    children = node.get("children")
    if node.get("type") != "subexpression" or not isinstance(children, list):
        return None
    keys: list[str] = []
    for child in children:
        chain = _field_chain(child) if isinstance(child, dict) else None
        if chain is None:
            return None
        keys.extend(chain)
    return tuple(keys)


def _field_getter(keys: tuple[str, ...]) -> Callable[[JSONObject], JSONValue]:
    """Same result as JMESPath for a field chain: null as soon as a step is not an object."""

    def get(document: JSONObject) -> JSONValue:
        current: JSONValue = document
        for key in keys:
            if not isinstance(current, dict):
                return None
            current = current.get(key)
        return current

    return get

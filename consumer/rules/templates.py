"""Rule mappings: `{{ expr }}` templates compiled at load, rendered per event.

`{{ expr }}` is JMESPath over the event document (which includes `_kafka`). A value that is exactly
one expression keeps its JSON type; text mixed with expressions renders as a string; everything
else is a literal. An expression yielding null (or a missing field) yields nothing: the key or list
item is left out, and mixed text containing it yields nothing too (so `"user-{{ id }}"` never
becomes `"user-"`). Literal nulls are kept (in `attributes` a null removes the attribute).

Expressions are bounded when the rules load, so that no event can make one expensive: at most
MAX_EXPRESSION_CHARS characters and MAX_EXPRESSION_DEPTH levels of nesting, and a cost model
(`Cost`, below) must show that the result is at most MAX_GROWTH times the size of the event and that
evaluating it takes at most MAX_WORK steps per character of the event. What passes is linear in the
event: `[@, @][] | [@, @][] | ...`, which doubles at each step, is refused after a few steps.

Linear is not small when the event is 1 MB of tiny values, so evaluation is metered as well: an
expression may visit at most MAX_STEPS nodes and build at most MAX_RESULT_ELEMENTS values and
MAX_RESULT_CHARS characters of text, whatever the event; past that its mapping fails.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions
from jmespath.visitor import TreeInterpreter

from consumer.json_types import JSONObject, JSONValue
from consumer.rules.conditions import path_reader
from consumer.rules.jsonvalues import as_json, render_text
from consumer.rules.model import Issue

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)

# Load-time bounds. Real expressions are a few dozen characters and a handful of levels deep.
MAX_EXPRESSION_CHARS = 1_000
MAX_EXPRESSION_DEPTH = 32  # also keeps the parser and evaluator far from Python's stack limit
# How much larger than the event a result may be, and how many steps per character of the event
# evaluating it may take (see `Cost`). 64 admits a projection into a hash of several keys
# (`items[*].{sku: sku, name: name, price: price, qty: qty}` is 29) and `to_string(data)` (14); each
# multi-select-then-flatten step doubles both, so `[@, @][]` chains stop at five steps.
MAX_GROWTH = 64
MAX_WORK = 128
# Evaluation-time bounds, whatever the event: none is reached by a sendable value (Braze takes
# 50 KB of properties), nor by a plain projection over the largest event (a 1 MB array has at most
# 500,000 values). A million visits is about a second of CPU; 100,000 values about 10 MB.
MAX_STEPS = 1_000_000
MAX_RESULT_ELEMENTS = 100_000
MAX_RESULT_CHARS = 1_000_000


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
    # A field chain's result is part of the event, no larger than it: only results the
    # interpreter builds are measured.
    measured: bool = True

    def render(self, document: JSONObject) -> Rendered:
        try:
            value = self.search(document)
        except (JMESPathError, TypeError, ValueError) as exc:
            raise ExpressionError(self.source, str(exc)) from exc
        if value is None:
            return NOTHING
        if self.measured:
            oversize = _oversize(value)
            if oversize is not None:
                raise ExpressionError(self.source, oversize)
        return value


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
    # The items as rendering walks them, made once: a lookup chain is read directly (it cannot
    # fail, and null means nothing), anything else renders itself. Every matched event renders
    # its rule's properties.
    _steps: tuple[tuple[str, Callable[[JSONObject], JSONValue] | None, Template], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        steps = tuple((key, _direct_read(template), template) for key, template in self.items)
        object.__setattr__(self, "_steps", steps)

    def render(self, document: JSONObject) -> JSONObject:
        result: JSONObject = {}
        for key, read, template in self._steps:
            if read is not None:
                found = read(document)
                if found is not None:
                    result[key] = found
                continue
            value = template.render(document)
            if value is not NOTHING:
                result[key] = value
        return result


def _direct_read(template: Template) -> Callable[[JSONObject], JSONValue] | None:
    """The reader of a lookup chain (whose rendering is that read, null meaning nothing)."""
    if isinstance(template, Expression) and not template.measured:
        return template.search
    return None


@dataclass(frozen=True, slots=True)
class ListTemplate:
    items: tuple[Template, ...]

    def render(self, document: JSONObject) -> list[JSONValue]:
        values = (item.render(document) for item in self.items)
        return [value for value in values if value is not NOTHING]


Template: TypeAlias = Constant | Expression | Text | ObjectTemplate | ListTemplate


def may_read(template: Template | None, name: str) -> bool:
    """Whether rendering `template` may read the document's top-level field `name` (e.g.
    `_kafka`). Exact for field chains (`data.x` cannot); any other expression may (`@`, `*`,
    `keys(@)` read every field)."""
    if template is None or isinstance(template, Constant):
        return False
    if isinstance(template, Expression):
        return template.measured or name in template.source
    if isinstance(template, Text):
        return any(isinstance(part, Expression) and may_read(part, name) for part in template.parts)
    if isinstance(template, ObjectTemplate):
        return any(may_read(part, name) for _, part in template.items)
    return any(may_read(part, name) for part in template.items)


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
    """A bounded JMESPath expression; plain field chains (`data.customer_id`) skip the interpreter.

    Raises ValueError for an invalid expression and for one the bounds refuse.
    """
    source = source.strip()
    if not source:
        raise ValueError("empty `{{ }}` expression")
    _check_text(source)
    try:
        parsed = jmespath.compile(source)
    except JMESPathError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"invalid JMESPath expression `{source}`: {detail}") from exc
    except RecursionError as exc:  # not reached after _check_text; a parser bug must not crash
        raise ValueError(f"expression `{_shorten(source)}` is nested too deeply") from exc
    _check_tree(source, parsed.parsed)
    fields = _field_chain(parsed.parsed)
    if fields is not None:
        return Expression(source, _field_getter(fields), measured=False)
    return Expression(source, _metered_search(parsed.parsed))


# A step of a lookup chain: an object key (str) or a list index (int, negative from the end).
Lookup: TypeAlias = str | int


def _field_chain(node: Mapping[str, object]) -> tuple[Lookup, ...] | None:
    """The steps of `a.b."c-d"` or `a.items[0].sku` if the AST is only field lookups and
    indexes, else None."""
    kind = node.get("type")
    if kind == "field":
        value = node.get("value")
        return (value,) if isinstance(value, str) else None
    if kind == "index":
        value = node.get("value")
        return (value,) if type(value) is int else None
    children = node.get("children")
    if kind not in ("subexpression", "index_expression") or not isinstance(children, list):
        return None
    steps: list[Lookup] = []
    for child in children:
        chain = _field_chain(child) if isinstance(child, dict) else None
        if chain is None:
            return None
        steps.extend(chain)
    return tuple(steps)


def _field_getter(steps: tuple[Lookup, ...]) -> Callable[[JSONObject], JSONValue]:
    """Same result as JMESPath for a lookup chain: null as soon as a key step meets anything but
    an object, or an index step anything but a list (or an index out of its range)."""
    if all(isinstance(step, str) for step in steps):
        return path_reader(tuple((step, None) for step in steps if isinstance(step, str)))

    def read(document: JSONObject) -> JSONValue:
        current: JSONValue = document
        for step in steps:
            if isinstance(step, str):
                if not isinstance(current, dict):
                    return None
                current = current.get(step)
            elif isinstance(current, list) and -len(current) <= step < len(current):
                current = current[step]
            else:
                return None
        return current

    return read


# --- Load-time bounds ------------------------------------------------------------------------

Node: TypeAlias = Mapping[str, Any]  # a JMESPath AST node: {"type", "children", "value"}

# Bounds on what an expression does whatever the event (literals, constants): as if the event had
# a thousand characters.
MAX_FIXED_CHARS = MAX_GROWTH * 1_000
MAX_FIXED_STEPS = MAX_WORK * 1_000


class _RefusedError(Exception):
    """An expression the cost model cannot bound (unknown function, wrong arity...)."""


def _check_text(source: str) -> None:
    """Length and nesting of the raw text, checked before the (recursive) parser sees it."""
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ValueError(
            f"expression `{_shorten(source)}` is {len(source):,} characters long"
            f" (at most {MAX_EXPRESSION_CHARS:,})"
        )
    depth = _text_depth(source)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ValueError(_too_deep(source, depth))


def _too_deep(source: str, depth: int) -> str:
    return (
        f"expression `{_shorten(source)}` nests {depth} levels deep"
        f" (at most {MAX_EXPRESSION_DEPTH})"
    )


def _text_depth(source: str) -> int:
    """How deep the parser would recurse, over-estimated: the deepest nesting of brackets, plus
    the run of prefix operators (`!`, `&`) at that point. Brackets in quoted names and strings do
    not count, brackets in `literal` JSON do (they nest there too)."""
    depth = deepest = prefixes = 0
    for kind in _characters(source):
        if kind == "open":
            depth, prefixes = depth + 1, 0
        elif kind == "close":
            depth, prefixes = max(depth - 1, 0), 0
        elif kind == "prefix":
            prefixes += 1
        elif kind != "space":
            prefixes = 0
        deepest = max(deepest, depth + prefixes)
    return deepest


_STRING_END = {"'": "", '"': "", '`"': "`"}  # a raw string, a quoted name, a string in a literal


def _characters(source: str) -> Iterator[str]:
    """The kind of each character: open, close, prefix, space, text (quoted) or other."""
    mode = ""  # "" in code; else the string or literal being read (a key of _STRING_END, or `)
    position = 0
    while position < len(source):
        char, pair = source[position], source[position : position + 2]
        position += 1
        if mode and char == "\\":
            position += 1  # the escaped character
            yield "text"
        elif mode in _STRING_END:
            mode = _STRING_END[mode] if char == mode[-1] else mode
            yield "text"
        elif mode == "`":  # JSON: its brackets nest, its strings do not count
            mode = {"`": "", '"': '`"'}.get(char, mode)
            yield "open" if char in "[{" else "close" if char in "]}" else "text"
        elif char in "'\"`":
            mode = char
            yield "text"
        elif char in "([{":
            yield "open"
        elif char in ")]}":
            yield "close"
        elif pair in ("!=", "&&", "||"):
            position += 1  # an operator between two operands, not a prefix
            yield "other"
        elif char in "!&":
            yield "prefix"
        else:
            yield "space" if char.isspace() else "other"


def _check_tree(source: str, tree: Node) -> None:
    """Nesting and cost of the parsed expression; raises ValueError naming the bound exceeded."""
    depth = _tree_depth(tree)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ValueError(_too_deep(source, depth))
    short = _shorten(source)
    try:
        cost = _cost(tree)
    except _RefusedError as exc:
        raise ValueError(f"expression `{short}`: {exc}") from exc
    repeat = (
        "each `[a, b]`, `{k: v}`, projection or to_string() multiplies what it is given,"
        " and chaining them compounds"
    )
    if cost.grow > MAX_GROWTH:
        raise ValueError(
            f"expression `{short}` can build a result {_amount(cost.grow)} times the size of the"
            f" event (at most {MAX_GROWTH}): {repeat}"
        )
    if cost.work > MAX_WORK:
        raise ValueError(
            f"expression `{short}` can take {_amount(cost.work)} steps per character of the"
            f" event (at most {MAX_WORK}): {repeat}"
        )
    if cost.fixed > MAX_FIXED_CHARS or cost.steps > MAX_FIXED_STEPS:
        raise ValueError(
            f"expression `{short}` can build {_amount(cost.fixed)} characters and take"
            f" {_amount(cost.steps)} steps from its literals alone"
            f" (at most {MAX_FIXED_CHARS:,} and {MAX_FIXED_STEPS:,}): {repeat}"
        )


def _tree_depth(tree: Node) -> int:
    """Nodes on the longest path from the root (iterative: the tree is not yet known shallow)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.get("children", ())
        stack.extend((child, depth + 1) for child in children if isinstance(child, Mapping))
    return deepest


# --- The cost model ----------------------------------------------------------------------------

_NULL = len("null")
_NUMBER = 24  # characters of any float (`-1.2345678901234567e-300`)
_BOOL = len("false")
_DIGITS = 52  # floor(1e308) has 309 digits, its input `1e+308` 6 characters
_ESCAPE = 14  # to_string escapes: 😀 in a string in a list becomes `\\ud83d\\ude00` in a string
_SORT = 20  # comparisons per element of a sort: log2 of a million
_CAP = 10**15  # bounds saturate here, far above every limit (and products stay exact integers)


@dataclass(frozen=True, slots=True)
class Cost:
    """Bounds of one AST node applied to an input of s characters (of its compact JSON).

    The output, when not null, has at most `grow * s + fixed` characters; evaluating takes at most
    `work * s + steps` steps (a step visits a node, or touches one character or element). Values
    are measured written out, repeated references expanded: that is what `to_string`, `join`,
    comparisons and rendering touch, and what flattening repeated references copies. The bounds
    compose over the tree, so bounded `grow` and `work` prove an expression linear in the event.
    """

    grow: int
    fixed: int
    work: int
    steps: int
    keeps_null: bool = False  # a null input gives a null output (lookups, projections)


def _bounded(grow: int, fixed: int, work: int, steps: int, keeps_null: bool = False) -> Cost:
    return Cost(min(grow, _CAP), min(fixed, _CAP), min(work, _CAP), min(steps, _CAP), keeps_null)


def _half(amount: int) -> int:
    return (amount + 1) // 2


_LOOKUP = Cost(1, 0, 0, 1, keeps_null=True)  # @, a field, an index: part of the input
_LEAVES = {
    "current": _LOOKUP,
    "identity": _LOOKUP,
    "field": _LOOKUP,
    "index": _LOOKUP,
    "slice": Cost(1, 0, 1, 1, keeps_null=True),  # a copy of part of the input
    "expref": Cost(0, _NULL, 0, 1),  # `&expr` outside a function's key argument: a type error
}


def _cost(node: Node) -> Cost:
    kind = node["type"]
    leaf = _LEAVES.get(kind)
    if leaf is not None:
        return leaf
    composite = _COMPOSITES.get(kind)
    if composite is None:
        raise _RefusedError(f"unsupported JMESPath construct {kind!r}")
    return composite(node)


def _children(node: Node) -> list[Cost]:
    return [_cost(child) for child in node["children"]]


def _literal(node: Node) -> Cost:
    text = json.dumps(node["value"], ensure_ascii=False, separators=(",", ":"))
    return Cost(0, len(text), 0, 1)


def _chain(node: Node) -> Cost:
    """`a.b`, `a[0]`, `a | b`: each child applied to the previous one's result."""
    costs = _children(node)
    result = costs[0]
    for step in costs[1:]:
        result = _then(result, step)
    return result


def _then(first: Cost, second: Cost) -> Cost:
    into = first.fixed if second.keeps_null else first.fixed + _NULL
    return _bounded(
        second.grow * first.grow,
        second.grow * into + second.fixed,
        first.work + second.work * first.grow,
        first.steps + second.work * into + second.steps + 1,
        first.keeps_null and second.keeps_null,
    )


def _elementwise(each: Cost, test: Cost | None = None, keep_nulls: bool = False) -> tuple[int, int]:
    """(growth, work per character) of applying `each` to every element of a collection.

    A collection of B characters has at most B/2 elements (each needs a character and a comma),
    whose sizes add up to less than B: per-element constants become factors of B.
    """
    fixed = each.fixed + (_NULL if keep_nulls else 0)  # a projection drops null results
    steps = each.steps + 1 + (test.steps if test else 0)
    work = each.work + (test.work if test else 0) + _half(steps)
    return max(each.grow, 1) + _half(fixed), work


def _over(base: Cost, grow: int, work: int) -> Cost:
    """A collection bounded by `base`, each element turned as `_elementwise` says."""
    return _bounded(
        grow * base.grow,
        grow * base.fixed,
        base.work + work * base.grow,
        base.steps + work * base.fixed + 1,
        base.keeps_null,
    )


def _projection(node: Node) -> Cost:
    """`a[*].b`, `a.*.b`, and `a[?test].b` (children: collection, per element, test)."""
    costs = _children(node)
    test = costs[2] if len(costs) > 2 else None
    return _over(costs[0], *_elementwise(costs[1], test))


def _flatten(node: Node) -> Cost:
    base = _cost(node["children"][0])  # no larger: it loses the inner brackets
    return _bounded(
        base.grow, base.fixed, base.work + base.grow, base.steps + base.fixed + 1, base.keeps_null
    )


def _multi_select_list(node: Node) -> Cost:
    """`[a, b]`: every child applied to the same input, so their sizes add up."""
    costs = _children(node)
    fixed = 2 + sum(cost.fixed + _NULL + 1 for cost in costs)
    return _bounded(*_sums(costs, fixed), keeps_null=True)


def _multi_select_dict(node: Node) -> Cost:
    """`{k: a, l: b}`: as a list, plus each key."""
    pairs = [(pair["value"], _cost(pair["children"][0])) for pair in node["children"]]
    keys = sum(len(json.dumps(key, ensure_ascii=False)) + 2 for key, _ in pairs)
    costs = [cost for _, cost in pairs]
    fixed = 2 + keys + sum(cost.fixed + _NULL for cost in costs)
    return _bounded(*_sums(costs, fixed), keeps_null=True)


def _sums(costs: list[Cost], fixed: int) -> tuple[int, int, int, int]:
    grow = sum(cost.grow for cost in costs)
    return grow, fixed, sum(cost.work for cost in costs), 1 + sum(cost.steps for cost in costs)


def _either(node: Node) -> Cost:
    """`a || b`, `a && b`: the result is one of them."""
    left, right = _children(node)
    return _bounded(
        max(left.grow, right.grow),
        max(left.fixed, right.fixed),
        left.work + right.work,
        left.steps + right.steps + 1,
        left.keeps_null and right.keeps_null,
    )


def _not(node: Node) -> Cost:
    operand = _cost(node["children"][0])
    return _bounded(0, _BOOL, operand.work, operand.steps + 1)


def _comparator(node: Node) -> Cost:
    """`a == b`, `a < b`: a boolean; comparing touches at most both sides."""
    left, right = _children(node)
    return _bounded(
        0,
        _BOOL,
        left.work + right.work + left.grow + right.grow,
        left.steps + right.steps + left.fixed + right.fixed + 2 * _NULL + 1,
    )


def _function(node: Node) -> Cost:
    """A call: its arguments are evaluated, scanned (type checks walk arrays), then used."""
    name, arguments = node["value"], node["children"]
    _check_call(name, len(arguments))
    values = [_cost(argument) for argument in arguments]
    plain, key = [], _LEAVES["expref"]
    for argument, cost in zip(arguments, values, strict=True):
        if argument["type"] == "expref":
            key = _cost(argument["children"][0])  # applied to each element of the array
        else:
            plain.append(cost)
    grow, fixed, work, steps = _function_output(name, plain or [_LEAVES["expref"]], key)
    scanned = sum(value.grow for value in values), sum(value.fixed + _NULL for value in values)
    return _bounded(
        grow,
        fixed,
        work + sum(value.work for value in values) + scanned[0],
        steps + sum(value.steps for value in values) + scanned[1] + 1,
    )


def _check_call(name: str, count: int) -> None:
    spec = Functions.FUNCTION_TABLE.get(name)
    if spec is None:
        raise _RefusedError(f"unknown function `{name}()`")
    signature = spec["signature"]
    variadic = bool(signature) and bool(signature[-1].get("variadic"))
    wanted = len(signature)
    if count < wanted or (count > wanted and not variadic):
        least = "at least " if variadic else ""
        plural = "" if wanted == 1 else "s"
        raise _RefusedError(f"`{name}()` takes {least}{wanted} argument{plural}, got {count}")


# Functions whose result is a number, a boolean or a short string, whatever their arguments.
_SCALARS = {"length": 7, "type": 9, "starts_with": 5, "ends_with": 5, "contains": 5, "avg": 24}
# Functions whose result is (a reordering, a part, or the keys of) their first argument.
_SAME_SIZE = {"reverse", "max", "min", "keys", "values", "sort"}


def _function_output(name: str, values: list[Cost], key: Cost) -> tuple[int, int, int, int]:
    """(grow, fixed) of a function's result and its own (work, steps) beyond the argument scan."""
    if name in _SCALARS:
        return 0, _SCALARS[name], 0, 0
    first = values[0]
    grow, fixed = sum(value.grow for value in values), sum(value.fixed for value in values)
    if name in _SAME_SIZE:
        sorting = _SORT if name == "sort" else 0
        return first.grow, first.fixed, sorting * first.grow, sorting * first.fixed
    if name in ("abs", "sum", "to_number"):  # no more digits than the input has
        return grow, fixed + _NUMBER, 0, 0
    if name in ("ceil", "floor"):  # a huge float becomes an integer with all its digits
        return _DIGITS * grow, _DIGITS * fixed + _NUMBER, 0, 0
    if name in ("to_array", "merge"):
        return grow, fixed + _NULL + 2, 0, 0
    if name == "not_null":
        return max(value.grow for value in values), max(value.fixed for value in values), 0, 0
    if name == "to_string":
        out_grow, out_fixed = _ESCAPE * first.grow, _ESCAPE * first.fixed + _NULL + 2
        return out_grow, out_fixed, out_grow, out_fixed
    if name == "join":
        return _join(values)
    if name in ("map", "sort_by", "min_by", "max_by"):
        return _keyed(name, max(values, key=lambda value: value.grow), key)
    raise _RefusedError(f"no cost bound for `{name}()`")


def _join(values: list[Cost]) -> tuple[int, int, int, int]:
    """join(separator, strings): the separator is repeated between every two strings."""
    separator, strings = values[0], values[-1]
    if separator.grow:
        raise _RefusedError(
            "the separator of `join()` must not depend on the event (it is repeated between every"
            " two items); use a literal such as ', '"
        )
    factor = 1 + _half(separator.fixed)  # strings of B characters: at most B/2 of them
    grow, fixed = factor * strings.grow, factor * strings.fixed
    return grow, fixed, grow, fixed


def _keyed(name: str, array: Cost, key: Cost) -> tuple[int, int, int, int]:
    """map(&expr, array), sort_by / min_by / max_by(array, &expr): `expr` on every element."""
    grow, work = _elementwise(key, keep_nulls=name == "map")
    if name == "map":
        return grow * array.grow, grow * array.fixed, work * array.grow, work * array.fixed
    compare = _SORT * (grow + 1) if name == "sort_by" else grow  # keys of up to grow * B chars
    return array.grow, array.fixed, (work + compare) * array.grow, (work + compare) * array.fixed


_COMPOSITES: dict[str, Callable[[Node], Cost]] = {
    "literal": _literal,
    "subexpression": _chain,
    "index_expression": _chain,
    "pipe": _chain,
    "projection": _projection,
    "value_projection": _projection,
    "filter_projection": _projection,
    "flatten": _flatten,
    "multi_select_list": _multi_select_list,
    "multi_select_dict": _multi_select_dict,
    "or_expression": _either,
    "and_expression": _either,
    "not_expression": _not,
    "comparator": _comparator,
    "function_expression": _function,
}


def expression_cost(source: str) -> Cost:
    """The cost bounds of a valid expression (for tools and tests; raises ValueError)."""
    try:
        return _cost(jmespath.compile(source.strip()).parsed)
    except (JMESPathError, _RefusedError) as exc:
        raise ValueError(str(exc)) from exc


# --- Evaluation-time bounds --------------------------------------------------------------------

# Nodes whose result is a list, object or string they build (rather than part of their input).
_BUILDERS = frozenset(
    (
        "projection",
        "value_projection",
        "filter_projection",
        "flatten",
        "slice",
        "multi_select_list",
        "multi_select_dict",
        "function_expression",
    )
)


class _OverBudgetError(ValueError):
    """An evaluation went past MAX_STEPS or built too much: the expression fails on this event."""


class _MeteredInterpreter(TreeInterpreter):  # type: ignore[misc]  # jmespath has no stubs
    """JMESPath's own interpreter, counting its visits and what the visited nodes build.

    A node's result is counted once built, so a count can overshoot by one node's result: the
    cost model bounds that by the event's size times MAX_GROWTH.
    """

    def __init__(self) -> None:
        super().__init__()
        self._steps = 0
        self._values = 0
        self._chars = 0

    def visit(self, node: Node, *args: Any, **kwargs: Any) -> Any:
        # Every node goes through here (exprefs too), so it is kept lean: the visit_* method is
        # looked up in a class-wide table rather than through Visitor.visit.
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise _OverBudgetError(f"it takes more than {MAX_STEPS:,} steps")
        kind = node["type"]
        result = _VISITS.get(kind, TreeInterpreter.default_visit)(self, node, *args, **kwargs)
        if kind in _BUILDERS:
            self._charge(result)
        return result

    def _charge(self, result: object) -> None:
        if isinstance(result, list | dict):
            self._values += len(result)
        elif isinstance(result, str):
            self._chars += len(result)
        if self._values > MAX_RESULT_ELEMENTS or self._chars > MAX_RESULT_CHARS:
            raise _OverBudgetError(_TOO_LARGE)


_VISITS: dict[str, Callable[..., Any]] = {
    name.removeprefix("visit_"): getattr(TreeInterpreter, name)
    for name in dir(TreeInterpreter)
    if name.startswith("visit_")
}


def _metered_search(tree: Node) -> Callable[[JSONObject], JSONValue]:
    def search(document: JSONObject) -> JSONValue:
        result: JSONValue = _MeteredInterpreter().visit(tree, document)
        return result

    return search


_TOO_LARGE = (
    f"it builds more than {MAX_RESULT_ELEMENTS:,} values or {MAX_RESULT_CHARS:,} characters of text"
)


def _oversize(value: JSONValue) -> str | None:
    """Why a result is too large to use, or None. Stops as soon as it knows: a result may repeat
    references, so written out it can be far larger than in memory."""
    elements, chars = 1, 0
    stack: list[JSONValue] = [value]
    while stack:
        item = stack.pop()
        children: Iterable[JSONValue] = ()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, list):
            elements, children = elements + len(item), item
        elif isinstance(item, dict):
            elements, children = elements + len(item), item.values()
            if elements <= MAX_RESULT_ELEMENTS:
                chars += sum(len(key) for key in item)
        if elements > MAX_RESULT_ELEMENTS or chars > MAX_RESULT_CHARS:
            return _TOO_LARGE
        stack.extend(children)
    return None


def _amount(number: int) -> str:
    return f"more than {_CAP:.0e}" if number >= _CAP else f"{number:,}"


def _shorten(source: str, limit: int = 60) -> str:
    return source if len(source) <= limit else source[: limit - 3] + "..."

"""YAML loading for config files (rules, settings) that remembers the line of every key and item.

Validation errors name a location such as `("rules", 2, "recipient", "email")`; `LineIndex.line_of`
turns it into the line an operator should look at, so errors read `file:line: message`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml

Loc: TypeAlias = tuple[str | int, ...]

# The C loader is several times faster; both resolve the same YAML 1.1 types.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(Exception):
    """The text is not one well-formed YAML document (or the file cannot be read)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class LineIndex:
    """1-based line of each location in a loaded document, plus any duplicate mapping keys."""

    lines: Mapping[Loc, int] = field(default_factory=dict)
    duplicate_keys: tuple[tuple[Loc, int], ...] = ()

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest known location along `loc`.

        Parts that are not in the document (a missing key, a pydantic union tag) are skipped, so a
        "field required" error points at the mapping that lacks the field.
        """
        best = self.lines.get((), 1)
        prefix: Loc = ()
        for part in loc:
            candidate = (*prefix, part)
            line = self.lines.get(candidate)
            if line is not None:
                prefix, best = candidate, line
        return best


def load_yaml_with_lines(path: Path | str) -> tuple[object, LineIndex]:
    """Read and parse one YAML file; raises `YamlError` (with a line) or `OSError`."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(line, "file is not valid UTF-8") from exc
    return parse_yaml_with_lines(text)


def parse_yaml_with_lines(text: str) -> tuple[object, LineIndex]:
    """Parse one YAML document; an empty document gives `None`. Raises `YamlError`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineIndex()
        duplicates = tuple(_duplicate_keys(node, (), set()))
        data: object = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlError(line, _describe(exc)) from exc
    except yaml.YAMLError as exc:
        raise YamlError(1, str(exc)) from exc
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    _record_lines(node, data, (), lines, set())
    return data, LineIndex(lines, duplicates)


def _describe(exc: yaml.MarkedYAMLError) -> str:
    text = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
    problem, context = exc.problem_mark, exc.context_mark
    # An unclosed bracket is noticed lines later; say where the construct began.
    if problem is not None and context is not None and context.line != problem.line:
        text += f" (started on line {context.line + 1})"
    return text


def _duplicate_keys(node: yaml.Node, loc: Loc, seen: set[int]) -> Iterator[tuple[Loc, int]]:
    """Keys written twice in one mapping: PyYAML would silently keep the last one.

    Each node is visited once (`seen`), so aliases neither loop nor blow up exponentially.
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index), seen)
    elif isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            identity = (key_node.tag, key_node.value)
            if identity in keys:
                yield (*loc, key_node.value), key_node.start_mark.line + 1
            keys.add(identity)
            yield from _duplicate_keys(value_node, (*loc, key_node.value), seen)


def _record_lines(
    node: yaml.Node, data: object, loc: Loc, lines: dict[Loc, int], seen: set[int]
) -> None:
    """Walk the node tree beside the constructed data, each node once (aliases point back)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for index, (item_node, item) in enumerate(zip(node.value, data, strict=False)):
            _record_lines(item_node, item, (*loc, index), lines, seen)
    elif isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            if key is None or key not in data:
                continue
            # The key's line, not the value's: a block value starts on the next line.
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, data[key], (*loc, key), lines, seen)


def _scalar_key(node: yaml.Node) -> str | int | bool | None:
    """The constructed value of a scalar mapping key (enough for str, int and bool keys)."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.tag == "tag:yaml.org,2002:bool":
        return str(node.value).lower() in {"yes", "true", "on", "y"}
    if node.tag == "tag:yaml.org,2002:int":
        for base in (10, 0):
            try:
                return int(node.value, base)
            except ValueError:
                continue
        return None
    return str(node.value)

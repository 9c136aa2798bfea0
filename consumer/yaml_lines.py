"""YAML loading for config files (rules, settings) that remembers the line of every key and item.

Validation errors name a location such as `("rules", 2, "recipient", "email")`; `LineIndex.line_of`
turns it into the line an operator should look at, so errors read `file:line: message`.

Loading is bounded, because a hostile or broken file must give one `file:line:` error, never a
hang, a traceback or a crash of the C loader. Before the document is built:

- the file is read only up to `max_bytes` (a larger file is refused without reading all of it);
- one streaming pass over the parser's events (iterative: it keeps no tree and cannot recurse)
  refuses nesting deeper than `max_depth`, more than `max_nodes` values, and every YAML alias.

Aliases are refused outright: rules and settings never need them, and a few hundred bytes of
nested aliases ("billion laughs") expand into billions of values for any code that walks the data.
Without aliases the document is a tree whose size is bounded by `max_nodes`, and the recursive
steps after the scan (PyYAML's composer, `_record_lines`) go at most `max_depth` deep.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml

Loc: TypeAlias = tuple[str | int, ...]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# Real rules and settings nest fewer than 10 levels; 64 leaves room and stays far below both
# Python's recursion limit and the C stack the C composer recurses on.
DEFAULT_MAX_DEPTH = 64
# A 9 MB rules file (13,000 rules) has about 620,000 values; each costs several hundred bytes
# of memory while loading, so the budget also caps the memory of a dense file under max_bytes.
DEFAULT_MAX_NODES = 1_000_000
# `max_depth` above this would let the recursive steps reach Python's recursion limit.
_MAX_DEPTH_CEILING = 500
_READ_CHUNK = 1 << 20

# The C loader is several times faster; both resolve the same YAML 1.1 types.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
# What each event adds to (values, nesting depth); a dict of exact types because the scan
# visits every event of a file that may be megabytes long.
_EVENT_STEPS: dict[type[yaml.Event], tuple[int, int]] = {
    yaml.ScalarEvent: (1, 0),
    yaml.SequenceStartEvent: (1, 1),
    yaml.MappingStartEvent: (1, 1),
    yaml.SequenceEndEvent: (0, -1),
    yaml.MappingEndEvent: (0, -1),
}


class YamlError(Exception):
    """The text is not one well-formed YAML document (or the file cannot be read)."""

    def __init__(self, line: int, message: str) -> None:
        # Errors are printed as `file:line: message`, one line each, whatever the parser said.
        message = " ".join(message.splitlines())
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class YamlLimitError(YamlError):
    """The text was refused before it was built: over a size, depth or node limit, or aliases."""


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


def load_yaml_with_lines(
    path: Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    on_bytes: Callable[[bytes], None] | None = None,
) -> tuple[object, LineIndex]:
    """Read and parse one YAML file of at most `max_bytes` bytes; `on_bytes` sees the bytes
    read (the rules version hashes exactly what was parsed).

    Raises `YamlError` (with a line; `YamlLimitError` for a refused file) or `OSError`.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    raw = _read_at_most(Path(path), max_bytes)
    if on_bytes is not None:
        on_bytes(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(line, "file is not valid UTF-8") from exc
    return parse_yaml_with_lines(text, max_depth=max_depth, max_nodes=max_nodes)


def _read_at_most(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, or `YamlLimitError` if it has more than `max_bytes`.

    One byte past the limit is enough to know, so a huge file (or a device that never ends) costs
    at most `max_bytes + 1` bytes of memory. Read in chunks: `read(n)` sets aside n bytes up
    front, which a small file with a generous limit should not pay for.
    """
    chunks: list[bytes] = []
    total = 0
    with path.open("rb") as file:
        while total <= max_bytes:
            chunk = file.read(min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if total <= max_bytes:
        return b"".join(chunks)
    raise YamlLimitError(1, f"file is larger than {_size(max_bytes)}, the limit for this file")


def _size(count: int) -> str:
    """`10 MiB (10485760 bytes)`: the round figure an operator sets, and the exact one."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit} ({count} bytes)"
    return f"{count} bytes"


def parse_yaml_with_lines(
    text: str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_nodes: int = DEFAULT_MAX_NODES
) -> tuple[object, LineIndex]:
    """Parse one YAML document; an empty document gives `None`. Raises `YamlError`.

    The text is scanned for aliases, nesting and value count (`YamlLimitError`) before any node is
    built. Its length is the caller's business: `load_yaml_with_lines` limits a file's bytes.
    """
    if not 1 <= max_depth <= _MAX_DEPTH_CEILING:
        raise ValueError(f"max_depth must be in 1..{_MAX_DEPTH_CEILING}, got {max_depth}")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    with _gc_paused(), _as_yaml_error(text):
        _check_events(text, max_depth, max_nodes)
        node, data = _compose_and_construct(text)
        if node is None:
            return None, LineIndex()
        duplicates = tuple(_duplicate_keys(node, ()))
        lines: dict[Loc, int] = {}
        _record_lines(node, data, (), lines)
    return data, LineIndex(lines, duplicates)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document is built.

    Building hundreds of thousands of nodes sets the collector off again and again, each time
    walking every object built so far: that was over half the load time of a large file. A
    document without aliases is a tree and the loader makes no cycles, so nothing piles up.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _as_yaml_error(text: str) -> Iterator[None]:
    """Turn PyYAML's errors (several lines, a mark or a position) into one-line `YamlError`s."""
    try:
        yield
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlError(line, _describe(exc)) from exc
    except yaml.reader.ReaderError as exc:
        raise YamlError(_reader_error_line(text, exc), _describe_reader(exc)) from exc
    except yaml.YAMLError as exc:
        raise YamlError(1, str(exc)) from exc


def _check_events(text: str, max_depth: int, max_nodes: int) -> None:
    """Refuse aliases, nesting beyond `max_depth` and more than `max_nodes` values.

    PyYAML's event stream (from libyaml's state machine) is iterative, unlike its composer,
    which recurses once per level: 100,000 nested brackets overflow the C stack (a segfault) or
    Python's recursion limit. Stopping at the first offending event also keeps this cheap for
    hostile input: libyaml rescans every open bracket per token, quadratic in the depth.
    """
    loader = _Loader(text)
    depth = nodes = 0
    try:
        while loader.check_event():
            event: yaml.Event = loader.get_event()  # type: ignore[no-untyped-call]
            step = _EVENT_STEPS.get(type(event))
            if step is None:
                if isinstance(event, yaml.AliasEvent):
                    raise YamlLimitError(_line(event), _alias_message(event))
                continue
            nodes += step[0]
            depth += step[1]
            if nodes > max_nodes:
                raise YamlLimitError(_line(event), _too_many_nodes_message(max_nodes))
            if depth > max_depth:
                raise YamlLimitError(_line(event), _too_deep_message(max_depth))
    finally:
        loader.dispose()


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 1


def _alias_message(event: yaml.AliasEvent) -> str:
    return f"YAML aliases (*name) are not allowed (found *{event.anchor}); write the value out"


def _too_deep_message(max_depth: int) -> str:
    return f"lists and mappings are nested more than {max_depth} levels deep"


def _too_many_nodes_message(max_nodes: int) -> str:
    return f"more than {max_nodes} values (scalars, lists, mappings) in one file"


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, object]:
    """The document's node tree and its Python data (`None, None` for an empty document)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        data: object = loader.construct_document(node)
    finally:
        loader.dispose()
    return node, data


def _describe(exc: yaml.MarkedYAMLError) -> str:
    text = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
    problem, context = exc.problem_mark, exc.context_mark
    # An unclosed bracket is noticed lines later; say where the construct began.
    if problem is not None and context is not None and context.line != problem.line:
        text += f" (started on line {context.line + 1})"
    return text


def _describe_reader(exc: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow at all (NUL and other controls: usually a binary file)."""
    character = exc.character
    code = ord(character) if isinstance(character, str) else int(character)
    return f"character U+{code:04X} is not allowed in YAML ({exc.reason})"


def _reader_error_line(text: str, exc: yaml.reader.ReaderError) -> int:
    """The line of the refused character.

    The C reader gives a byte offset, the Python one a character offset; but the refused
    character is always the first refused one in the text, so searching for it finds it.
    """
    character = exc.character
    found = text.find(character if isinstance(character, str) else chr(character))
    return text.count("\n", 0, found) + 1 if found >= 0 else 1


def _duplicate_keys(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, int]]:
    """Keys written twice in one mapping: PyYAML would silently keep the last one.

    Recursion is safe: `_check_events` refused aliases (the nodes form a tree) and deep nesting.
    """
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, index))
    elif isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, str]] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            identity = (key_node.tag, key_node.value)
            if identity in keys:
                yield (*loc, key_node.value), key_node.start_mark.line + 1
            keys.add(identity)
            yield from _duplicate_keys(value_node, (*loc, key_node.value))


def _record_lines(node: yaml.Node, data: object, loc: Loc, lines: dict[Loc, int]) -> None:
    """Walk the node tree beside the constructed data (a tree: aliases were refused)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for index, (item_node, item) in enumerate(zip(node.value, data, strict=False)):
            _record_lines(item_node, item, (*loc, index), lines)
    elif isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            if key is None or key not in data:
                continue
            # The key's line, not the value's: a block value starts on the next line.
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, data[key], (*loc, key), lines)


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

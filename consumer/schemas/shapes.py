"""The JSON shape of a schema's records: which fields a decoded event has, and of which types.

Pure. `rules check --schema-registry` reads each rule's paths against the shape of its topic's
latest schema (`consumer.rules.schema_check`). The converters follow `to_json`'s mapping (its
module docstring is the table), so a field a shape does not have is one no decoded record has.

A `Shape` is a union of alternatives:

- `Scalar`: string, integer, number, boolean, null; or `nonfinite`, the texts "NaN", "Infinity"
  and "-Infinity" that a float which is not a finite number decodes to;
- `Obj`: an object with named fields; `rest` is the shape of the value of any other key (None: a
  closed record, no other key; `ANY`: an open object; another shape: a map);
- `Arr`: an array of items of one shape;
- `Anything`: any JSON value (a `google.protobuf.Value`, an unconstrained JSON Schema): every
  path into it is accepted.

Recursive schemas (a record holding a list of itself) make graphs, not infinite trees: an `Obj`
is registered under its name before its fields are converted, and they may refer back to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor

ScalarKind = Literal["string", "integer", "number", "boolean", "null", "nonfinite"]
Step: TypeAlias = tuple[str | None, int | None]  # (object key, array index); None: not that
JSON_TYPES = frozenset({"null", "boolean", "number", "string", "array", "object"})
NONFINITE_TEXTS = frozenset({"NaN", "Infinity", "-Infinity"})
_SCALAR_TYPES = {
    "string": "string",
    "nonfinite": "string",
    "integer": "number",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
}


@dataclass(frozen=True, slots=True)
class Scalar:
    kind: ScalarKind
    label: str = ""  # the schema's own name for it: "double", "timestamp-millis", "enum Status"


@dataclass(eq=False, slots=True)  # compared by identity: records may refer to themselves
class Obj:
    fields: dict[str, Shape] = field(default_factory=dict)
    rest: Shape | None = None  # any other key's value; None: no other key (closed)
    label: str = ""


@dataclass(frozen=True, slots=True)
class Arr:
    items: Shape


@dataclass(frozen=True, slots=True)
class Anything:
    pass


Alternative: TypeAlias = Scalar | Obj | Arr | Anything


@dataclass(frozen=True, slots=True)
class Shape:
    """A union of alternatives; no alternative at all is a value that cannot exist."""

    alternatives: tuple[Alternative, ...]


ANY = Shape((Anything(),))
NULL = Shape((Scalar("null"),))
NEVER = Shape(())


def scalar(kind: ScalarKind, label: str = "") -> Shape:
    return Shape((Scalar(kind, label),))


def obj(
    fields: Mapping[str, Shape] | None = None, rest: Shape | None = None, label: str = ""
) -> Shape:
    return Shape((Obj(dict(fields or {}), rest, label),))


def arr(items: Shape) -> Shape:
    return Shape((Arr(items),))


def union(*shapes: Shape) -> Shape:
    """Every alternative of `shapes`, once; anything absorbs the rest."""
    alternatives = dict.fromkeys(alt for shape in shapes for alt in shape.alternatives)
    if any(isinstance(alt, Anything) for alt in alternatives):
        return ANY
    return Shape(tuple(alternatives))


def nullable(shape: Shape) -> Shape:
    return union(shape, NULL)


def with_field(shape: Shape, name: str, value: Shape) -> Shape:
    """`shape` with one more field in each of its objects (the `_kafka` the consumer adds)."""
    alternatives = tuple(
        Obj({**alt.fields, name: value}, alt.rest, alt.label) if isinstance(alt, Obj) else alt
        for alt in shape.alternatives
    )
    return Shape(alternatives)


# -- reading shapes ----------------------------------------------------------------------------


def step(shape: Shape, key: str | None, index: int | None) -> Shape | None:
    """The shape read by one step: an object's `key` (a map's any key), an array's item at
    `index`. None when no alternative has it: the step always reads null (no such field in a
    closed record, a field of a number or of a list). Alternatives without it add null."""
    found: list[Shape] = []
    partial = False
    for alt in shape.alternatives:
        if isinstance(alt, Anything):
            return ANY
        if isinstance(alt, Obj) and key is not None and key in alt.fields:
            found.append(alt.fields[key])
            continue
        if isinstance(alt, Obj) and key is not None and alt.rest is not None:
            found.append(alt.rest)
        elif isinstance(alt, Arr) and index is not None:
            found.append(alt.items)
        partial = True  # this alternative may read null at this step
    if not found:
        return None
    return union(*found, NULL) if partial else union(*found)


def lookup(shape: Shape, steps: Iterable[Step]) -> Shape | None:
    """The shape at the end of `steps`, or None when some step is never there (`step`)."""
    current: Shape | None = shape
    for key, index in steps:
        if current is None:
            return None
        current = step(current, key, index)
    return current


def items(shape: Shape) -> Shape | None:
    """The items of the arrays among the alternatives (what a projection visits); None: no array."""
    found = [alt.items for alt in shape.alternatives if isinstance(alt, Arr)]
    if any(isinstance(alt, Anything) for alt in shape.alternatives):
        return ANY
    return union(*found) if found else None


def values(shape: Shape) -> Shape | None:
    """The values of the objects among the alternatives (`*`); None: no object."""
    found: list[Shape] = []
    for alt in shape.alternatives:
        if isinstance(alt, Anything):
            return ANY
        if isinstance(alt, Obj):
            found.extend(alt.fields.values())
            if alt.rest is not None:
                found.append(alt.rest)
    objects = any(isinstance(alt, Obj) for alt in shape.alternatives)
    return union(*found) if objects else None


def json_types(shape: Shape, *, nonfinite_text: bool = True) -> frozenset[str]:
    """The JSON types a value of `shape` can have. With `nonfinite_text=False`, the "NaN" texts
    of floats do not count as text (they are not what a text comparison is written for)."""
    types: set[str] = set()
    for alt in shape.alternatives:
        if isinstance(alt, Anything):
            return JSON_TYPES
        if isinstance(alt, Scalar) and (alt.kind != "nonfinite" or nonfinite_text):
            types.add(_SCALAR_TYPES[alt.kind])
        elif isinstance(alt, Obj):
            types.add("object")
        elif isinstance(alt, Arr):
            types.add("array")
    return frozenset(types)


def field_names(shape: Shape) -> list[str]:
    """The named fields of the objects among the alternatives, in schema order."""
    names = (name for alt in shape.alternatives if isinstance(alt, Obj) for name in alt.fields)
    return list(dict.fromkeys(names))


def labels(shape: Shape) -> list[str]:
    """The schema's names for the alternatives ("double", "record Order"), once each."""
    found = (alt.label for alt in shape.alternatives if isinstance(alt, Scalar | Obj))
    return [label for label in dict.fromkeys(found) if label]


def is_any(shape: Shape) -> bool:
    return any(isinstance(alt, Anything) for alt in shape.alternatives)


def literal_shape(value: object) -> Shape:
    """The shape of one JSON value (JSON Schema `enum` and `const`)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return scalar("boolean")
    if isinstance(value, int):
        return scalar("integer")
    if isinstance(value, float):
        return scalar("number")
    if isinstance(value, str):
        return scalar("string")
    return arr(ANY) if isinstance(value, list) else obj(rest=ANY)


# -- Avro ----------------------------------------------------------------------------------------

# to_json: a float that is not a finite number becomes the text "NaN", "Infinity" or "-Infinity".
_FLOAT: tuple[ScalarKind, ...] = ("number", "nonfinite")
_AVRO_PRIMITIVES: dict[str, tuple[ScalarKind, ...]] = {
    "null": ("null",),
    "boolean": ("boolean",),
    "int": ("integer",),
    "long": ("integer",),
    "float": _FLOAT,
    "double": _FLOAT,
    "string": ("string",),
    "bytes": ("string",),  # base64
}
# The logical types fastavro applies (its LOGICAL_READERS), by (base type, logical type); any
# other logical type reads as its base type.
_AVRO_LOGICAL: dict[tuple[str, str], ScalarKind] = {
    ("bytes", "decimal"): "number",
    ("fixed", "decimal"): "number",
    ("int", "date"): "string",
    ("int", "time-millis"): "string",
    ("long", "time-micros"): "string",
    ("long", "timestamp-millis"): "string",
    ("long", "timestamp-micros"): "string",
    ("long", "local-timestamp-millis"): "string",
    ("long", "local-timestamp-micros"): "string",
    ("string", "uuid"): "string",
}


def avro_shape(schema: str | Mapping[str, Any] | list[Any]) -> Shape:
    """The JSON shape of records of an Avro schema (its JSON text, or the parsed JSON)."""
    parsed: object = schema
    if isinstance(schema, str):
        try:
            parsed = json.loads(schema)
        except ValueError:
            parsed = schema  # a bare type name: string, or a named type
    return _Avro().shape(parsed, "")


def _scalars(kinds: Iterable[ScalarKind], label: str) -> Shape:
    return Shape(tuple(Scalar(kind, label) for kind in kinds))


class _Avro:
    def __init__(self) -> None:
        self.names: dict[str, Shape] = {}  # full name -> shape of the named type

    def shape(self, schema: object, namespace: str) -> Shape:
        if isinstance(schema, list):  # a union: its branch's value, not wrapped
            return union(*(self.shape(branch, namespace) for branch in schema))
        if isinstance(schema, str):
            kinds = _AVRO_PRIMITIVES.get(schema)
            return _scalars(kinds, schema) if kinds else self._reference(schema, namespace)
        if not isinstance(schema, Mapping):
            return ANY
        kind = schema.get("type")
        if isinstance(kind, list | Mapping):  # {"type": {"type": "array", ...}}
            return self.shape(kind, namespace)
        if not isinstance(kind, str):
            return ANY
        logical = schema.get("logicalType")
        if kind in ("record", "error", "enum", "fixed"):
            return self._named(schema, kind, logical, namespace)
        if isinstance(logical, str) and (kind, logical) in _AVRO_LOGICAL:
            return scalar(_AVRO_LOGICAL[(kind, logical)], logical)
        if kind == "array":
            return arr(self.shape(schema.get("items"), namespace))
        if kind == "map":
            return obj(rest=self.shape(schema.get("values"), namespace), label="map")
        return self.shape(kind, namespace)  # {"type": "string"}, or a named type's name

    def _named(self, schema: Mapping[str, Any], kind: str, logical: object, outer: str) -> Shape:
        full, namespace = _avro_name(schema, outer)
        short = full.rpartition(".")[2]
        if kind in ("record", "error"):
            record = Obj(label=f"record {short}")
            shape = Shape((record,))
            self.names[full] = shape  # before its fields: they may refer to it
            for entry in schema.get("fields") or []:
                if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                    record.fields[entry["name"]] = self.shape(entry.get("type"), namespace)
            return shape
        if kind == "fixed" and logical == "decimal":
            shape = scalar("number", "decimal")
        else:  # an enum is its symbol, fixed bytes are base64
            shape = scalar("string", f"{kind} {short}")
        self.names[full] = shape
        return shape

    def _reference(self, name: str, namespace: str) -> Shape:
        candidates = [name] if "." in name else [f"{namespace}.{name}", name]
        for candidate in candidates:
            if candidate in self.names:
                return self.names[candidate]
        return ANY  # a type this schema does not define: nothing is known about it


def _avro_name(schema: Mapping[str, Any], outer: str) -> tuple[str, str]:
    """(full name, namespace of the types inside it), by the Avro specification's rules."""
    name = str(schema.get("name", ""))
    if "." in name:
        return name, name.rpartition(".")[0]
    namespace = schema.get("namespace")
    namespace = namespace if isinstance(namespace, str) else outer
    return (f"{namespace}.{name}" if namespace else name), namespace


# -- Protobuf ------------------------------------------------------------------------------------

_PROTO_SCALARS: dict[int, tuple[str, tuple[ScalarKind, ...]]] = {
    FieldDescriptor.TYPE_INT32: ("int32", ("integer",)),
    FieldDescriptor.TYPE_INT64: ("int64", ("integer",)),
    FieldDescriptor.TYPE_UINT32: ("uint32", ("integer",)),
    FieldDescriptor.TYPE_UINT64: ("uint64", ("integer",)),
    FieldDescriptor.TYPE_SINT32: ("sint32", ("integer",)),
    FieldDescriptor.TYPE_SINT64: ("sint64", ("integer",)),
    FieldDescriptor.TYPE_FIXED32: ("fixed32", ("integer",)),
    FieldDescriptor.TYPE_FIXED64: ("fixed64", ("integer",)),
    FieldDescriptor.TYPE_SFIXED32: ("sfixed32", ("integer",)),
    FieldDescriptor.TYPE_SFIXED64: ("sfixed64", ("integer",)),
    FieldDescriptor.TYPE_FLOAT: ("float", _FLOAT),
    FieldDescriptor.TYPE_DOUBLE: ("double", _FLOAT),
    FieldDescriptor.TYPE_BOOL: ("bool", ("boolean",)),
    FieldDescriptor.TYPE_STRING: ("string", ("string",)),
    FieldDescriptor.TYPE_BYTES: ("bytes", ("string",)),  # base64
}
_WKT = "google.protobuf."
# Well-known types whose JSON form is not an object of their fields (to_json's table).
_PROTO_WELL_KNOWN: dict[str, Shape] = {
    f"{_WKT}Timestamp": scalar("string", "Timestamp"),
    f"{_WKT}Duration": scalar("string", "Duration"),
    f"{_WKT}FieldMask": scalar("string", "FieldMask"),
    f"{_WKT}Struct": obj(rest=ANY, label="Struct"),
    f"{_WKT}Value": ANY,
    f"{_WKT}ListValue": arr(ANY),
    f"{_WKT}Any": obj({"@type": scalar("string")}, rest=ANY, label="Any"),
    f"{_WKT}Empty": obj(label="Empty"),
}
_PROTO_WRAPPERS = frozenset(
    f"{_WKT}{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


def protobuf_shape(descriptor: Descriptor) -> Shape:
    """The JSON shape of messages of `descriptor` (every field present, as to_json writes it)."""
    return _Protobuf().message(descriptor)


class _Protobuf:
    def __init__(self) -> None:
        self.messages: dict[str, Shape] = {}  # full name -> shape

    def message(self, descriptor: Descriptor) -> Shape:
        name: str = descriptor.full_name
        known = _PROTO_WELL_KNOWN.get(name)
        if known is not None:
            return known
        if name in _PROTO_WRAPPERS:  # the wrapped value (null when unset: the field's presence)
            wrapped = self.single(descriptor.fields_by_name["value"])
            return Shape(tuple(_relabel(alt, descriptor.name) for alt in wrapped.alternatives))
        found = self.messages.get(name)
        if found is not None:
            return found
        message = Obj(label=f"message {descriptor.name}")
        shape = Shape((message,))
        self.messages[name] = shape  # before its fields: they may refer to it
        for entry in descriptor.fields:
            message.fields[entry.name] = self.field(entry)
        return shape

    def field(self, entry: FieldDescriptor) -> Shape:
        if entry.is_repeated:
            entry_type = entry.message_type
            if entry_type is not None and entry_type.GetOptions().map_entry:
                value = self.single(entry_type.fields_by_name["value"])
                return obj(rest=value, label="map")
            return arr(self.single(entry))
        shape = self.single(entry)
        return nullable(shape) if entry.has_presence else shape  # unset: null

    def single(self, entry: FieldDescriptor) -> Shape:
        kind = entry.type
        if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            return self.message(entry.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            # The symbol. (A number the enum does not declare stays a number; that is a writer
            # outside its own schema, and no rule is written for it.)
            return scalar("string", f"enum {entry.enum_type.name}")
        known = _PROTO_SCALARS.get(kind)
        return _scalars(known[1], known[0]) if known else ANY


def _relabel(alt: Alternative, label: str) -> Alternative:
    return Scalar(alt.kind, label) if isinstance(alt, Scalar) else alt


# -- JSON Schema ---------------------------------------------------------------------------------

_OBJECT_WORDS = ("properties", "additionalProperties", "patternProperties")
_ARRAY_WORDS = ("items", "prefixItems", "additionalItems")
_ALL_TYPES = ("object", "array", "string", "number", "boolean", "null")
_COMBINATORS = ("allOf", "anyOf", "oneOf")
_JSON_SCALARS: dict[str, ScalarKind] = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
}


def json_schema_shape(schema: Mapping[str, Any] | bool | str) -> Shape:
    """The JSON shape of values valid against a JSON Schema (its text, or the parsed JSON).

    A subset: `type`, `properties` (absent unless `required`: null), `additionalProperties`,
    `items`/`prefixItems`, `enum`, `const`, `$ref` within the document (`#/definitions/...`,
    `#/$defs/...`), and `allOf`/`anyOf`/`oneOf` as the union of their parts. Anything else reads
    as any value. An object without `additionalProperties: false` is open: any other key may hold
    any value.
    """
    parsed: object = json.loads(schema) if isinstance(schema, str) else schema
    return _JsonSchema(parsed).shape(parsed)


class _JsonSchema:
    def __init__(self, root: object) -> None:
        self.root = root
        self.refs: dict[str, Shape] = {}

    def shape(self, node: object) -> Shape:
        if node is False:
            return NEVER
        if not isinstance(node, Mapping):
            return ANY  # true, or not a schema
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self._ref(ref)
        base = self._typed(node)
        parts = [base] if base is not None else []
        for combinator in _COMBINATORS:
            branches = node.get(combinator)
            for branch in branches if isinstance(branches, list) else []:
                part = self.shape(branch)
                if not is_any(part):
                    parts.append(part)
                elif combinator != "allOf" and base is None:
                    return ANY  # one branch allows anything
        return union(*parts) if parts else ANY

    def _typed(self, node: Mapping[str, Any]) -> Shape | None:
        """What `type`, `enum`/`const` and the object and array keywords allow; None: nothing
        said (any value)."""
        if "const" in node or isinstance(node.get("enum"), list):
            found = [node["const"]] if "const" in node else node["enum"]
            shape = union(*(literal_shape(value) for value in found))
        else:
            declared = node.get("type")
            if isinstance(declared, str):
                names = [declared]
            elif isinstance(declared, list):
                names = [name for name in declared if isinstance(name, str)]
            elif any(word in node for word in (*_OBJECT_WORDS, *_ARRAY_WORDS)):
                names = list(_ALL_TYPES)  # keywords constrain only their type: any type valid
            else:
                return None
            shape = union(*(self._of_type(name, node) for name in names))
        return nullable(shape) if node.get("nullable") is True else shape

    def _of_type(self, name: str, node: Mapping[str, Any]) -> Shape:
        if name == "object":
            return Shape((self._object(node, Obj()),))
        if name == "array":
            return arr(self._items(node))
        kind = _JSON_SCALARS.get(name)
        if kind is None:
            return ANY
        label = node.get("format")  # date-time, email...: still text
        return scalar(kind, label if isinstance(label, str) else "")

    def _object(self, node: Mapping[str, Any], into: Obj) -> Obj:
        properties = node.get("properties")
        required = node.get("required")
        needed = set(required) if isinstance(required, list) else set()
        for name, sub in properties.items() if isinstance(properties, Mapping) else []:
            shape = self.shape(sub)
            into.fields[str(name)] = shape if name in needed else nullable(shape)
        additional = node.get("additionalProperties", True)
        if additional is False and "patternProperties" not in node:
            into.rest = None
        elif isinstance(additional, Mapping) and "patternProperties" not in node:
            into.rest = self.shape(additional)
        else:
            into.rest = ANY
        return into

    def _items(self, node: Mapping[str, Any]) -> Shape:
        if isinstance(node.get("prefixItems"), list):  # 2020-12: prefixItems, then items
            listed, rest = node["prefixItems"], node.get("items", True)
        elif isinstance(node.get("items"), list):  # draft 4 to 2019-09: items, additionalItems
            listed, rest = node["items"], node.get("additionalItems", True)
        else:
            return self.shape(node.get("items", True))
        return union(*(self.shape(item) for item in listed), self.shape(rest))

    def _ref(self, ref: str) -> Shape:
        found = self.refs.get(ref)
        if found is not None:
            return found
        target = self._pointer(ref)
        if target is None:
            return ANY  # another document, another subject: not followed
        self.refs[ref] = ANY  # while converting: a recursive reference reads as anything...
        if (
            isinstance(target, Mapping)
            and target.get("type") == "object"
            and not any(
                word in target for word in ("$ref", "enum", "const", "nullable", *_COMBINATORS)
            )
        ):  # ...except to an object, which is registered before its properties
            into = Obj()
            self.refs[ref] = Shape((into,))
            self._object(target, into)
        else:
            self.refs[ref] = self.shape(target)
        return self.refs[ref]

    def _pointer(self, ref: str) -> object | None:
        """The part of this document a `#/...` JSON pointer names; None: not found, or not local."""
        if not ref.startswith("#"):
            return None
        node: object = self.root
        for part in filter(None, ref[1:].split("/")):
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node

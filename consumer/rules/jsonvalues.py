"""JSON helpers for the rules: checking YAML literals, strict equality, rendering into text."""

from __future__ import annotations

import json
import math

from consumer.intents import NOT_FINITE
from consumer.json_types import JSONValue


class NotStrictJSONError(ValueError):
    """A value cannot be written as strict JSON (a non-finite number): the mapping fails.

    A ValueError, as `json.dumps(..., allow_nan=False)` raised before, for callers that catch that.
    """


def as_json(value: object, where: str = "value") -> JSONValue:
    """The value itself if it is plain JSON; raises ValueError for YAML-only types (dates, sets)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a JSON number")
        return value
    if isinstance(value, list):
        return [as_json(item, where) for item in value]
    if isinstance(value, dict):
        result: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} must be a string (quote it)")
            result[key] = as_json(item, where)
        return result
    kind = type(value).__name__
    raise ValueError(f"{where}: a {kind} is not a JSON value (quote it to make it a string)")


def json_equal(left: JSONValue, right: JSONValue) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's `==` says True == 1)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, list):
        return (
            isinstance(right, list)
            and len(left) == len(right)
            and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    if isinstance(left, dict):
        return (
            isinstance(right, dict)
            and left.keys() == right.keys()
            and all(json_equal(item, right[key]) for key, item in left.items())
        )
    if isinstance(right, list | dict):
        return False
    return left == right


def render_text(value: JSONValue) -> str:
    """How a value reads inside mixed text: strings as is, everything else as compact JSON.

    Whole floats print without the `.0` (50.0 -> "50"), as JavaScript and Liquid print them.
    Raises NotStrictJSONError for a non-finite number anywhere in `value` (`1e400` in an event
    decodes to inf): "Infinity" is not what the event said, and must not become a user id.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # inf and nan are not is_integer(): they fall through and fail
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise NotStrictJSONError(NOT_FINITE) from exc

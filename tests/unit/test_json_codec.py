"""The hot path's JSON (orjson) reads and writes exactly what the stdlib would, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.json_codec import dumps_strict, loads_event


def stdlib_loads(data: bytes) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(data.decode("utf-8-sig"), parse_constant=reject)


def stdlib_dumps(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def outcome(function: Any, argument: Any) -> tuple[str, Any]:
    try:
        return "ok", function(argument)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',
        b"\xef\xbb\xbf{}",  # a BOM: the stdlib reads it, orjson does not
        b"1e400",  # inf for the stdlib; orjson refuses
        b'{"a": "\\ud800"}',  # an escaped lone surrogate: read, and refused later by a mapping
        b"123456789012345678901234567890",  # an integer beyond 64 bits stays an exact int
        b"-9223372036854775809",
        b"18446744073709551616",
        b'{"id": "12345678901234567890"}',  # long digits in a string: same result either way
        b"NaN",
        b"Infinity",
        b'{"a": 1,}',
        b"\xff\xfe{}",
        b'{"a": 1, "a": 2}',
        b"[" * 3000 + b"]" * 3000,
        b"",
        b"0.1",
        b"1.0",
        b"-0",
    ],
)
def test_loads_event_reads_what_the_stdlib_reads(data: bytes) -> None:
    mine, theirs = outcome(loads_event, data), outcome(stdlib_loads, data)
    assert mine[0] == theirs[0]
    assert same(mine[1], theirs[1]) if mine[0] == "ok" else mine[1] == theirs[1]


@given(json_values)
def test_loads_event_round_trips_any_value(value: Any) -> None:
    data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    mine, theirs = outcome(loads_event, data), outcome(stdlib_loads, data)
    assert mine[0] == theirs[0]
    assert same(mine[1], theirs[1]) if mine[0] == "ok" else mine[1] == theirs[1]


@given(json_values)
def test_dumps_strict_writes_the_stdlib_json(value: Any) -> None:
    mine, theirs = outcome(dumps_strict, value), outcome(stdlib_dumps, value)
    assert mine[0] == theirs[0]
    if mine[0] == "ok":
        assert same(json.loads(mine[1]), json.loads(theirs[1]))


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        {"a": [1, {"b": float("inf")}]},
        [float("-inf")],
        "\ud800",
        {"\udfff": 1},
        {"a": None, "b": float("nan")},
    ],
)
def test_dumps_strict_refuses_what_braze_cannot_read(value: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the stdlib's errors, whatever their text
        dumps_strict(value)


def test_dumps_strict_keeps_nulls_and_big_integers() -> None:
    assert dumps_strict({"a": None, "n": 2**70}) == b'{"a":null,"n":1180591620717411303424}'
    assert dumps_strict({"text": "null"}) == b'{"text":"null"}'

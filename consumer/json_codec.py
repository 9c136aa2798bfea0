"""JSON on the hot path: orjson where it gives exactly what the stdlib would, the stdlib otherwise.

Every consumed event is decoded once and every recipient encoded once, so these two functions are
most of the service's JSON work (make bench). orjson is several times faster, but it differs from
the stdlib in a few corners, and each one is sent back to the stdlib so behaviour stays the same:

- decoding: orjson refuses a UTF-8 BOM, numbers that overflow a double (`1e400`) and escaped lone
  surrogates, which the stdlib reads (the rules then fail only a mapping that uses such a value);
  and it reads an integer beyond 64 bits as a float, silently. A failure, or a run of 19 digits
  anywhere in the text (the only way to write such an integer), takes the stdlib path.
- encoding: orjson writes NaN and infinities as `null` where the stdlib (allow_nan=False) raises,
  and refuses integers beyond 64 bits. An output with a `null` in it, or a refusal, takes the
  stdlib path, so the result and the errors are the stdlib's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from consumer.json_types import JSONValue

# An integer of 19 or more digits may not fit orjson's 64 bits (it would become a float). Found by
# mapping every digit to "0" and everything else to " ", then a substring search: a few times
# cheaper than a regex, which would cost more than orjson's whole parse.
_DIGITS_ONLY = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_NULL = b"null"


def loads_exact(data: bytes, stdlib_loads: Callable[[bytes], Any]) -> Any:
    """`stdlib_loads(data)`'s value, parsed by orjson wherever the two agree; `stdlib_loads`
    itself for the rest (a long digit run, or a text orjson refuses), so its errors and their
    texts are the only ones raised. `stdlib_loads` must accept what orjson accepts alike."""
    if _LONG_DIGIT_RUN not in data.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib decides, and words the error
    return stdlib_loads(data)


def loads_event(data: bytes) -> JSONValue:
    """Parse a UTF-8 JSON text (a BOM allowed) as `json.loads(data.decode("utf-8-sig"))` does.

    Raises ValueError (UnicodeDecodeError, JSONDecodeError) or RecursionError exactly as the
    stdlib would, with its messages: a dead letter reads the same whichever parser ran.
    """
    value: JSONValue = loads_exact(data, _stdlib_event_loads)
    return value


def _stdlib_event_loads(data: bytes) -> JSONValue:
    value: JSONValue = json.loads(data.decode("utf-8-sig"), parse_constant=_reject_constant)
    return value


def dumps_strict(value: JSONValue) -> bytes:
    """Compact UTF-8 JSON of `value`, in its own key order, refusing what Braze cannot read.

    The same JSON as `json.dumps(value, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False).encode()`, byte for byte except the spelling of some floats' exponents
    (`1e-7` for `1e-07`). Raises ValueError on a non-finite number or a lone surrogate
    (UnicodeEncodeError is one).
    """
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate: the stdlib decides
        return _stdlib_dumps(value)
    if _NULL in encoded:
        # NaN and infinities come out as null: the stdlib writes the same JSON when there are
        # none, and raises (with its message) when there are.
        return _stdlib_dumps(value)
    # orjson's bytes keep the capacity of its write buffer (4 KiB for a 100-byte recipient);
    # a copy of the exact size costs a quarter of a microsecond, and intents are held by the
    # thousand while their requests are under way.
    return memoryview(encoded).tobytes()


def _stdlib_dumps(value: JSONValue) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(f"{name} is not valid JSON")

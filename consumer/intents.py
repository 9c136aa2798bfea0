"""Stage 2 output: what the rules decide for one event, and how intents become a Braze request.

`SendIntent` is one recipient bound for one request shape (`BatchKey`); the batcher groups intents
with equal keys, and `BatchKey.request_body` turns a group into the exact JSON body to POST.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

import orjson

from consumer.json_types import JSONObject, JSONValue
from consumer.reasons import Reason

# Why a value is not strict JSON (`strict_json_problem`): the texts of mapping errors.
NOT_FINITE = "not a finite number"
LONE_SURROGATE = "not valid Unicode (lone surrogate)"
LONE_SURROGATE_KEY = "key is not valid Unicode (lone surrogate)"


class Endpoint(StrEnum):
    """Braze REST paths (braze-api.md section 1)."""

    CAMPAIGN_SEND = "/campaigns/trigger/send"
    CANVAS_SEND = "/canvas/trigger/send"
    CAMPAIGN_SCHEDULE_CREATE = "/campaigns/trigger/schedule/create"
    CANVAS_SCHEDULE_CREATE = "/canvas/trigger/schedule/create"
    CAMPAIGN_SCHEDULE_UPDATE = "/campaigns/trigger/schedule/update"
    CANVAS_SCHEDULE_UPDATE = "/canvas/trigger/schedule/update"
    CAMPAIGN_SCHEDULE_DELETE = "/campaigns/trigger/schedule/delete"
    CANVAS_SCHEDULE_DELETE = "/canvas/trigger/schedule/delete"
    SEND_ID_CREATE = "/sends/id/create"

    @property
    def is_canvas(self) -> bool:
        return self.value.startswith("/canvas/")

    @property
    def target_field(self) -> str:
        """`canvas_id` or `campaign_id`."""
        return "canvas_id" if self.is_canvas else "campaign_id"

    @property
    def properties_field(self) -> str:
        """Per-recipient personalisation: `context` (Canvas) or `trigger_properties` (campaign)."""
        return "context" if self.is_canvas else "trigger_properties"


SEND_ENDPOINTS = frozenset(
    {
        Endpoint.CAMPAIGN_SEND,
        Endpoint.CANVAS_SEND,
        Endpoint.CAMPAIGN_SCHEDULE_CREATE,
        Endpoint.CANVAS_SCHEDULE_CREATE,
    }
)


@dataclass(frozen=True, slots=True)
class BatchKey:
    """Everything two intents must share to travel in one request."""

    endpoint: Endpoint
    target_id: str
    send_id: str | None = None
    schedule_json: str | None = None  # canonical JSON (sorted keys) of the schedule object
    # Computed once: the batcher looks a key up for every recipient.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.endpoint, self.target_id, self.send_id, self.schedule_json)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def request_body(self, recipients: Sequence[JSONObject]) -> JSONObject:
        """The JSON body for these recipients (1..MAX_RECIPIENTS_PER_REQUEST of them)."""
        body: JSONObject = {self.endpoint.target_field: self.target_id}
        if self.send_id is not None:
            body["send_id"] = self.send_id
        body["recipients"] = list[JSONValue](recipients)
        if self.schedule_json is not None:
            body["schedule"] = json.loads(self.schedule_json)
        return body

    def request_content(self, encoded: Sequence[bytes]) -> bytes:
        """`request_body` as the bytes to POST, from recipients already encoded (no re-encoding:
        each recipient's JSON is made once, when its rule renders it)."""
        head, tail = _envelope(self)
        return head + b",".join(encoded) + tail

    @property
    def label(self) -> str:
        """Short text for logs (never includes recipients)."""
        return f"{self.endpoint.value} {self.target_id}"


@lru_cache(maxsize=4096)
def _envelope(key: BatchKey) -> tuple[bytes, bytes]:
    """The request's bytes before and after its recipients' list, for `request_content`."""
    body = key.request_body([])
    schedule = body.pop("schedule", None)
    del body["recipients"]
    head = orjson.dumps(body)[:-1] + b',"recipients":['
    tail = b"]}" if schedule is None else b'],"schedule":' + orjson.dumps(schedule) + b"}"
    return head, tail


def canonical_json(value: JSONValue) -> str:
    """Stable JSON text, used for batch keys and sizes. Raises ValueError on a non-finite number.

    Its `.encode("utf-8")` raises UnicodeEncodeError (a ValueError) on a lone surrogate, so one
    `len(canonical_json(v).encode("utf-8"))` both sizes `v` and proves it strict JSON.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def strict_json_problem(value: JSONValue) -> tuple[str, str] | None:
    """Where in `value` it stops being strict JSON, and why; None when it is strict.

    The path is relative (`.total`, `[2].note`, empty for `value` itself) and printable. Strict
    means what Braze can read: finite numbers only, and text (values and keys) without lone
    surrogates, which `json.loads` lets through from `"\\ud800"` but UTF-8 cannot carry. This
    walks the whole value: call it to explain a failed `canonical_json(...).encode("utf-8")`, not
    instead of it.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", NOT_FINITE)
    if isinstance(value, str):
        return None if _is_utf8(value) else ("", LONE_SURROGATE)
    if isinstance(value, list):
        return _first_problem((f"[{index}]", item) for index, item in enumerate(value))
    if isinstance(value, dict):
        return _first_problem((f".{key}", item) for key, item in value.items())
    return None  # null, booleans and ints are always strict


def printable(text: str) -> str:
    """`text` safe to encode as UTF-8: each lone surrogate becomes its `\\udXXX` escape.

    For error texts that quote an event: a dead-letter header or a log line must not fail to
    encode because of what the event contained.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _first_problem(items: Iterable[tuple[str, JSONValue]]) -> tuple[str, str] | None:
    """The first problem among (path step, item) pairs; an unencodable step is an object key."""
    for step, item in items:
        if not _is_utf8(step):
            return printable(step), LONE_SURROGATE_KEY
        problem = strict_json_problem(item)
        if problem is not None:
            return step + problem[0], problem[1]
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(slots=True)
class SendIntent:
    """One recipient for one request shape, produced by one rule for one event; never changed
    once made (not frozen only because one is built per matched event: see `consumer.events`)."""

    rule_id: str
    key: BatchKey
    user_key: str  # who the recipient is, e.g. "external_user_id:u-1"; equal keys must not share
    # The complete Braze recipient object, as its compact UTF-8 JSON: exactly what the request
    # carries. Only the bytes are kept (thousands of intents wait while requests are under way).
    encoded: bytes
    # Epoch ms after which the rule's `max_event_age` makes it stale: an intent held through a
    # Braze outage past this is skipped, not sent. None: the rule has no `max_event_age`.
    stale_after_ms: int | None = None

    @property
    def recipient(self) -> JSONObject:
        """The recipient object (for previews and tests; requests use `encoded`)."""
        value: JSONObject = json.loads(self.encoded)
        return value

    @property
    def size_bytes(self) -> int:
        """Bytes of the recipient in a request, against MAX_RECIPIENT_BYTES / MAX_REQUEST_BYTES."""
        return len(self.encoded)


@dataclass(frozen=True, slots=True)
class RuleSkip:
    """A rule matched but chose not to send (counted, not dead-lettered)."""

    rule_id: str
    reason: str  # e.g. "max_event_age"


@dataclass(frozen=True, slots=True)
class MappingFailure:
    """A rule matched but its mapping failed for this event: a dead letter (`mapping_error`)."""

    rule_id: str
    field: str  # e.g. "recipient.external_user_id"
    message: str
    reason: str = Reason.MAPPING_ERROR  # or TOO_LARGE: properties over MAX_PROPERTIES_BYTES


Outcome = SendIntent | RuleSkip | MappingFailure

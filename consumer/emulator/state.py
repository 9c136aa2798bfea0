"""Emulator: how one Braze request is answered (route, size, auth, budget, faults, contract).

The HTTP server hands each request to `EmulatorState.handle` and writes back the `Reply`; the
control API changes the state through the other methods. One lock makes every request's decision
and its record atomic; the server sleeps the reply's latency outside the lock.

Order: an answer override (a proxy in front of Braze) answers everything; then a drop; then route,
method, size, auth; then the budget and injected statuses; then the contract; then refused targets
and recipients.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from consumer.braze.contract import validate_request
from consumer.braze.limits import MAX_REQUEST_BYTES
from consumer.emulator.budget import BudgetLimits, RateBudget, RateStatus
from consumer.emulator.faults import AnswerOverride, FaultPlan, FaultSettings
from consumer.emulator.record import RecordedRequest, Recorder, Stats
from consumer.intents import SEND_ENDPOINTS, Endpoint
from consumer.json_codec import loads_exact
from consumer.json_types import JSONObject, JSONValue

MAX_RECORDED_BODY_BYTES = 64 * 1024
JSON_CONTENT_TYPE = "application/json"
RATE_LIMITED = "Rate limit exceeded"
_ENDPOINTS = {endpoint.value: endpoint for endpoint in Endpoint}
_SCHEDULE_CREATES = frozenset({Endpoint.CAMPAIGN_SCHEDULE_CREATE, Endpoint.CANVAS_SCHEDULE_CREATE})
# Braze documents 201 only for /canvas/trigger/send and "2XX" elsewhere (braze-api.md §9.1). We
# answer 201 for every call that creates something (a send, a schedule, a send id) and 200 for
# schedule update/delete, so a client that accepts only 200 fails here rather than in production.
_UPDATES = frozenset(
    {
        Endpoint.CAMPAIGN_SCHEDULE_UPDATE,
        Endpoint.CANVAS_SCHEDULE_UPDATE,
        Endpoint.CAMPAIGN_SCHEDULE_DELETE,
        Endpoint.CANVAS_SCHEDULE_DELETE,
    }
)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    method: str
    path: str  # without the query string
    authorization: str | None  # the Authorization header
    body: bytes  # empty when the body was too large to keep
    body_bytes: int  # Content-Length as received


@dataclass(frozen=True, slots=True)
class Reply:
    status: int | None  # None: close the connection without answering
    body: JSONObject  # sent as JSON, unless `raw_body` is given
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # answer only after this long (injected latency)
    raw_body: bytes | None = None  # sent as is instead of `body` (an answer override)
    content_type: str = JSON_CONTENT_TYPE

    @classmethod
    def raw(cls, status: int, body: bytes, content_type: str) -> Reply:
        """An answer that is not Braze's JSON (its `body` is empty, so it records no message)."""
        return cls(status, {}, raw_body=body, content_type=content_type)

    def content(self) -> bytes:
        """The bytes of the answer's body."""
        if self.raw_body is not None:
            return self.raw_body
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Outcome:
    reply: Reply
    recipients: int | None = None  # None: not parsed yet (the record counts them)
    sent: bool = False  # recipients were messaged (not a paused Canvas, not a failure)


class EmulatorState:
    """Everything the emulator knows; every public method is thread-safe."""

    def __init__(
        self,
        api_keys: Iterable[str],
        limits: BudgetLimits | None = None,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        recorder: Recorder | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._api_keys = _checked_keys(api_keys)
        self._budget = RateBudget(limits)
        self._seed = seed
        self._faults = FaultPlan(seed=seed)
        self._clock = clock
        self._recorder = recorder or Recorder()

    def handle(self, request: InboundRequest) -> Reply:
        with self._lock:
            now_s = self._clock()
            delay_s = self._faults.delay_s()
            outcome = self._decide(request, now_s)
            self._remember(request, outcome, now_s, delay_s)
        # A copy (dataclasses.replace takes microseconds) only when there is a latency to carry.
        return replace(outcome.reply, delay_s=delay_s) if delay_s else outcome.reply

    def set_api_keys(self, api_keys: Iterable[str]) -> None:
        keys = _checked_keys(api_keys)
        with self._lock:
            self._api_keys = keys

    def set_limits(self, limits: BudgetLimits) -> None:
        with self._lock:
            self._budget.set_limits(limits)

    def budget(self) -> tuple[BudgetLimits, RateStatus]:
        with self._lock:
            return self._budget.limits, self._budget.peek(self._clock())

    def faults(self) -> FaultSettings:
        with self._lock:
            return self._faults.settings

    def set_faults(self, settings: FaultSettings, *, seed: int | None = None) -> None:
        """Replace the fault settings; a seed also restarts the RNG that draws from them."""
        self.update_faults(lambda _current: settings, seed=seed)

    def update_faults(
        self, change: Callable[[FaultSettings], FaultSettings], *, seed: int | None = None
    ) -> FaultSettings:
        """Apply `change` to the current settings atomically (requests consume them meanwhile)."""
        with self._lock:
            self._faults.settings = change(self._faults.settings)
            if seed is not None:
                self._faults.reseed(seed)
            return self._faults.settings

    def requests_since(self, seq: int, limit: int | None = None) -> list[RecordedRequest]:
        with self._lock:
            return self._recorder.since(seq, limit)

    def stats(self) -> Stats:
        with self._lock:
            return self._recorder.stats()

    def reset(self) -> None:
        """Clear the record, the faults and the budget counters; keys and limits stay."""
        with self._lock:
            self._recorder.clear()
            self._faults = FaultPlan(seed=self._seed)
            self._budget.reset()

    def _decide(self, request: InboundRequest, now_s: float) -> _Outcome:
        override = self._faults.settings.answer_override
        if override is not None:
            # Whatever stands in front of Braze answers first: no auth, no budget, no drop.
            return _overridden(override)
        if self._faults.take_drop():
            return _Outcome(Reply(status=None, body={}))
        return self._answer(request, now_s)

    def _answer(self, request: InboundRequest, now_s: float) -> _Outcome:
        checked = self._refuse(request, now_s)
        if isinstance(checked, _Outcome):
            return checked
        # Only authenticated requests count against the budget: an unauthenticated caller is not
        # a workspace, so it has no budget to spend (Braze counts per workspace, §5).
        decision = self._budget.take(now_s)
        headers = decision.status.headers()
        if not decision.allowed:
            return _failure(429, RATE_LIMITED, headers)
        injected = self._faults.take_status()
        if injected is not None:
            message = RATE_LIMITED if injected == 429 else _phrase(injected)
            return _failure(injected, message, headers)
        return self._process(checked, request.body, now_s, headers)

    def _refuse(self, request: InboundRequest, now_s: float) -> Endpoint | _Outcome:
        """The endpoint, or the answer for a request refused before it counts."""
        endpoint = _ENDPOINTS.get(request.path)
        if endpoint is None:
            return self._uncounted(404, "Not Found", now_s, f"No endpoint at {request.path}")
        if request.method != "POST":
            allow = (*self._budget.peek(now_s).headers(), ("Allow", "POST"))
            return _failure(405, "Method Not Allowed", allow, [f"{endpoint.value} takes POST"])
        if request.body_bytes > MAX_REQUEST_BYTES:
            error = f"The body has {request.body_bytes} bytes; the limit is {MAX_REQUEST_BYTES}"
            return self._uncounted(413, "Request Entity Too Large", now_s, error)
        auth_error = self._auth_error(request.authorization)
        if auth_error is not None:
            # Never echo the key: the caller's logs may show this body.
            return self._uncounted(401, "Invalid API key: <redacted>", now_s, auth_error)
        return endpoint

    def _uncounted(self, status: int, message: str, now_s: float, error: str) -> _Outcome:
        """A refusal that spends no budget; its headers say what is left."""
        return _failure(status, message, self._budget.peek(now_s).headers(), [error])

    def _auth_error(self, authorization: str | None) -> str | None:
        if authorization is None:
            return "Missing Authorization header; send 'Authorization: Bearer <REST API key>'"
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not key:
            return "The Authorization header must be 'Bearer <REST API key>'"
        # Compare against every key in constant time, so timing does not reveal a prefix.
        if not any(hmac.compare_digest(key.encode(), known) for known in self._api_keys):
            return "The API key is not known to this emulator"
        return None

    def _process(
        self, endpoint: Endpoint, raw: bytes, now_s: float, headers: tuple[tuple[str, str], ...]
    ) -> _Outcome:
        try:
            body = _loads(raw)
        except ValueError as error:  # UnicodeDecodeError is a ValueError too
            return _failure(400, "Invalid JSON in request body", headers, [str(error)])
        recipients = _recipient_count(body)
        problems = validate_request(endpoint, body, now=datetime.fromtimestamp(now_s, UTC))
        if problems:
            return _failure(400, problems[0], headers, problems, recipients)
        refused = self._refused_by_faults(endpoint, body)
        if refused is not None:
            message, errors = refused
            return _failure(400, message, headers, errors, recipients)
        return self._success(endpoint, body, headers, recipients)

    def _refused_by_faults(
        self, endpoint: Endpoint, body: JSONObject
    ) -> tuple[str, list[str]] | None:
        """The message and errors for a valid request the test configured to be refused."""
        target = _text_or_none(body.get(endpoint.target_field))
        if endpoint in SEND_ENDPOINTS and target is not None:
            # The whole request is wrong, so the answer names no recipient.
            invalid = self._faults.invalid_target(target, canvas=endpoint.is_canvas)
            if invalid is not None:
                return invalid[0], [invalid[1]]
        if not self._faults.settings.reject_external_user_ids:
            return None  # the common case: no need to collect the ids
        rejected = self._faults.rejected(_external_user_ids(body))
        if rejected:
            return "Invalid recipient", [f"external_user_id {uid} was rejected" for uid in rejected]
        return None

    def _success(
        self,
        endpoint: Endpoint,
        body: JSONObject,
        headers: tuple[tuple[str, str], ...],
        recipients: int,
    ) -> _Outcome:
        answer: JSONObject = {}
        if endpoint in SEND_ENDPOINTS:
            answer["dispatch_id"] = secrets.token_hex(16)
        if endpoint in _SCHEDULE_CREATES:
            answer["schedule_id"] = secrets.token_hex(16)
        if endpoint is Endpoint.SEND_ID_CREATE:
            answer["send_id"] = body.get("send_id") or secrets.token_hex(8)
        answer["message"] = "success"
        notice = None
        if endpoint.is_canvas and endpoint in SEND_ENDPOINTS:
            notice = self._faults.canvas_notice(str(body["canvas_id"]))
        if notice is not None:
            answer["notice"] = notice
        status = 200 if endpoint in _UPDATES else 201
        sent = endpoint in SEND_ENDPOINTS and notice is None
        return _Outcome(Reply(status, answer, headers), recipients, sent)

    def _remember(
        self, request: InboundRequest, outcome: _Outcome, now_s: float, delay_s: float
    ) -> None:
        kept = request.body[:MAX_RECORDED_BODY_BYTES]
        answer = outcome.reply.body
        errors = answer.get("errors")
        entry = RecordedRequest(
            seq=self._recorder.next_seq(),
            time_s=now_s,
            method=request.method,
            path=request.path,
            status=outcome.reply.status,
            body_text=kept.decode("utf-8", errors="replace"),
            body_bytes=request.body_bytes,
            body_truncated=len(kept) < request.body_bytes,
            recipients=_count_in(request.body)
            if outcome.recipients is None
            else outcome.recipients,
            message=_text_or_none(answer.get("message")),
            errors=tuple(str(e) for e in errors) if isinstance(errors, list) else (),
            dispatch_id=_text_or_none(answer.get("dispatch_id")),
            notice=_text_or_none(answer.get("notice")),
            delay_s=delay_s,
        )
        self._recorder.add(entry, sent=outcome.sent)


def _failure(
    status: int,
    message: str,
    headers: tuple[tuple[str, str], ...],
    errors: list[str] | None = None,
    recipients: int | None = None,
) -> _Outcome:
    body: JSONObject = {"message": message, "errors": list[JSONValue](errors or [])}
    return _Outcome(Reply(status, body, headers), recipients)


def _overridden(override: AnswerOverride) -> _Outcome:
    return _Outcome(Reply.raw(override.status, override.body.encode(), override.content_type))


def _phrase(status: int) -> str:
    """The reason phrase of `status`; a code the stdlib does not name (e.g. 599) gets one too."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error" if status >= 400 else "Unknown Status"


def _checked_keys(api_keys: Iterable[str]) -> tuple[bytes, ...]:
    keys = tuple(key.encode() for key in api_keys if key)
    if not keys:
        raise ValueError("the emulator needs at least one non-empty API key")
    return keys


def _loads(raw: bytes) -> Any:
    """`json.loads(raw)`: the same value, or the same error, only faster (orjson where the two
    agree, `json_codec.loads_exact`); nesting past the recursion limit is a ValueError too
    (json.loads raises RecursionError, which nobody catches)."""
    try:
        return loads_exact(raw, json.loads)
    except RecursionError:  # nested deeper than the interpreter's recursion limit: not Braze JSON
        raise ValueError("the JSON is nested too deeply to read") from None


def _count_in(raw: bytes) -> int:
    try:
        return _recipient_count(_loads(raw))
    except ValueError:
        return 0


def _recipient_count(body: object) -> int:
    recipients = body.get("recipients") if isinstance(body, dict) else None
    return len(recipients) if isinstance(recipients, list) else 0


def _external_user_ids(body: JSONObject) -> list[str]:
    recipients = body.get("recipients")
    if not isinstance(recipients, list):
        return []
    found = (r.get("external_user_id") for r in recipients if isinstance(r, dict))
    return [uid for uid in found if isinstance(uid, str)]


def _text_or_none(value: JSONValue | None) -> str | None:
    return value if isinstance(value, str) else None

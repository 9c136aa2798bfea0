"""Stage 4 (send): what one answer from Braze means, before any retry or hold is decided.

Three verdicts (braze-api.md section 4):
- success: a 2xx whose body is Braze's JSON answer, `{"message": "success", ...}` (or `queued`, 202
  during maintenance). Any other 2xx (an HTML page from a proxy or captive portal, an empty body)
  is not Braze saying "sent" and must never settle an event.
- rejected: the request's own fault, a 400 carrying Braze's JSON error, or a 413 (too large): the
  pipeline dead-letters the recipients that cause it.
- failed: Braze's or the deployment's fault, with a `HoldCause`: 5xx, timeouts and connection errors
  (outage), 401/403 (auth), 429 (rate_limit), and everything else: 404, 3xx, other statuses, a 400
  that is not Braze's JSON (unexpected_response). The pipeline holds instead of dead-lettering.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from consumer.json_types import JSONValue

Verdict = Literal["success", "rejected", "failed"]
SUCCESS_MESSAGES = frozenset({"success", "queued"})
AUTH_STATUSES = frozenset({401, 403})


class HoldCause(StrEnum):
    """Why sends are held (the `cause` label of `braze_consumer_braze_holding`)."""

    OUTAGE = "outage"
    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    UNEXPECTED_RESPONSE = "unexpected_response"


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    verdict: Verdict
    cause: HoldCause | None = None  # set when failed
    retry_now: bool = False  # another attempt by the client may help (429, 5xx, transport)
    why: str = ""  # what was wrong with an unexpected answer, for logs and errors


SUCCESS = Judgement(verdict="success")
REJECTED = Judgement(verdict="rejected")
TRANSPORT_FAILURE = Judgement(verdict="failed", cause=HoldCause.OUTAGE, retry_now=True)


def judge(status: int, body: JSONValue) -> Judgement:
    """The meaning of an HTTP answer; `body` is the parsed JSON (None: absent, cut or not JSON)."""
    if 200 <= status < 300:
        if _message(body) in SUCCESS_MESSAGES:
            return SUCCESS
        return _unexpected(f"HTTP {status} whose body is not Braze's JSON success answer")
    if status == 429:
        return Judgement(verdict="failed", cause=HoldCause.RATE_LIMIT, retry_now=True)
    if 500 <= status < 600:
        return Judgement(verdict="failed", cause=HoldCause.OUTAGE, retry_now=True)
    if status in AUTH_STATUSES:
        return Judgement(verdict="failed", cause=HoldCause.AUTH)
    if status == 413:
        return REJECTED  # too large, whoever says it (Braze or its load balancer)
    if status == 400:
        if _message(body) is not None:
            return REJECTED
        return _unexpected("HTTP 400 whose body is not Braze's JSON error")
    if 300 <= status < 400:
        return _unexpected(f"redirect (HTTP {status}): check braze.rest_endpoint")
    if status == 404:
        return _unexpected("HTTP 404: wrong braze.rest_endpoint or instance")
    return _unexpected(f"HTTP {status} is not an answer Braze documents for these endpoints")


def _message(body: JSONValue) -> str | None:
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


def _unexpected(why: str) -> Judgement:
    return Judgement(verdict="failed", cause=HoldCause.UNEXPECTED_RESPONSE, why=why)

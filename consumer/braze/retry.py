"""Stage 4 (send): what a Braze answer means, when to try again, and when to split a batch.

Pure: no HTTP here. The client hands in one function that makes one attempt (and reports it as an
`Attempt`), plus the clock and the sleep; this module decides whether and when to try again
(braze-api.md section 5: 429 and 5xx and transport errors retry, other 4xx are final), and
`Bisection` turns a rejected batch into per-recipient results by sending halves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import tenacity

from consumer.json_types import JSONValue

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2_000
MAX_DISPATCH_ID_CHARS = 200
# Statuses where one recipient may be the cause, so halves can succeed (401/403/404 fail for all).
SPLIT_STATUSES = frozenset({400, 413})

Verdict = Literal["success", "retry", "permanent"]
RetryReason = Literal["rate_limited", "server_error", "timeout", "connection"]


def classify_status(status: int) -> tuple[Verdict, RetryReason | None]:
    """Sort an HTTP status into success (any 2xx, 202 queued too), retry, or permanent."""
    if 200 <= status < 300:
        return "success", None
    if status == 429:
        return "retry", "rate_limited"
    if 500 <= status < 600:
        return "retry", "server_error"
    # 400/401/403/404/413 and anything else unexpected (1xx, 3xx): retrying cannot fix it.
    return "permanent", None


def may_have_been_processed(status: int | None, reason: RetryReason | None) -> bool:
    """Whether a retry of this failure may deliver twice (there is no idempotency key, section 7).

    502 failed before reaching Braze and a 429 was refused; a 500/503/504 or a transport error
    after the request left may or may not have been processed.
    """
    if reason == "rate_limited" or status == 502:
        return False
    return reason is not None


def cut(text: str) -> str:
    """Bound an error text (dead-letter headers carry it)."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def parse_json(body: bytes) -> JSONValue:
    """The body as JSON, or None when it is not JSON."""
    try:
        value: JSONValue = json.loads(body)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    return value


def dispatch_id(body: JSONValue) -> str | None:
    """Braze's `dispatch_id` from a success body, if it is a sane string."""
    value = body.get("dispatch_id") if isinstance(body, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_DISPATCH_ID_CHARS:
        return value
    return None


def warn_about_success_body(endpoint: str, status: int, body: JSONValue) -> None:
    """A 2xx is a success whatever its body says; log what an operator should still see."""
    if not isinstance(body, dict):
        log.warning(
            "Braze accepted %s with status %d but a body that is not a JSON object; "
            "treating it as sent",
            endpoint,
            status,
        )
        return
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        # Non-fatal errors name users: log only how many (no user identifiers in logs).
        log.warning("Braze accepted %s with %d non-fatal errors", endpoint, len(errors))
    notice = body.get("notice")
    if isinstance(notice, str):  # e.g. the Canvas is paused: accepted, but nothing is sent
        log.warning("Braze accepted %s with a notice: %s", endpoint, notice[:200])


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt as the retry loop sees it."""

    verdict: Verdict
    reason: RetryReason | None  # why it may be retried; None when final
    status: int | None  # None for transport errors
    detail: str  # error text (status and cut body, or the transport error); "" on success
    body: JSONValue  # the response body parsed as JSON; None when absent, cut or not JSON
    finished_at_s: float  # wall clock, epoch seconds
    rate_wait_s: float  # time this attempt waited for the rate limiter before it started
    possibly_processed: bool = False  # a retry after this one may duplicate


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """The result of one request after its retries."""

    last: Attempt
    attempts: int
    first_failed_at_s: float | None  # wall clock of the first failed attempt


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds for one request's retries."""

    max_attempts: int
    max_retry_time_s: float  # excludes waits imposed by the rate limiter (that is backpressure)
    backoff_initial_s: float
    backoff_max_s: float


def backoff_s(policy: RetryPolicy, failures: int, jitter: Callable[[float], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**(n-1))]."""
    ceiling_s = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** min(failures - 1, 60))
    return min(ceiling_s, max(0.0, jitter(ceiling_s)))


@dataclass(frozen=True, slots=True)
class RetryHooks:
    """What the retry loop needs from its caller."""

    monotonic: Callable[[], float]
    sleep: Callable[[float], None]
    jitter: Callable[[float], float]  # draws uniformly from [0, ceiling]
    server_wait_s: Callable[[], float]  # > 0 while the rate limiter holds requests for a reset
    on_retry: Callable[[Attempt, float], None]  # the failed attempt and the backoff before the next


def run_with_retries(
    attempt_once: Callable[[], Attempt], policy: RetryPolicy, hooks: RetryHooks
) -> RequestOutcome:
    """Call `attempt_once` until it succeeds, fails for good, or the attempts or time run out."""
    return _RetryRun(attempt_once, policy, hooks).run()


class _RetryRun:
    """The state of one request's retries, as tenacity's stop/wait/before_sleep callbacks."""

    def __init__(
        self, attempt_once: Callable[[], Attempt], policy: RetryPolicy, hooks: RetryHooks
    ) -> None:
        self._attempt_once = attempt_once
        self._policy = policy
        self._hooks = hooks
        self._started_s = hooks.monotonic()
        self._history: list[Attempt] = []

    def run(self) -> RequestOutcome:
        retrying = tenacity.Retrying(
            sleep=self._hooks.sleep,
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_if_result(lambda result: result.reason is not None),
            before_sleep=self._before_sleep,
            # When retries run out, hand back the last attempt instead of raising RetryError.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        last: Attempt = retrying(self._attempt)
        failed = [a for a in self._history if a.verdict != "success"]
        first_failed_s = failed[0].finished_at_s if failed else None
        return RequestOutcome(last, len(self._history), first_failed_s)

    def _attempt(self) -> Attempt:
        result = self._attempt_once()
        self._history.append(result)
        return result

    def _budget_left_s(self) -> float:
        rate_waits_s = sum(a.rate_wait_s for a in self._history)
        spent_s = self._hooks.monotonic() - self._started_s - rate_waits_s
        return self._policy.max_retry_time_s - spent_s

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= self._policy.max_attempts or self._budget_left_s() <= 0

    def _wait(self, state: tenacity.RetryCallState) -> float:
        if self._history[-1].reason == "rate_limited" and self._hooks.server_wait_s() > 0:
            return 0.0  # the rate limiter holds the next attempt until the reset
        backoff = backoff_s(self._policy, state.attempt_number, self._hooks.jitter)
        return min(backoff, self._budget_left_s())

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        sleep_s = state.next_action.sleep if state.next_action is not None else 0.0
        self._hooks.on_retry(self._history[-1], sleep_s)


@dataclass(frozen=True)
class RecipientResult:
    """What became of one recipient of `send_batch`."""

    index: int  # position in the recipients passed to send_batch
    outcome: Literal["sent", "rejected", "exhausted"]
    http_status: int | None  # last status seen (None for transport errors)
    error: str  # "" when sent; else human-readable, Braze body cut to <= 2000 chars
    attempts: int  # HTTP attempts that involved this recipient
    first_failed_at: datetime | None  # UTC, first failed attempt
    dispatch_id: str | None


class Bisection:
    """One batch: sends it, and on a 400/413 sends each half again, down to single recipients.

    `send_group(indices)` sends the recipients at those indices as one request (with retries).
    Per-recipient attempts and first failure add up across every request a recipient was in.
    """

    def __init__(
        self, size: int, send_group: Callable[[list[int]], RequestOutcome], split: bool
    ) -> None:
        self._send_group = send_group
        self._split = split
        self._attempts = [0] * size
        self._first_failed_s: list[float | None] = [None] * size

    def run(self, indices: list[int]) -> list[RecipientResult]:
        """Results for these indices, in index order."""
        out: list[RecipientResult] = []
        self._send(indices, out)
        return sorted(out, key=lambda result: result.index)

    def _send(self, indices: list[int], out: list[RecipientResult]) -> None:
        outcome = self._send_group(indices)
        for i in indices:
            self._attempts[i] += outcome.attempts
            if self._first_failed_s[i] is None:
                self._first_failed_s[i] = outcome.first_failed_at_s
        last = outcome.last
        rejected = last.verdict == "permanent" and last.status in SPLIT_STATUSES
        if rejected and self._split and len(indices) > 1:
            middle = len(indices) // 2
            self._send(indices[:middle], out)
            self._send(indices[middle:], out)
            return
        out.extend(self._result(i, outcome) for i in indices)

    def _result(self, index: int, outcome: RequestOutcome) -> RecipientResult:
        last = outcome.last
        first_s = self._first_failed_s[index]
        first = datetime.fromtimestamp(first_s, UTC) if first_s is not None else None
        tries = self._attempts[index]
        if last.verdict == "success":
            sent_id = dispatch_id(last.body)
            return RecipientResult(index, "sent", last.status, "", tries, first, sent_id)
        if last.verdict == "permanent":
            return RecipientResult(index, "rejected", last.status, last.detail, tries, first, None)
        error = cut(f"retries exhausted after {outcome.attempts} attempts; last: {last.detail}")
        return RecipientResult(index, "exhausted", last.status, error, tries, first, None)
